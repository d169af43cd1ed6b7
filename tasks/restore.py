"""Restore tasks: find what the replica holds, restore one snapshot."""

from pathlib import Path

from tasks._retry import walship_task
from walship import index, restore
from walship.models import RestoreResult, RestoreTarget, SnapshotInfo
from walship.storage import open_store

__all__ = ["list_snapshots", "restore_snapshot"]


@walship_task
def list_snapshots(replica: str) -> list[SnapshotInfo]:
    """Every snapshot a listing of the replica shows (the index spares HEADs)."""
    return index.current_snapshots(open_store(replica))


@walship_task
def restore_snapshot(
    replica: str, snapshot: SnapshotInfo, output: Path, force: bool, target: RestoreTarget
) -> RestoreResult:
    """Download, verify and apply a snapshot and its segments, and place the database atomically."""
    return restore.restore_snapshot(
        open_store(replica),
        snapshot,
        output,
        force=force,
        expected_database_id=target.database_id,
        segments=target.segments,
        until_sequence=target.until_sequence,
        until_time=target.until_time,
    )
