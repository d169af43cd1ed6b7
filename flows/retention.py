"""Retention flow: plan what the policy keeps, apply it (or only show it), report."""

from datetime import datetime
from typing import Annotated

from prefect import flow

from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import human_bytes, publish, run_name
from tasks import apply_retention, plan_retention, with_retry_policy
from walship.models import RetryPolicy
from walship.retention import RetentionPlan, RetentionPolicy, RetentionReport, RetentionResult, run_retention


@plain_refusals
@flow(
    name="retention",
    description="Delete the snapshots and WAL a retention policy no longer keeps (never the newest data).",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def retention_flow(
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    policy: Annotated[RetentionPolicy, titled("Retention policy")],
    dry_run: Annotated[bool, titled("Dry run")] = False,
    database_id: Annotated[str | None, titled("Expected database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> RetentionReport:
    """Delete the snapshots ``policy`` does not keep from ``replica``, and the WAL no kept snapshot needs.

    Args:
        replica: The replica to prune: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        policy: What to keep: the last N, everything within a duration, daily, weekly and monthly snapshots.
        dry_run: Delete nothing; the artifact shows what would be deleted.
        database_id: Refuse a replica of another database than this one (and name the run after it); empty: no check.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    The newest snapshot and the newest data (its generation) always stay.
    Deletes that fail are reported, the run ends failed, and the next run
    tries them again.
    """
    return run_retention(
        _TaskSteps(replica, retry, credentials_block),
        policy,
        dry_run=dry_run,
        database_id=database_id,
        publish=lambda plan, result: _publish(replica, plan, result),
    )


class _TaskSteps:
    """``RetentionSteps`` as task runs with the flow's retry policy."""

    def __init__(self, replica: str, retry: RetryPolicy, credentials_block: str | None) -> None:
        self.replica, self.retry, self.block = replica, retry, credentials_block

    def plan_retention(self, policy: RetentionPolicy, now: datetime, database_id: str | None) -> RetentionPlan:
        return with_retry_policy(plan_retention, self.retry)(self.replica, policy, now, self.block, database_id)

    def apply_retention(self, plan: RetentionPlan, *, dry_run: bool) -> RetentionResult:
        return with_retry_policy(apply_retention, self.retry)(self.replica, plan, dry_run, self.block)


# A years-long hourly history would make an unreadable artifact.
_MAX_ROWS = 200


def _publish(replica: str, plan: RetentionPlan, result: RetentionResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    freed = plan.bytes_to_free if result.dry_run else result.bytes_freed
    shown = plan.snapshots[-_MAX_ROWS:]
    snapshots = "\n".join(
        f"| `{d.key}` | {d.created_at:%Y-%m-%d %H:%M}Z | {human_bytes(d.size)} | "
        f"{'keep' if d.keep else 'held by object lock' if d.key in result.held else verb} | {'; '.join(d.reasons)} |"
        for d in shown
    )
    if len(shown) < len(plan.snapshots):
        snapshots += f"\n| ... {len(plan.snapshots) - len(shown)} older snapshots not shown | | | | |"
    generations = "\n".join(
        f"| `{g.generation}` | {g.segments_kept} ({human_bytes(g.bytes_kept)}) | "
        f"{len(g.delete)} ({human_bytes(g.bytes_deleted)}) | {g.reason} |"
        for g in plan.generations
    )
    details = (
        "## Snapshots\n\n| key | taken | size | decision | why |\n|---|---|---|---|---|\n"
        f"{snapshots}\n\n## WAL segments\n\n| generation | kept | {verb} | why |\n|---|---|---|---|\n{generations}\n"
    )
    publish(
        "retention",
        f"Retention of {replica}{' (dry run)' if result.dry_run else ''}{'' if result.ok else ': FAILED deletes'}",
        [
            ("policy", plan.policy.describe()),
            ("snapshots kept", str(len(plan.kept_snapshots))),
            (f"snapshots {verb}", str(sum(d.key not in result.held for d in plan.deleted_snapshots))),
            (f"segments {verb}", str(sum(k not in result.held for g in plan.generations for k in g.delete))),
            ("bytes kept", human_bytes(plan.bytes_kept)),
            (f"bytes {'to free' if result.dry_run else 'freed'}", human_bytes(freed)),
            ("deletes failed (retried next run)", str(len(result.failed))),
            ("held by object lock", _held(result)),
            ("errors", "; ".join(result.errors) or "none"),
        ],
        details=details,
    )


def _held(result: RetentionResult) -> str:
    """How many objects object lock keeps, and until when the last of them (retention deletes them then)."""
    if not result.held:
        return "none"
    return f"{len(result.held)} objects, until {max(result.held.values()):%Y-%m-%d %H:%M}Z at the latest"
