"""Opening a backup at a point for reading: the point chosen as a restore chooses it, then a read-only connection.

``choose_start`` (``walship.generations``) picks the snapshot and the last
segment, exactly as ``walship restore`` does for the same options, so a
query and a restore of one point read the same state. Only framed snapshots
can be read page by page; any other is refused with the way to read it.
"""

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import apsw

from walship.catalog import read_indexed_snapshot, require_replica
from walship.envelope import ZSTD_FRAMES, Keyring
from walship.errors import NotSeekableError, UsageError
from walship.generations import choose_start, describe_replica
from walship.models import RetryPolicy, SnapshotInfo, WalPosition
from walship.original import original_snapshots
from walship.query._cache import DEFAULT_CACHE_BYTES, FrameCache
from walship.query._frames import Retry, SnapshotFrames
from walship.query._pages import PointPages
from walship.query._vfs import PointVFS
from walship.retry import retrying
from walship.storage import ObjectStore, open_store

__all__ = ["Backup", "open_backup", "open_point"]

R = TypeVar("R")


@dataclass
class Backup:
    """A backup opened at a point: its read-only connection, what the point is, and what reading it fetched."""

    connection: apsw.Connection
    snapshot: SnapshotInfo
    position: WalPosition
    segments_applied: int
    page_count: int
    frames: SnapshotFrames
    cache: FrameCache

    @property
    def fetched_bytes(self) -> int:
        """Bytes read of the snapshot object so far: its tables and every frame not found in the cache."""
        return self.frames.fetched_bytes


@contextlib.contextmanager
def open_backup(
    replica: str | ObjectStore,
    *,
    timestamp: datetime | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    keys: Keyring | None = None,
    cache_dir: Path | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    policy: RetryPolicy | None = None,
) -> Iterator[apsw.Connection]:
    """A read-only ``apsw.Connection`` to the replica's database at a point, without restoring it.

    The point is the newest data, the state at ``timestamp``, or up to segment ``sequence`` (of
    ``generation``), as ``walship restore`` reads those options. Pages are fetched as SQLite reads them,
    and the frames holding them are kept in ``cache_dir`` (default: a temporary directory, removed at the end)
    within ``cache_bytes``. ``policy`` retries transient storage errors. ``open_point`` gives the details.
    """
    with open_point(
        replica,
        timestamp=timestamp,
        sequence=sequence,
        generation=generation,
        keys=keys,
        cache_dir=cache_dir,
        cache_bytes=cache_bytes,
        policy=policy,
    ) as backup:
        yield backup.connection


@contextlib.contextmanager
def open_point(
    replica: str | ObjectStore,
    *,
    timestamp: datetime | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    keys: Keyring | None = None,
    cache_dir: Path | None = None,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    policy: RetryPolicy | None = None,
) -> Iterator[Backup]:
    """``open_backup``, yielding the ``Backup``: its connection, the point it reads, the bytes it fetched."""
    store = open_store(replica) if isinstance(replica, str) else replica
    retry = _retry(policy)
    snapshot, until_sequence = retry(lambda: _choose(store, timestamp, sequence, generation))
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="walship-query-")))
        cache = FrameCache(cache_dir if cache_dir is not None else work / "frames", cache_bytes)
        frames = SnapshotFrames(store, snapshot, cache, retry)
        pages = retry(
            lambda: PointPages(
                store,
                snapshot,
                frames,
                until_sequence=until_sequence,
                until_time=timestamp,
                scratch=work,
                keys=keys,
            )
        )
        stack.callback(pages.close)
        vfs = PointVFS(pages)
        stack.callback(vfs.unregister)
        connection = apsw.Connection(vfs.uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI, vfs=vfs.name)
        stack.callback(connection.close)
        yield Backup(
            connection=connection,
            snapshot=snapshot,
            position=pages.position,
            segments_applied=pages.segments_applied,
            page_count=pages.page_count,
            frames=frames,
            cache=cache,
        )


def _retry(policy: RetryPolicy | None) -> Retry:
    def call(step: Callable[[], R]) -> R:
        return step() if policy is None else retrying(policy, step)

    return call


def _choose(
    store: ObjectStore, timestamp: datetime | None, sequence: int | None, generation: str | None
) -> tuple[SnapshotInfo, int | None]:
    """The snapshot a restore of the same point starts from (its own metadata), and the sequence it stops at."""
    if sequence is not None and sequence < 0:
        raise UsageError(f"--sequence {sequence}: a WAL sequence is 0 or more ('walship status' shows them)")
    generations = describe_replica(store)
    if not generations.generations and sequence is None and generation is None:
        listing = list(store.list())
        require_replica(store, listing)
        if original_snapshots(listing):
            raise NotSeekableError(
                f"replica {store.location} holds the original layout's snapshots, each one zstd stream that "
                "cannot be read page by page: restore it ('walship restore') and query the restored file"
            )
    chosen, until_sequence = choose_start(generations, before=timestamp, generation=generation, sequence=sequence)
    stored = read_indexed_snapshot(store, chosen)
    _require_framed(stored)
    return stored, until_sequence


def _require_framed(snapshot: SnapshotInfo) -> None:
    if snapshot.envelope == ZSTD_FRAMES:
        return
    if snapshot.encrypted:
        raise NotSeekableError(
            f"snapshot {snapshot.key} is encrypted ({snapshot.envelope}): one age stream cannot be read page by "
            "page\nrestore it ('walship restore --age-identity FILE') and query the restored file"
        )
    raise NotSeekableError(
        f"snapshot {snapshot.key} is one zstd stream ({snapshot.envelope}, written before framed snapshots) "
        "and cannot be read page by page\nrestore it ('walship restore') and query the restored file, or query "
        "a point after the next snapshot the shipper takes (framed)"
    )
