"""The replicator's own hold on a live database (see DESIGN.md, "Capturing WAL").

``WalCapture`` keeps a read transaction open on its own connection: while it
is open, no checkpoint can backfill past it, so no writer can restart the WAL
and overwrite frames not yet copied. A second connection takes the write lock
for a moment when walship checkpoints or starts a snapshot, so the WAL tail
can be copied with nothing appended behind it.

Both connections are apsw's (a current SQLite, free of the WAL-reset bug of
3.7.0-3.51.2). Never open the same database with Python's ``sqlite3`` in the
same process: two SQLite libraries in one process do not see each other's
POSIX locks, and closing one drops the other's.
"""

import contextlib
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, cast

import apsw

from walship.errors import CorruptObjectError, UsageError
from walship.models import SnapshotSource, utcnow
from walship.sqlite._database import check_database
from walship.sqlite._snapshot import backup_into, describe_copy
from walship.sqlite._wal import WAL_HEADER_SIZE, WalHeader, WalScan, parse_wal_header, scan_wal

__all__ = ["WalCapture", "WalIndexUnsettledError"]

_BUSY_TIMEOUT_MS = 5_000
_COPY_CHUNK = 1 << 20
_HEADER_READS = 5
# "WAL-index Format" (walformat.html): two copies of a 48-byte header; in it,
# isInit at byte 12, mxFrame at 16 and the WAL salts at 32, in native order.
_SHM_HEADER_SIZE = 48


class WalIndexUnsettledError(Exception):
    """The WAL index and the WAL disagree for now (a reset in progress); try again later."""


class _Bounded:
    """A read-only file that ends at ``end``."""

    def __init__(self, raw: BinaryIO, end: int) -> None:
        self._raw, self._end = raw, end

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        left = max(0, self._end - self._raw.tell())
        return self._raw.read(left if size < 0 else min(size, left))


