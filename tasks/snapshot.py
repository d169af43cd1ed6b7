"""Snapshot tasks: copy, compress, upload, record."""

from pathlib import Path

from tasks._retry import walship_task
from walship import codec, index, snapshot, sqlite
from walship.models import CompressedFile, ReplicaMetadata, SnapshotInfo, SnapshotSource
from walship.storage import open_store

__all__ = ["check_replica", "compress", "take_snapshot", "update_metadata", "upload"]


@walship_task
def check_replica(replica: str, database_id: str) -> None:
    """Fail before copying anything if the replica belongs to another database."""
    snapshot.check_database_id(open_store(replica), database_id)


@walship_task
def take_snapshot(database: Path, target: Path) -> SnapshotSource:
    """Consistent copy of the live database into a local temporary file."""
    return sqlite.take_snapshot(database, target)


@walship_task
def compress(source: Path, target: Path, level: int) -> CompressedFile:
    """Streaming zstd of a local file, with the SHA-256 of its content."""
    return codec.compress_file(source, target, level)


@walship_task
def upload(replica: str, source: SnapshotSource, compressed: CompressedFile, database_id: str) -> SnapshotInfo:
    """Upload the compressed snapshot under a new, immutable key."""
    return snapshot.upload_snapshot(open_store(replica), source, compressed, database_id=database_id)


@walship_task
def update_metadata(replica: str, info: SnapshotInfo) -> ReplicaMetadata:
    """Record the snapshot in metadata.json with a conditional write."""
    return index.add_snapshot(open_store(replica), info)
