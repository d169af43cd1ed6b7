"""Snapshot tasks: check the replica, take the streamed snapshot, record it."""

from pathlib import Path
from uuid import UUID

from tasks._progress import ArtifactProgress
from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import index, snapshot
from walship.models import ReplicaMetadata, SnapshotInfo

__all__ = ["check_replica", "stream_snapshot", "update_metadata"]


@walship_task
def check_replica(replica: str, database_id: str, credentials_block: str | None = None) -> None:
    """Fail before copying anything if the replica belongs to another database or a shipper feeds it."""
    store = open_replica(replica, credentials_block)
    snapshot.check_database_id(store, database_id)
    snapshot.check_not_shipped(store)


@walship_task
def stream_snapshot(
    replica: str,
    database: Path,
    database_id: str,
    level: int,
    workdir: Path | None = None,
    progress: UUID | None = None,
    credentials_block: str | None = None,
    recipients: tuple[str, ...] = (),
) -> SnapshotInfo:
    """Copy, compress and upload the live database in one pass; moves the run's
    ``progress`` artifact to 95 % (the index update takes the rest). With age ``recipients``
    (public keys) the object is encrypted for them."""
    callback = ArtifactProgress(progress, 0.0, 95.0) if progress is not None else None
    return snapshot.stream_snapshot(
        open_replica(replica, credentials_block),
        database,
        database_id=database_id,
        level=level,
        workdir=workdir,
        progress=callback,
        recipients=recipients,
    )


@walship_task
def update_metadata(replica: str, info: SnapshotInfo, credentials_block: str | None = None) -> ReplicaMetadata:
    """Record the snapshot in metadata.json with a conditional write."""
    return index.add_snapshot(open_replica(replica, credentials_block), info)