class WalCapture:
    """Read transaction, write-lock pauses and checkpoints on one live database."""

    def __init__(self, database: Path) -> None:
        self.database = database.resolve()
        header = check_database(self.database)
        if not header.wal_mode:
            raise UsageError(
                f"database {self.database} is not in WAL mode: run PRAGMA journal_mode=WAL on it "
                "(and in the application) before shipping its WAL"
            )
        self.wal_path = Path(f"{self.database}-wal")
        self._shm_fd: int | None = None
        self._reader = self._connect()
        self._locker = self._connect()
        self._begin_read()

    def _connect(self) -> apsw.Connection:
        connection = apsw.Connection(str(self.database), flags=apsw.SQLITE_OPEN_READWRITE)
        connection.set_busy_timeout(_BUSY_TIMEOUT_MS)
        # Our connections never checkpoint on their own: walship decides when.
        connection.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        return connection

    def close(self) -> None:
        for connection in (self._reader, self._locker):
            with contextlib.suppress(apsw.Error):
                connection.close()
        # Only now: closing any descriptor of the -shm drops every POSIX lock
        # this process holds on it, SQLite's read locks included.
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None

    def _read_shm(self, size: int) -> bytes:
        """Read the WAL index through one descriptor kept open for our lifetime.

        Opening and closing the -shm file here would silently release the
        read lock that keeps the WAL from being reset under us.
        """
        if self._shm_fd is None:
            self._shm_fd = os.open(f"{self.database}-shm", os.O_RDONLY)
        return os.pread(self._shm_fd, size, 0)

    def _begin_read(self) -> None:
        self._reader.execute("BEGIN").fetchall()
        # A read transaction starts at its first read, not at BEGIN.
        self._reader.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()

    def _end_read(self) -> None:
        if self._reader.in_transaction:
            self._reader.execute("COMMIT").fetchall()

    @property
    def db_inode(self) -> int:
        return os.stat(self.database).st_ino

    @property
    def db_mtime_ns(self) -> int:
        return os.stat(self.database).st_mtime_ns

    def wal_header(self) -> WalHeader | None:
        """The WAL's header, or None while there is no WAL (or an empty one).

        A writer resetting the WAL rewrites the header in place, so a read can
        catch it half-written: such a header is read again a few times before
        it counts as corrupt.
        """
        for attempt in range(_HEADER_READS):
            try:
                with self.wal_path.open("rb") as wal:
                    data = wal.read(WAL_HEADER_SIZE)
            except FileNotFoundError:
                return None
            if len(data) < WAL_HEADER_SIZE:
                return None
            try:
                return parse_wal_header(data)
            except CorruptObjectError:
                if attempt == _HEADER_READS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def scan(
        self, start_offset: int, start_checksum: tuple[int, int] | None, *, max_bytes: int | None = None
    ) -> WalScan:
        """Whole committed transactions from ``start_offset``, up to the WAL index's end
        (or within ``max_bytes``, see ``scan_wal``).

        Frames past the index's ``mxFrame`` are not committed, whatever they
        look like: a writer killed between writing its frames and publishing
        them in the index leaves a valid-looking commit that the next writer
        overwrites. Only what the index published counts.
        """
        header = self.wal_header()
        end = self.published_end(header) if header is not None else None
        with self.wal_path.open("rb") as wal:
            bounded = wal if end is None else cast(BinaryIO, _Bounded(wal, end))
            return scan_wal(bounded, start_offset=start_offset, start_checksum=start_checksum, max_bytes=max_bytes)

    def published_end(self, header: WalHeader) -> int:
        """The WAL byte offset after the last frame the WAL index (-shm) published.

        The index header is read without locks, as SQLite itself does: its
        two copies must agree, and its salts must be the WAL header's.
        """
        for attempt in range(_HEADER_READS):
            data = self._read_shm(2 * _SHM_HEADER_SIZE)
            first, second = data[:_SHM_HEADER_SIZE], data[_SHM_HEADER_SIZE : 2 * _SHM_HEADER_SIZE]
            if len(second) == _SHM_HEADER_SIZE and first == second and first[12]:
                # mxFrame is native; the salts are the WAL header's bytes, copied as they are.
                (max_frame,) = struct.unpack_from("=I", first, 16)
                if struct.unpack_from(">II", first, 32) == (header.salt1, header.salt2):
                    return WAL_HEADER_SIZE + int(max_frame) * header.frame_size
            time.sleep(0.01 * (attempt + 1))
        raise WalIndexUnsettledError(
            f"the WAL index {self.database}-shm does not describe the WAL {self.wal_path} (a reset in progress?); "
            "if this persists, is the database opened with locking_mode=EXCLUSIVE? walship needs the shared WAL index"
        )

    def frame_checksum_before(self, offset: int, header: WalHeader) -> tuple[int, int] | None:
        """The stored checksum of the frame ending at ``offset`` (None if the WAL is shorter)."""
        with self.wal_path.open("rb") as wal:
            wal.seek(offset - header.frame_size + 16)
            data = wal.read(8)
        if len(data) < 8:
            return None
        return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")

    def copy_range(self, start: int, end: int, write: Callable[[bytes], object]) -> None:
        """Copy WAL bytes ``[start, end)`` to ``write``; the scan already validated them."""
        with self.wal_path.open("rb") as wal:
            wal.seek(start)
            left = end - start
            while left:
                chunk = wal.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise CorruptObjectError(f"WAL {self.wal_path} shrank while being copied")
                write(chunk)
                left -= len(chunk)

    @contextlib.contextmanager
    def writers_paused(self) -> Iterator[None]:
        """Hold the write lock: writers wait (their busy timeout) until the block ends.

        Keep the block short: it copies the WAL tail and checkpoints, or
        opens a snapshot's read transaction, nothing longer.
        """
        self._locker.execute("BEGIN IMMEDIATE").fetchall()
        try:
            yield
        finally:
            self._locker.execute("ROLLBACK").fetchall()

    def checkpoint(self, mode: Literal["PASSIVE", "TRUNCATE"]) -> bool:
        """Checkpoint (inside ``writers_paused``); True when the whole WAL was backfilled.

        Our own read transaction would hold the checkpoint back, so it ends
        for the checkpoint and begins again after it. RESTART is never used:
        it blocks writers until every reader is done.
        """
        self._end_read()
        try:
            (busy, log, done), *_ = self._reader.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        finally:
            self._begin_read()
        return bool(busy == 0 and log == done)

    @contextlib.contextmanager
    def read_transaction_now(self) -> Iterator[apsw.Connection]:
        """A connection whose read transaction starts now (call it inside ``writers_paused``)."""
        connection = self._connect()
        try:
            connection.execute("BEGIN").fetchall()
            connection.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
            yield connection
        finally:
            connection.close()

    @staticmethod
    def copy_database(source: apsw.Connection, database: Path, target: Path) -> SnapshotSource:
        """Copy the state ``source``'s open read transaction sees into ``target``."""
        taken_at = utcnow()
        backup_into(source, target)
        return describe_copy(database, target, taken_at)
