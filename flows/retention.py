"""Retention flow: plan what the policy keeps, apply it (or only show it), report."""

from prefect import flow

from flows._report import human_bytes, publish, run_name
from tasks import apply_retention, plan_retention, with_retry_policy
from walship.errors import IncompleteError
from walship.models import RetryPolicy, utcnow
from walship.retention import RetentionPlan, RetentionPolicy, RetentionReport, RetentionResult


@flow(name="retention", flow_run_name=lambda: run_name("retention", "replica"), log_prints=True)
def retention_flow(
    replica: str,
    policy: RetentionPolicy,
    dry_run: bool = False,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> RetentionReport:
    """Delete the snapshots ``policy`` does not keep from ``replica``, and the WAL no kept snapshot needs.

    The newest snapshot and the newest data (its generation) always stay. With ``dry_run`` nothing is deleted and
    the artifact shows what would be. Deletes that fail are reported, the run
    ends failed, and the next run tries them again.
    """
    plan = with_retry_policy(plan_retention, retry)(replica, policy, utcnow())
    result = with_retry_policy(apply_retention, retry)(replica, plan, dry_run)
    _publish(replica, plan, result)
    if not result.ok:
        raise IncompleteError(
            f"retention: {len(result.failed)} of {result.planned} deletes not confirmed "
            f"({result.errors[0] if result.errors else 'still listed'}); the next run retries them"
        )
    return RetentionReport(plan=plan, result=result)


# A years-long hourly history would make an unreadable artifact.
_MAX_ROWS = 200


def _publish(replica: str, plan: RetentionPlan, result: RetentionResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    freed = plan.bytes_to_free if result.dry_run else result.bytes_freed
    shown = plan.snapshots[-_MAX_ROWS:]
    snapshots = "\n".join(
        f"| `{d.key}` | {d.created_at:%Y-%m-%d %H:%M}Z | {human_bytes(d.size)} | "
        f"{'keep' if d.keep else verb} | {'; '.join(d.reasons)} |"
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
        replica.rstrip("/").rsplit("/", 1)[-1],
        f"Retention of {replica}{' (dry run)' if result.dry_run else ''}",
        [
            ("policy", plan.policy.describe()),
            ("snapshots kept", str(len(plan.kept_snapshots))),
            (f"snapshots {verb}", str(len(plan.deleted_snapshots))),
            (f"segments {verb}", str(sum(len(g.delete) for g in plan.generations))),
            ("bytes kept", human_bytes(plan.bytes_kept)),
            (f"bytes {'to free' if result.dry_run else 'freed'}", human_bytes(freed)),
            ("deletes failed (retried next run)", str(len(result.failed))),
            ("errors", "; ".join(result.errors) or "none"),
        ],
        details=details,
    )
