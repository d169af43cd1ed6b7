"""Snapshot pipeline steps over an ``ObjectStore``: the flow composes them.

Until WAL shipping takes snapshots itself, each standalone snapshot starts a
generation of its own (sequence 0): nothing proves continuity between two
standalone snapshots, and a generation promises exactly that.
"""

from datetime import datetime

from walship.catalog import describe_snapshot
from walship.errors import UsageError
from walship.index import read_index
from walship.layout import format_snapshot_key, new_generation
from walship.models import CompressedFile, SnapshotInfo, SnapshotSource, WalPosition
from walship.storage import ObjectStore

__all__ = ["check_database_id", "describe_new_snapshot", "upload_snapshot"]


def check_database_id(store: ObjectStore, database_id: str) -> None:
    """Refuse to mix two databases in one replica prefix."""
    metadata, _ = read_index(store)
    if metadata is not None and metadata.database_id not in (None, database_id):
        raise UsageError(
            f"replica {store.location} holds database {metadata.database_id!r}, not {database_id!r}: "
            "use another replica prefix, or pass --database-id if this really is the same database"
        )


def describe_new_snapshot(
    source: SnapshotSource,
    compressed: CompressedFile,
    *,
    database_id: str,
    generation: str | None = None,
    position: WalPosition | None = None,
    state_at: datetime | None = None,
) -> SnapshotInfo:
    """The description of a snapshot about to be stored; a new generation unless one is given."""
    generation = generation or new_generation(source.taken_at)
    sequence = position.sequence if position is not None else 0
    return SnapshotInfo(
        key=format_snapshot_key(generation, sequence),
        generation=generation,
        sequence=sequence,
        created_at=state_at or source.taken_at,
        raw_size=compressed.raw_size,
        compressed_size=compressed.compressed_size,
        sha256=compressed.sha256,
        page_size=source.page_size,
        page_count=source.page_count,
        level=compressed.level,
        database_id=database_id,
        sqlite_version=source.sqlite_version,
        wal_position=position,
    )


def upload_snapshot(
    store: ObjectStore,
    source: SnapshotSource,
    compressed: CompressedFile,
    *,
    database_id: str,
    generation: str | None = None,
    position: WalPosition | None = None,
) -> SnapshotInfo:
    """Upload a compressed snapshot under a new key; return what was stored."""
    info = describe_new_snapshot(source, compressed, database_id=database_id, generation=generation, position=position)
    store.put_file(info.key, compressed.path, metadata=describe_snapshot(info))
    return info
