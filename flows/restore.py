"""Restore flow: pick a snapshot, download, verify, place atomically."""

from datetime import datetime
from pathlib import Path

from prefect import flow

from flows._report import artifact_key, human_bytes, publish, run_name
from tasks import (
    finish_progress,
    list_snapshots,
    restore_original,
    restore_snapshot,
    start_progress,
    with_retry_policy,
)
from walship.catalog import select_snapshot
from walship.models import RestoreResult, RestoreTarget, RetryPolicy
from walship.original import OriginalRestoreResult


@flow(name="restore", flow_run_name=lambda: run_name("restore", "output"), log_prints=True)
def restore_flow(
    replica: str,
    output: Path,
    timestamp: datetime | None = None,
    snapshot_key: str | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    force: bool = False,
    database_id: str | None = None,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> RestoreResult | OriginalRestoreResult:
    """Restore ``replica`` to ``output``: the newest state, the newest at or before
    ``timestamp``, or WAL ``sequence`` of ``generation`` (default: the newest
    generation); ``snapshot_key`` restores one snapshot alone. Refuses to replace an
    existing file unless ``force``, and a replica of another database than ``database_id``."""
    snapshots = with_retry_policy(list_snapshots, retry)(replica)
    if not snapshots and sequence is None and generation is None:
        # No walship snapshot: the prefix may hold the original design's layout (docs/FORMAT.md).
        original = with_retry_policy(restore_original, retry)(
            replica, output, force, timestamp, snapshot_key, database_id
        )
        publish(
            "restore", output.name, f"Restore of the original layout's snapshot to {output}", original.report_rows()
        )
        return original
    chosen = select_snapshot(snapshots, key=snapshot_key, before=timestamp, generation=generation, sequence=sequence)
    target = RestoreTarget(
        segments=snapshot_key is None, until_time=timestamp, until_sequence=sequence, database_id=database_id
    )
    progress = start_progress(artifact_key("restore-progress", output.name), f"Restore of {chosen.database_id}")
    result = with_retry_policy(restore_snapshot, retry)(replica, chosen, output, force, target, progress)
    finish_progress(progress)
    publish(
        "restore",
        output.name,
        f"Restore of {chosen.database_id} to {output}",
        [
            ("snapshot", f"`{chosen.key}`"),
            ("position", str(result.position)),
            ("segments applied", str(result.segments_applied)),
            ("taken at", chosen.created_at.isoformat()),
            ("size", f"{human_bytes(chosen.compressed_size)} -> {human_bytes(result.size)}"),
            ("sha256", f"`{chosen.sha256}` (verified)"),
            ("integrity_check", result.integrity),
            ("duration", f"{result.duration_seconds:.2f} s"),
        ],
    )
    return result
