"""Retries: only ``TransientStorageError`` is worth another try."""

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from walship.errors import TransientStorageError
from walship.models import RetryPolicy

__all__ = ["retry_only_transient", "walship_task", "with_retry_policy"]

T = TypeVar("T", bound=Task[Any, Any])
P = ParamSpec("P")
R = TypeVar("R")


def retry_only_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry transient storage errors; fail at once on anything retrying cannot fix."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(error, TransientStorageError)


def with_retry_policy(task: T, policy: RetryPolicy) -> T:
    """The task with the flow's retry policy applied (exponential backoff with jitter)."""
    return task.with_options(  # type: ignore[return-value]
        retries=policy.attempts,
        retry_delay_seconds=policy.delays(),
        retry_jitter_factor=policy.jitter,
        retry_condition_fn=retry_only_transient,
    )


def walship_task(fn: Callable[P, R]) -> Task[P, R]:
    """Declare a walship task: no cache key computed over big inputs, no result
    written anywhere, transient-only retries (counts come from the flow's policy)."""
    return task(cache_policy=NO_CACHE, persist_result=False, retry_condition_fn=retry_only_transient)(fn)
