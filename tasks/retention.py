"""Retention tasks: plan from a listing, then apply (or only show, with a dry run)."""

from datetime import datetime

from tasks._retry import walship_task
from walship import retention
from walship.retention import RetentionPlan, RetentionPolicy, RetentionResult
from walship.storage import open_store

__all__ = ["apply_retention", "plan_retention"]


@walship_task
def plan_retention(replica: str, policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """List the replica's snapshots and segments and decide what the policy keeps (never the newest data)."""
    return retention.plan_replica(open_store(replica), policy, now)


@walship_task
def apply_retention(replica: str, plan: RetentionPlan, dry_run: bool) -> RetentionResult:
    """Delete what the plan deletes in batches, confirm with a listing, update the index."""
    return retention.apply_retention(open_store(replica), plan, dry_run=dry_run)
