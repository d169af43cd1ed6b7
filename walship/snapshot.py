"""Snapshots over an ``ObjectStore``: the streamed snapshot the flow and the CLI take, and its checks.

``stream_snapshot`` reads a consistent state of the live database, hashes it,
then compresses and uploads it in one pass: no copy of the database and no
compressed file on local disk; memory stays at zstd's jobs plus the upload's parts in flight.
The shipper's own snapshots still go through a spooled file (they must
survive a crash before upload), built from ``describe_new_snapshot``.

Until WAL shipping takes snapshots itself, each standalone snapshot starts a
generation of its own (sequence 0): nothing proves continuity between two
standalone snapshots, and a generation promises exactly that.
"""

import hashlib
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from walship.catalog import describe_snapshot, list_snapshots
from walship.codec import Progress, StreamTotals
from walship.envelope import Sealing, check_replica_sealing, seal_blocks, stored_bound
from walship.errors import CorruptObjectError, NotFoundError, UsageError
from walship.index import NewerIndexError, read_index
from walship.layout import LEASE_KEY, format_snapshot_key, new_generation
from walship.models import CompressedFile, SnapshotInfo, SnapshotSource, WalPosition
from walship.sqlite import consistent_pages
from walship.storage import ObjectStore

__all__ = ["check_database_id", "check_not_shipped", "describe_new_snapshot", "stream_snapshot", "upload_snapshot"]


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
    twice: hashed, then compressed and uploaded (writers go on meanwhile). The object
    appears whole with its metadata, or not at all. ``workdir`` is accepted
    for the callers' sake and unused: nothing is written to local disk.
    ``progress`` hears (bytes read, database size). The index is updated
    separately (``index.add_snapshot``). With age ``recipients`` the object
    is encrypted for them (``walship.envelope``).
    """
    del workdir  # nothing is spooled; kept so callers need not know
    sealing = Sealing(level=level, recipients=recipients).check()
    check_replica_sealing(store, sealing)
    with consistent_pages(database) as pages, ThreadPoolExecutor(1, thread_name_prefix="walship-hash") as hashing:
        generation = new_generation(pages.taken_at)
        # Two reads of the one state the transaction holds. The first only
        # hashes it, so the object's metadata is whole before its first byte
        # goes up: S3 takes metadata when an upload starts, and the other way
        # (a staging object copied under its key with late metadata) costs a
        # server-side copy of the whole object, 1.5 s a GiB against moto.
        # It runs on a thread of its own (pread and SHA-256 release the GIL)
        # while the second read compresses the first parts, which wait for
        # the metadata before they go up.
        first_read = hashing.submit(_sha256, pages.blocks())
        info = SnapshotInfo(
            key=format_snapshot_key(generation, 0),
            generation=generation,
            sequence=0,
            created_at=pages.taken_at,
            raw_size=pages.size,
            compressed_size=0,  # the object's size, known once it is stored
            sha256="",  # the first read's, once it has finished
            page_size=pages.page_size,
            page_count=pages.page_count,
            level=level,
            database_id=database_id,
            sqlite_version=pages.sqlite_version,
            envelope=sealing.envelope,
        )

        def described() -> dict[str, str]:
            nonlocal info
            info = info.model_copy(update={"sha256": first_read.result()})
            return describe_snapshot(info)

        totals = StreamTotals()
        chunks = seal_blocks(pages.blocks(), totals, size=pages.size, sealing=sealing, progress=progress)
        # The upload's part size is chosen from this bound.
        stored = store.put_chunks(
            info.key,
            _same_state(chunks, totals, first_read, info.key),
            metadata=described,
            size_hint=stored_bound(pages.size, sealing),
        )
    return info.model_copy(update={"compressed_size": stored.size})


def _sha256(blocks: Iterable[bytes | bytearray]) -> str:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def _same_state(chunks: Iterable[bytes], totals: StreamTotals, first_read: "Future[str]", key: str) -> Iterator[bytes]:
    """``chunks``, then a check that the second read hashed as the first did (else the upload is abandoned)."""
    yield from chunks
    first = first_read.result()
    if totals.sha256 != first:
        # The read transaction should make this impossible; if it ever is
        # not, the object must not appear with a checksum it does not have.
        raise CorruptObjectError(
            f"snapshot {key}: the database read differently the second time "
            f"(SHA-256 {totals.sha256}, first {first}): nothing was stored, take the snapshot again"
        )


def check_database_id(store: ObjectStore, database_id: str) -> None:
    """Refuse to mix two databases in one replica prefix."""
    try:
        metadata, _ = read_index(store)
        recorded = metadata.database_id if metadata is not None else None
    except NewerIndexError:
        raise  # a newer walship's index is never rebuilt over: fail before copying anything
    except CorruptObjectError:
        # The index is rebuilt by the update that follows; the snapshots say whose they are.
        snapshots = list_snapshots(store)
        recorded = snapshots[-1].database_id if snapshots else None
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
