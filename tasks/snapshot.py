"""Snapshot tasks: copy, compress, upload, record."""

from pathlib import Path
from uuid import UUID

from tasks._progress import ArtifactProgress
from tasks._retry import walship_task
from tasks._storage import open_replica
from walship import codec, index, snapshot, sqlite
from walship.models import CompressedFile, ReplicaMetadata, SnapshotInfo, SnapshotSource

__all__ = ["check_replica", "compress", "take_snapshot", "update_metadata", "upload"]


@walship_task
def check_replica(replica: str, database_id: str, credentials_block: str | None = None) -> None:
    """Fail before copying anything if the replica belongs to another database or a shipper feeds it."""
    store = open_replica(replica, credentials_block)
    snapshot.check_database_id(store, database_id)
    snapshot.check_not_shipped(store)


@walship_task
def take_snapshot(database: Path, target: Path) -> SnapshotSource:
    """Consistent copy of the live database into a local temporary file."""
    return sqlite.take_snapshot(database, target)


@walship_task
def compress(source: Path, target: Path, level: int, progress: UUID | None = None) -> CompressedFile:
    """Streaming zstd of a local file, with the SHA-256 of its content; moves the
    run's ``progress`` artifact to 90 % (the upload and the index take the rest)."""
    callback = ArtifactProgress(progress, 0.0, 90.0) if progress is not None else None
    return codec.compress_file(source, target, level, progress=callback)


@walship_task
def upload(
    replica: str,
    source: SnapshotSource,
    compressed: CompressedFile,
    database_id: str,
    credentials_block: str | None = None,
) -> SnapshotInfo:
    """Upload the compressed snapshot under a new, immutable key."""
    return snapshot.upload_snapshot(
        open_replica(replica, credentials_block), source, compressed, database_id=database_id
    )


@walship_task
def update_metadata(replica: str, info: SnapshotInfo, credentials_block: str | None = None) -> ReplicaMetadata:
    """Record the snapshot in metadata.json with a conditional write."""
    return index.add_snapshot(open_replica(replica, credentials_block), info)
