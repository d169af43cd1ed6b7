"""Snapshots over an ``ObjectStore``: the streamed snapshot the flow and the CLI take, and its checks.

``stream_snapshot`` reads a consistent state of the live database and hashes,
compresses and uploads it in one pass: no copy of the database and no
compressed file on local disk; memory stays at zstd's jobs plus the upload's parts in flight.
The shipper's own snapshots still go through a spooled file (they must
survive a crash before upload), built from ``describe_new_snapshot``.

Until WAL shipping takes snapshots itself, each standalone snapshot starts a
generation of its own (sequence 0): nothing proves continuity between two
standalone snapshots, and a generation promises exactly that.
"""

from datetime import datetime
from pathlib import Path

from walship.catalog import describe_snapshot, list_snapshots
from walship.codec import Progress, StreamTotals
from walship.envelope import Sealing, check_replica_sealing, seal_blocks, stored_bound
from walship.errors import CorruptObjectError, NewerIndexError, NotFoundError, UsageError
from walship.index import read_index
from walship.layout import LEASE_KEY, format_snapshot_key, new_generation
from walship.models import CompressedFile, SnapshotInfo, SnapshotSource, WalPosition
from walship.sqlite import consistent_pages
from walship.storage import ObjectStore

__all__ = [
    "check_database_id",
    "check_not_shipped",
    "describe_new_snapshot",
    "recorded_database_id",
    "stream_snapshot",
    "upload_snapshot",
]


def stream_snapshot(
    store: ObjectStore,
    database: Path,
    *,
    database_id: str,
    level: int,
    workdir: Path | None = None,
    progress: Progress | None = None,
    recipients: tuple[str, ...] = (),
) -> SnapshotInfo:
    """Snapshot the live ``database`` into ``store`` in one upload: a new generation at sequence 0.

    A read transaction holds one committed state while its pages are read
    once, hashed, compressed and uploaded (writers go on meanwhile). The object
    appears whole with its metadata and ends with its SHA-256, or not at all. ``workdir`` is accepted
    for the callers' sake and unused: nothing is written to local disk.
    ``progress`` hears (bytes read, database size). The index is updated
    separately (``index.add_snapshot``). With age ``recipients`` the object
    is encrypted for them (``walship.envelope``).
    """
    del workdir  # nothing is spooled; kept so callers need not know
    sealing = Sealing(level=level, recipients=recipients).check()
    check_replica_sealing(store, sealing)
    with consistent_pages(database) as pages:
        generation = new_generation(pages.taken_at)
        # S3 takes metadata when an upload starts, before the SHA-256 of a
        # state read once is known: the object records it at its end
        # instead (walship.trailer), and the index records it once the
        # object is whole. Reading the state twice to know it first cost
        # 0.8 s a GiB; a staging object copied under its key with late
        # metadata cost a server-side copy of it, 1.5 s a GiB against moto.
        info = SnapshotInfo(
            key=format_snapshot_key(generation, 0),
            generation=generation,
            sequence=0,
            created_at=pages.taken_at,
            raw_size=pages.size,
            compressed_size=0,  # the object's size, known once it is stored
            sha256="",  # at the object's end
            sha256_at_end=True,
            page_size=pages.page_size,
            page_count=pages.page_count,
            level=level,
            database_id=database_id,
            sqlite_version=pages.sqlite_version,
            envelope=sealing.snapshot_envelope,
        )
        totals = StreamTotals()
        chunks = seal_blocks(
            pages.blocks(), totals, size=pages.size, page_size=pages.page_size, sealing=sealing, progress=progress
        )
        # The upload's part size is chosen from this bound.
        stored = store.put_chunks(
            info.key, chunks, metadata=describe_snapshot(info), size_hint=stored_bound(pages.size, sealing)
        )
    return info.model_copy(update={"compressed_size": stored.size, "sha256": totals.sha256})


def recorded_database_id(store: ObjectStore) -> str | None:
    """The database id the replica records (its index, else its newest snapshot); None when it has no index."""
    try:
        metadata, _ = read_index(store)
    except NewerIndexError:
        raise  # a newer walship's index is never rebuilt over: fail before copying anything
    except CorruptObjectError:
        # The index is rebuilt by the next update; the snapshots say whose they are.
        snapshots = list_snapshots(store)
        return snapshots[-1].database_id if snapshots else None
    return metadata.database_id if metadata is not None else None


def check_database_id(store: ObjectStore, database_id: str) -> None:
    """Refuse to mix two databases in one replica prefix."""
    recorded = recorded_database_id(store)
    if recorded not in (None, database_id):
        raise UsageError(
            f"replica {store.location} holds database {recorded!r}, not {database_id!r}: "
            "use another replica prefix, or pass --database-id if this really is the same database"
        )


def check_not_shipped(store: ObjectStore) -> None:
    """Refuse a standalone snapshot into a replica that ``walship ship`` feeds.

    A standalone snapshot starts a generation of its own, and a restore of
    the newest state starts from the newest snapshot: the WAL the shipper
    ships after it would be passed over. The shipper snapshots its own
    generation instead (``--snapshot-interval``).
    """
    try:
        store.head(LEASE_KEY)
    except NotFoundError:
        return
    raise UsageError(
        f"replica {store.location} is fed by 'walship ship', which takes its own snapshots "
        "(--snapshot-interval): send standalone snapshots to another replica prefix"
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
        envelope=compressed.envelope,
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
