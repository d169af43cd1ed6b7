"""Restore tasks: find what the replica holds, restore one snapshot (or one of the original layout's)."""

from datetime import datetime
from pathlib import Path
from uuid import UUID

from tasks._keys import load_keys
from tasks._progress import ArtifactProgress
from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import catalog, generations, original, restore
from walship.models import RestoreResult, RestoreTarget, SnapshotInfo

__all__ = ["describe_generations", "read_snapshot", "restore_original", "restore_snapshot"]


@walship_task
def describe_generations(replica: str, credentials_block: str | None = None) -> generations.ReplicaGenerations:
    """Every generation a listing of the replica shows, and which holds the newest data, checked against the index."""
    return generations.describe_replica(open_replica(replica, credentials_block))


@walship_task
def read_snapshot(replica: str, key: str, credentials_block: str | None = None) -> SnapshotInfo:
    """One snapshot described from its own object (one HEAD), whatever else the replica holds."""
    return catalog.read_snapshot_info(open_replica(replica, credentials_block), key)


@walship_task
def restore_snapshot(
    replica: str,
    snapshot: SnapshotInfo,
    output: Path,
    force: bool,
    target: RestoreTarget,
    progress: UUID | None = None,
    credentials_block: str | None = None,
    identity_block: str | None = None,
    identity_file: Path | None = None,
) -> RestoreResult:
    """Download, verify and apply a snapshot and its segments, and place the database atomically;
    the snapshot's bytes move the run's ``progress`` artifact to 90 % (segments and checks take the rest).
    Encrypted objects open with the identity of ``identity_block`` (a Secret block) or ``identity_file``."""
    return restore.restore_snapshot(
        open_replica(replica, credentials_block),
        snapshot,
        output,
        force=force,
        expected_database_id=target.database_id,
        segments=target.segments,
        until_sequence=target.until_sequence,
        until_time=target.until_time,
        progress=ArtifactProgress(progress, 0.0, 90.0) if progress is not None else None,
        keys=load_keys(identity_block, identity_file),
    )


@walship_task
def restore_original(
    replica: str,
    output: Path,
    force: bool,
    timestamp: datetime | None = None,
    snapshot_key: str | None = None,
    database_id: str | None = None,
    credentials_block: str | None = None,
) -> original.OriginalRestoreResult:
    """Restore the newest snapshot (at or before ``timestamp``) of a prefix in the original design's
    layout, verified and placed atomically; its WAL objects are not applied."""
    return original.restore_original(
        open_replica(replica, credentials_block),
        output,
        force=force,
        before=timestamp,
        key=snapshot_key,
        expected_database_id=database_id,
    )
