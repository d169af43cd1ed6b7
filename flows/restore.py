"""Restore flow: pick a snapshot, download, verify, place atomically."""

from datetime import datetime
from pathlib import Path

from prefect import flow

from flows._report import artifact_key, human_bytes, publish, run_name
from tasks import (
    describe_generations,
    finish_progress,
    read_snapshot,
    restore_original,
    restore_snapshot,
    start_progress,
    with_retry_policy,
)
from walship.errors import UsageError
from walship.generations import choose_start
from walship.layout import parse_snapshot_key
from walship.models import RestoreResult, RestoreTarget, RetryPolicy, SnapshotInfo
from walship.original import OriginalRestoreResult
from walship.restore import point_in_time


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
    """Restore ``replica`` to ``output``: the newest data (failing, with the ways to an
    older point, when it cannot be restored), the state at ``timestamp``, or WAL
    ``sequence`` of ``generation`` (default: the generation with the newest data);
    ``snapshot_key`` restores one snapshot alone. Refuses to replace an existing file
    unless ``force``, and a replica of another database than ``database_id``."""
    if sequence is not None and sequence < 0:
        raise UsageError(f"--sequence {sequence}: a WAL sequence is 0 or more ('walship status' shows them)")
    chosen: SnapshotInfo
    until_sequence = sequence
    if snapshot_key is not None and parse_snapshot_key(snapshot_key) is not None:
        # Described from its own object: nothing else the prefix holds can stand in the way.
        chosen = with_retry_policy(read_snapshot, retry)(replica, snapshot_key)
    else:
        generations = with_retry_policy(describe_generations, retry)(replica)
        if not generations.generations and sequence is None and generation is None:
            # No walship data: the prefix may hold the original design's layout (docs/FORMAT.md).
            original = with_retry_policy(restore_original, retry)(
                replica, output, force, timestamp, snapshot_key, database_id
            )
            publish(
                "restore",
                output.name,
                f"Restore of the original layout's snapshot to {output}",
                original.report_rows(),
            )
            return original
        chosen, until_sequence = choose_start(
            generations, snapshot_key=snapshot_key, before=timestamp, generation=generation, sequence=sequence
        )
    target = RestoreTarget(
        segments=snapshot_key is None, until_time=timestamp, until_sequence=until_sequence, database_id=database_id
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
            *_point_in_time_rows(result),
            ("taken at", chosen.created_at.isoformat()),
            ("size", f"{human_bytes(chosen.compressed_size)} -> {human_bytes(result.size)}"),
            ("sha256", f"`{chosen.sha256}` (verified)"),
            ("integrity_check", result.integrity),
            ("duration", f"{result.duration_seconds:.2f} s"),
        ],
    )
    return result


def _point_in_time_rows(result: RestoreResult) -> list[tuple[str, str]]:
    line, warning = point_in_time(result)
    if not line:
        return []
    rows = [
        ("asked time", str(result.asked_time)),
        ("holds every commit up to", str(result.complete_until)),
    ]
    return [*rows, ("**warning**", warning)] if warning else rows
