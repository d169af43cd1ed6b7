"""A retention run, composed once for both runners: plan, apply (or only show), report, then the verdict.

The CLI's direct mode and the Prefect flow differ only in how each step runs
(retried on the core, or as a task run): they hand ``run_retention`` their
``RetentionSteps``, so a delete that was not confirmed fails the run in both.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from walship.errors import IncompleteError
from walship.models import utcnow
from walship.retention._apply import RetentionReport, RetentionResult, apply_retention, plan_replica
from walship.retention._plan import RetentionPlan
from walship.retention._policy import RetentionPolicy
from walship.snapshot import check_database_id
from walship.steps import BoundSteps

__all__ = ["RetentionSteps", "StoreRetentionSteps", "run_retention"]


class RetentionSteps(Protocol):
    """The two storage steps of a retention run on one replica, each retried on transient storage errors."""

    def plan_retention(self, policy: RetentionPolicy, now: datetime, database_id: str | None) -> RetentionPlan: ...

    def apply_retention(self, plan: RetentionPlan, *, dry_run: bool) -> RetentionResult: ...


class StoreRetentionSteps(BoundSteps):
    """``RetentionSteps`` on an opened store; with a ``policy``, each step is retried by it."""

    def plan_retention(self, policy: RetentionPolicy, now: datetime, database_id: str | None) -> RetentionPlan:
        def plan() -> RetentionPlan:
            if database_id:
                check_database_id(self.store, database_id)
            return plan_replica(self.store, policy, now)

        return self._retried(plan)

    def apply_retention(self, plan: RetentionPlan, *, dry_run: bool) -> RetentionResult:
        return self._retried(lambda: apply_retention(self.store, plan, dry_run=dry_run))


def run_retention(
    steps: RetentionSteps,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    database_id: str | None = None,
    publish: Callable[[RetentionPlan, RetentionResult], None] | None = None,
) -> RetentionReport:
    """Delete what ``policy`` does not keep (nothing with ``dry_run``); refuse a replica of another ``database_id``.

    ``publish`` sees the plan and what applying it did before the verdict.
    Raises ``IncompleteError`` when a delete was not confirmed: the next run
    tries it again.
    """
    plan = steps.plan_retention(policy, utcnow(), database_id)
    result = steps.apply_retention(plan, dry_run=dry_run)
    if publish is not None:
        publish(plan, result)
    if not result.ok:
        raise IncompleteError(
            f"retention: {len(result.failed)} of {result.planned} deletes not confirmed "
            f"({result.errors[0] if result.errors else 'still listed'}); the next run retries them"
        )
    return RetentionReport(plan=plan, result=result)
