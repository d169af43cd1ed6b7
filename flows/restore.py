"""Restore flow: pick a snapshot, download, verify, place atomically."""

from datetime import datetime
from pathlib import Path

from prefect import flow

from flows._report import human_bytes, publish, run_name
from tasks import list_snapshots, restore_snapshot, with_retry_policy
from walship.catalog import select_snapshot
from walship.models import RestoreResult, RestoreTarget, RetryPolicy


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
) -> RestoreResult:
    """Restore ``replica`` to ``output``: the newest state, the newest at or before
    ``timestamp``, or WAL ``sequence`` of ``generation`` (default: the newest
    generation); ``snapshot_key`` restores one snapshot alone. Refuses to replace an
    existing file unless ``force``, and a replica of another database than ``database_id``."""
    snapshots = with_retry_policy(list_snapshots, retry)(replica)
    chosen = select_snapshot(snapshots, key=snapshot_key, before=timestamp, generation=generation, sequence=sequence)
    target = RestoreTarget(
        segments=snapshot_key is None, until_time=timestamp, until_sequence=sequence, database_id=database_id
    )
    result = with_retry_policy(restore_snapshot, retry)(replica, chosen, output, force, target)
    publish(
        "restore",
        output.name,
        f"Restore of {chosen.database_id} to {output}",
        [
            ("snapshot", f"`{chosen.key}`"),
            ("position", f"{result.position.generation}/{result.position.sequence}"),
            ("segments applied", str(result.segments_applied)),
            ("taken at", chosen.created_at.isoformat()),
            ("size", f"{human_bytes(chosen.compressed_size)} -> {human_bytes(result.size)}"),
            ("sha256", f"`{chosen.sha256}` (verified)"),
            ("integrity_check", result.integrity),
            ("duration", f"{result.duration_seconds:.2f} s"),
        ],
    )
    return result
