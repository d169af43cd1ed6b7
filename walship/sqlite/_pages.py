"""A consistent copy of a live database read page by page, straight into a stream.

The backup API (``_snapshot.py``) first writes a second file the size of the
database; a streamed snapshot reads the pages itself instead, so they go from
the database and its WAL to the compressor in one pass.

Why it is consistent while writers go on: one connection holds a read
transaction for the whole read. While it does, SQLite restarts no WAL and
backfills no frame past that reader's mark, so the state it sees stays on disk:
the database file overlaid with the WAL's frames up to the ``mxFrame`` the
transaction began with (for each page, the newest such frame). A checkpoint may
still backfill frames up to that point meanwhile; those pages are read from the
WAL, so a torn read of the file there does not matter.

Which ``mxFrame``: the WAL index header is read before and after the
transaction begins; if both agree, the transaction began with it (it only
grows, and a restart changes the salts). If every frame up to it was already
backfilled, SQLite may have given the reader read mark 0 (the file alone, and
a WAL that may restart under it): then the file alone is read, which holds the
same state either way.

A database in rollback-journal mode is read under the read transaction's
SHARED lock: stable, but writers wait to commit until the read ends, as they
did for the backup API.
"""

import bisect
import contextlib
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import apsw

from walship.errors import CorruptObjectError, WritersBusyError
from walship.models import utcnow
from walship.sqlite._database import check_database
from walship.sqlite._walindex import WAL_INDEX_READ_SIZE, WalIndexState, parse_wal_index

__all__ = ["PageCopy", "consistent_pages", "transaction_pages"]

_BUSY_TIMEOUT_MS = 10_000
# Pages are handed on in blocks of about this size: large enough that a pread
# and a hash call per block cost nothing, small enough to stay in cache.
_BLOCK_BYTES = 1 << 20
# Writers commit between the two reads of the WAL index at most this often
# in a row before we give up (measured: 3 writers at 900 tx/s need 1-3).
_ATTEMPTS = 200
# "WAL File Format": a 32-byte header, then frames of a 24-byte header
# (page number, size after commit, salt-1, salt-2, checksums) and a page.
_WAL_HEADER = 32
_FRAME_HEADER = struct.Struct(">IIII")
_FRAME_HEADER_SIZE = 24


