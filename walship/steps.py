"""The core's own steps of an operation: one store opened for the run, each step retried by one policy.

Every operation is composed once (``run_snapshot``, ``run_restore``,
``run_retention``, ``run_verify``) and takes its steps from whoever runs it:
the flows pass task runs, the CLI's direct mode passes these. They share
this base, so binding the store and retrying happen in one place: the store
is opened once by the caller, not per step, and only transient storage
errors are tried again (``walship.retry``).
"""

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import TypeVar

from walship.codec import Progress
from walship.models import RetryPolicy
from walship.retry import retrying
from walship.storage import ObjectStore

__all__ = ["BoundSteps", "ShowProgress", "no_progress"]

R = TypeVar("R")

# Shows one labelled transfer while it runs (a line on a terminal), and takes it away after.
ShowProgress = Callable[[str], AbstractContextManager[Progress | None]]


@contextlib.contextmanager
def no_progress(label: str) -> Iterator[Progress | None]:
    yield None


class BoundSteps:
    """Steps on ``store``; with a ``policy``, each is retried by it on transient storage errors."""

    def __init__(self, store: ObjectStore, policy: RetryPolicy | None = None) -> None:
        self.store, self.policy = store, policy

    def _retried(self, step: Callable[[], R]) -> R:
        return step() if self.policy is None else retrying(self.policy, step)
