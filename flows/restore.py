"""Restore flow: pick a snapshot, download, verify, place atomically."""

from datetime import datetime
from pathlib import Path

from prefect import flow

from flows._report import human_bytes, publish, run_name
from tasks import list_snapshots, restore_snapshot, with_retry_policy
from walship.catalog import select_snapshot
from walship.models import RestoreResult, RetryPolicy


@flow(name="restore", flow_run_name=lambda: run_name("restore", "output"), log_prints=True)
def restore_flow(
    replica: str,
    output: Path,
    timestamp: datetime | None = None,
    snapshot_key: str | None = None,
    force: bool = False,
    database_id: str | None = None,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> RestoreResult:
    """Restore the newest snapshot (or the one at ``snapshot_key``, or the newest at or
    before ``timestamp``) of ``replica`` to ``output``; refuse to replace an existing
    file unless ``force``, and a replica of another database than ``database_id``."""
    snapshots = with_retry_policy(list_snapshots, retry)(replica)
    chosen = select_snapshot(snapshots, key=snapshot_key, before=timestamp)
    result = with_retry_policy(restore_snapshot, retry)(replica, chosen, output, force, database_id)
    publish(
        "restore",
        output.name,
        f"Restore of {chosen.database_id} to {output}",
        [
            ("snapshot", f"`{chosen.key}`"),
            ("taken at", chosen.created_at.isoformat()),
            ("size", f"{human_bytes(chosen.compressed_size)} -> {human_bytes(result.size)}"),
            ("sha256", f"`{chosen.sha256}` (verified)"),
            ("integrity_check", result.integrity),
            ("duration", f"{result.duration_seconds:.2f} s"),
        ],
    )
    return result