class PageCopy:
    """The pages of one committed state, as blocks of bytes in page order."""

    def __init__(self, db_fd: int, wal_fd: int | None, page_size: int, page_count: int, overlay: dict[int, int]):
        self.page_size = page_size
        self.page_count = page_count
        self.taken_at: datetime = utcnow()
        self.sqlite_version = f"apsw {apsw.sqlite_lib_version()}; application sqlite3 {sqlite3.sqlite_version}"
        self._db_fd, self._wal_fd = db_fd, wal_fd
        self._overlay = overlay  # page number -> offset of its newest page image in the WAL
        self._overlaid = sorted(overlay)

    @property
    def size(self) -> int:
        return self.page_size * self.page_count

    def blocks(self) -> Iterator[bytes | bytearray]:
        """Every page, in order, a block of whole pages at a time."""
        size, per_block = self.page_size, max(1, _BLOCK_BYTES // self.page_size)
        for first in range(1, self.page_count + 1, per_block):
            count = min(per_block, self.page_count - first + 1)
            data = os.pread(self._db_fd, count * size, (first - 1) * size)
            from_file = len(data) // size  # the file may end early: those pages live in the WAL
            lo = bisect.bisect_left(self._overlaid, first)
            hi = bisect.bisect_left(self._overlaid, first + count)
            in_wal = self._overlaid[lo:hi]
            if not in_wal and from_file == count:
                yield data
                continue
            missing = set(range(first + from_file, first + count)).difference(in_wal)
            if missing:
                raise CorruptObjectError(
                    f"copy: page {min(missing)} of {self.page_count} is in neither the database file nor its WAL"
                )
            block = bytearray(count * size)
            block[: from_file * size] = data[: from_file * size]
            assert self._wal_fd is not None  # pages overlaid only when there is a WAL
            for page in in_wal:
                image = os.pread(self._wal_fd, size, self._overlay[page])
                if len(image) != size:
                    raise CorruptObjectError(f"copy: the WAL ends inside the frame of page {page}")
                at = (page - first) * size
                block[at : at + size] = image
            yield block


@contextlib.contextmanager
def consistent_pages(database: Path) -> Iterator[PageCopy]:
    """Hold a read transaction on ``database`` and yield its state's pages.

    Raises ``UsageError`` for anything that is not a SQLite database,
    ``CorruptObjectError`` if SQLite cannot read it.
    """
    database = database.resolve()
    check_database(database)
    fds: list[int] = []
    connection: apsw.Connection | None = None
    try:
        # READWRITE without CREATE: a database that vanished since the check
        # is an error, never a new empty file. (A WAL reader needs write
        # access to the WAL index.)
        connection = apsw.Connection(str(database), flags=apsw.SQLITE_OPEN_READWRITE)
        connection.set_busy_timeout(_BUSY_TIMEOUT_MS)
        connection.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()  # opens (or recovers) the WAL index
        fds.append(os.open(database, os.O_RDONLY))
        wal_mode = str(connection.execute("PRAGMA journal_mode").fetchall()[0][0]).lower() == "wal"
        overlay: dict[int, int] = {}
        wal_fd: int | None = None
        if wal_mode:
            fds.append(os.open(f"{database}-shm", os.O_RDONLY))
            state = _begin_read(connection, fds[-1])
            if state.max_frame > state.backfilled:
                wal_fd = os.open(f"{database}-wal", os.O_RDONLY)
                fds.append(wal_fd)
                overlay = _newest_frames(wal_fd, state)
        else:
            connection.execute("BEGIN").fetchall()
            connection.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
        page_size = _pragma(connection, "page_size")
        page_count = _pragma(connection, "page_count")
        yield PageCopy(fds[0], wal_fd, page_size, page_count, overlay)
    except apsw.Error as exc:
        raise CorruptObjectError(f"snapshot {database}: SQLite could not read it: {exc}") from exc
    finally:
        if connection is not None:
            connection.close()
        # Only now: closing any descriptor of the database or its -shm drops
        # every POSIX lock this process holds on it, our read transaction's too.
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def transaction_pages(
    connection: apsw.Connection, db_fd: int, wal_path: Path, state: WalIndexState | None
) -> Iterator[PageCopy]:
    """The pages ``connection``'s open read transaction sees, the database read through ``db_fd``.

    For a caller that holds the database with connections of its own (the
    shipper): it keeps ``db_fd`` open as long as they live, since closing a
    descriptor of the database would drop their locks. ``state`` is the WAL
    index read after the transaction began, while writers waited: frames
    not yet backfilled then could not be backfilled or overwritten since.
    """
    page_size = _pragma(connection, "page_size")
    page_count = _pragma(connection, "page_count")
    wal_fd: int | None = None
    try:
        overlay: dict[int, int] = {}
        if state is not None and state.max_frame > state.backfilled:
            wal_fd = os.open(wal_path, os.O_RDONLY)  # SQLite locks the -shm, never the WAL: closing it is safe
            overlay = _newest_frames(wal_fd, state)
        yield PageCopy(db_fd, wal_fd, page_size, page_count, overlay)
    finally:
        if wal_fd is not None:
            os.close(wal_fd)


def _pragma(connection: apsw.Connection, name: str) -> int:
    value = connection.execute(f"PRAGMA {name}").fetchall()[0][0]
    assert isinstance(value, int)
    return value


def _wal_index(shm_fd: int) -> WalIndexState | None:
    return parse_wal_index(os.pread(shm_fd, WAL_INDEX_READ_SIZE, 0))


def _begin_read(connection: apsw.Connection, shm_fd: int) -> WalIndexState:
    """Begin a read transaction and return the WAL index state it began with."""
    for attempt in range(_ATTEMPTS):
        before = _wal_index(shm_fd)
        connection.execute("BEGIN").fetchall()
        connection.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
        after = _wal_index(shm_fd)
        if before is not None and after is not None and before[:3] == after[:3]:
            return after
        connection.execute("COMMIT").fetchall()
        time.sleep(min(0.001 * attempt, 0.02))
    raise WritersBusyError("snapshot: the WAL index changed at every attempt to begin a read; try again")


def _newest_frames(wal_fd: int, state: WalIndexState) -> dict[int, int]:
    """For each page in the WAL's first ``state.max_frame`` frames, where its newest image is."""
    header = os.pread(wal_fd, _WAL_HEADER, 0)
    if len(header) != _WAL_HEADER:
        raise CorruptObjectError("copy: the WAL is shorter than its header")
    (page_size,) = struct.unpack_from(">I", header, 8)
    frame_size = _FRAME_HEADER_SIZE + page_size
    per_read = max(1, _BLOCK_BYTES // frame_size)
    newest: dict[int, int] = {}
    for first in range(0, state.max_frame, per_read):
        count = min(per_read, state.max_frame - first)
        offset = _WAL_HEADER + first * frame_size
        data = os.pread(wal_fd, count * frame_size, offset)
        if len(data) != count * frame_size:
            raise CorruptObjectError(f"copy: the WAL ends before frame {state.max_frame} that its index publishes")
        for n in range(count):
            page, _, salt1, salt2 = _FRAME_HEADER.unpack_from(data, n * frame_size)
            if (salt1, salt2) != (state.salt1, state.salt2):
                raise CorruptObjectError(f"copy: WAL frame {first + n + 1} does not belong to the published WAL")
            newest[page] = offset + n * frame_size + _FRAME_HEADER_SIZE
    return newest
