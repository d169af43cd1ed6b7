"""Retention tasks: plan from a listing, then apply (or only show, with a dry run)."""

from datetime import datetime

from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import retention, snapshot
from walship.retention import RetentionPlan, RetentionPolicy, RetentionResult

__all__ = ["apply_retention", "plan_retention"]


@walship_task
def plan_retention(
    replica: str,
    policy: RetentionPolicy,
    now: datetime,
    credentials_block: str | None = None,
    database_id: str | None = None,
) -> RetentionPlan:
    """List the replica's snapshots and segments and decide what the policy keeps (never the newest data);
    refuse a replica of another database than ``database_id``, when given."""
    store = open_replica(replica, credentials_block)
    if database_id:
        snapshot.check_database_id(store, database_id)
    return retention.plan_replica(store, policy, now)


@walship_task
def apply_retention(
    replica: str, plan: RetentionPlan, dry_run: bool, credentials_block: str | None = None
) -> RetentionResult:
    """Delete what the plan deletes in batches, confirm with a listing, update the index."""
    return retention.apply_retention(open_replica(replica, credentials_block), plan, dry_run=dry_run)
