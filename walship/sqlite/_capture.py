"""The replicator's own hold on a live database (see docs/ARCHITECTURE.md, "Holding the WAL").

``WalCapture`` always holds a read transaction (a *pin*) on one of two
connections of its own. While a pin that reads WAL frames is held, SQLite
cannot restart the WAL, so no frame is overwritten before it is copied. A pin
taken when every published frame is already in the database file reads the
file alone (SQLite's read mark 0): it lets the WAL restart once, and holds back
the backfill of anything newer, so at most one WAL's worth of frames can go,
and only frames already captured. Pins are moved forward often by taking the
new one before letting the old one go, so the hold is never interrupted and the
application's own checkpoints (any mode) wait on walship for one poll at most.

A third connection takes the write lock for a moment when a snapshot must
start at an exact WAL position (or the last frames of a checkpoint are
backfilled); a fourth runs walship's PASSIVE checkpoints. Those two are
opened when needed and closed after: an idle database holds its two pin
connections only, which a process shipping a thousand databases feels.

All of them are apsw's (a current SQLite, free of the WAL-reset bug of
3.7.0-3.51.2). Never open the same database with Python's ``sqlite3`` in the
same process: two SQLite libraries in one process do not see each other's
POSIX locks, and closing one drops the other's.
"""

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import apsw

from walship.errors import CorruptObjectError, UsageError, WalIndexUnsettledError, WritersBusyError
from walship.models import SnapshotSource, utcnow
from walship.sqlite._database import HEADER_SIZE, DatabaseHeader, check_database, parse_header
from walship.sqlite._pages import PageCopy, transaction_pages
from walship.sqlite._snapshot import backup_into, describe_copy
from walship.sqlite._vouched import scan_vouched
from walship.sqlite._wal import WAL_HEADER_SIZE, WalHeader, WalScan, parse_wal_header, scan_wal
from walship.sqlite._walindex import WAL_INDEX_READ_SIZE, WalIndexState, parse_wal_index

__all__ = ["Covers", "WalCapture"]

_BUSY_TIMEOUT_MS = 5_000
# The write lock is asked for briefly: an application's FULL/RESTART/TRUNCATE
# checkpoint holds it while it waits for our pin to move, so waiting longer
# here would only make both sides wait. Busy is retried at the next sync.
_WRITE_LOCK_TIMEOUT_MS = 200
_RETRY_PAUSE = 0.05
_COPY_CHUNK = 1 << 20
_HEADER_READS = 5

# Whether a cursor of record has captured every frame the index publishes
# (then a pin that lets the WAL restart loses nothing).
Covers = Callable[[WalIndexState], bool]


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
    """Pins, write-lock pauses and checkpoints on one live database."""

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
        # Every read of the database file in this process goes through this
        # descriptor, open as long as our connections: closing any other one
        # would drop their POSIX locks (see close and ``header``).
        self._db_fd: int | None = os.open(self.database, os.O_RDONLY)
        self._pins = [self._connect(holding=True), self._connect(holding=True)]
        self._active: int | None = None
        # Open only while writers are paused; checkpoints need a connection outside any transaction,
        # also then (outside a pause they get one of their own, see _checkpointing).
        self._locker: apsw.Connection | None = None
        self._checkpointer: apsw.Connection | None = None
        # A first read opens (or creates) the WAL index, so there is one to pin by.
        self._pins[0].execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
        # The WAL index as it was when the held pin began, and whether that
        # pin reads the database file alone (it lets the WAL restart once).
        self.pin: WalIndexState | None = None
        self.pin_lets_restart = False
        # How long writers waited the last time we held the write lock (bench/resync.py compares them).
        self.last_pause_seconds = 0.0

    def _connect(self, *, holding: bool = False) -> apsw.Connection:
        """A connection of ours; ``holding``: one that reads no pages of note (the pins, which live as
        long as we do, and the locker and the checkpointer, opened for a pause or a checkpoint)."""
        connection = apsw.Connection(str(self.database), flags=apsw.SQLITE_OPEN_READWRITE)
        connection.set_busy_timeout(_BUSY_TIMEOUT_MS)
        # Our connections never checkpoint on their own: walship decides when.
        connection.execute("PRAGMA wal_autocheckpoint=0").fetchall()
        if holding:
            # They need no page cache (a WAL change discards it anyway): dropping SQLite's first bulk
            # allocation halves what each costs (measured: 160 -> 79 KiB), which a fleet of a thousand
            # databases feels.
            connection.execute("PRAGMA cache_size=2").fetchall()
            connection.execute("PRAGMA shrink_memory").fetchall()
        return connection

    def close(self) -> None:
        for connection in (*self._pins, self._locker, self._checkpointer):
            with contextlib.suppress(apsw.Error):
                if connection is not None:
                    connection.close()
        self._locker = self._checkpointer = None
        self._active = None
        # Only now: closing any descriptor of the -shm drops every POSIX lock
        # this process holds on it, SQLite's read locks included.
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None
        if self._db_fd is not None:
            os.close(self._db_fd)
            self._db_fd = None

    def header(self) -> DatabaseHeader:
        """The database header as the file holds it now, read through the capture's own descriptor."""
        assert self._db_fd is not None, "the capture is closed"
        return parse_header(os.pread(self._db_fd, HEADER_SIZE, 0), self.database)

    def _read_shm(self, size: int) -> bytes:
        """Read the WAL index through one descriptor kept open for our lifetime.

        Opening and closing the -shm file here would silently release the
        read lock that keeps the WAL from being reset under us.
        """
        if self._shm_fd is None:
            self._shm_fd = os.open(f"{self.database}-shm", os.O_RDONLY)
        return os.pread(self._shm_fd, size, 0)

    def wal_index(self) -> WalIndexState | None:
        """The WAL index's state now, or None while it is unsettled or missing."""
        try:
            return parse_wal_index(self._read_shm(WAL_INDEX_READ_SIZE))
        except FileNotFoundError:
            return None

    # The pin ------------------------------------------------------------------

    @property
    def pinned(self) -> bool:
        return self._active is not None

    def move_pin(self, covers: Covers) -> bool:
        """Take a new pin at the WAL's current end, then let the old one go; False if kept as it was.

        The new read transaction starts on the spare connection while the old
        one still holds, so the WAL is never left unguarded. A pin that would
        let the WAL restart is taken only when ``covers`` says every published
        frame is captured (or there are none); otherwise, and whenever the
        index moved while the pin began (which read mark SQLite gave is then
        unknown), the new pin is dropped and the old one kept.
        """
        before = self.wal_index()
        if before is None:
            return False
        lets_restart = before.complete
        if lets_restart and before.max_frame and not covers(before):
            return False
        spare = 1 if self._active == 0 else 0
        connection = self._pins[spare]
        try:
            connection.execute("BEGIN").fetchall()
            # A read transaction starts at its first read, not at BEGIN.
            connection.execute("SELECT COUNT(*) FROM sqlite_schema").fetchall()
        except apsw.BusyError:
            self._end(connection)
            return False
        if self.wal_index() != before:
            self._end(connection)
            return False
        if self._active is not None:
            self._end(self._pins[self._active])
        self._active, self.pin, self.pin_lets_restart = spare, before, lets_restart
        return True

    @staticmethod
    def _end(connection: apsw.Connection) -> None:
        if connection.in_transaction:
            connection.execute("COMMIT").fetchall()

    def pin_now(self, covers: Covers, *, patience: float = 2.0) -> bool:
        """Take the first pin, one that ``covers`` allows if that comes within ``patience`` seconds.

        Returns whether it did; otherwise the pin may let the WAL restart
        over frames nobody captured, and the caller must prove continuity the
        strict way. Without a WAL index yet, there is nothing to hold: the
        first sync pins.
        """
        deadline = time.monotonic() + patience
        while not self.move_pin(covers):
            if self.wal_index() is None and not Path(f"{self.database}-shm").exists():
                return True
            if time.monotonic() >= deadline:
                while not self.move_pin(lambda _: True):
                    time.sleep(0.02)
                return False
            time.sleep(0.02)
        return True

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
        try:
            with self.wal_path.open("rb") as wal:
                bounded = wal if end is None else cast(BinaryIO, _Bounded(wal, end))
                if end is None:
                    return scan_wal(wal, start_offset=start_offset, start_checksum=start_checksum, max_bytes=max_bytes)
                return scan_vouched(
                    bounded, start_offset=start_offset, start_checksum=start_checksum, max_bytes=max_bytes
                )
        except CorruptObjectError as exc:
            # The application may truncate or restart the WAL between our reads of it (the pin allows
            # that once every frame is captured): what looks damaged then is a reset in progress.
            if self._reset_since(header):
                raise WalIndexUnsettledError(f"the WAL {self.wal_path} was reset while being read") from exc
            raise

    def _reset_since(self, header: WalHeader | None) -> bool:
        """Whether the WAL is no longer the one ``header`` describes (emptied, gone or restarted)."""
        try:
            now = self.wal_header()
        except CorruptObjectError:
            return False
        if header is None or now is None:
            return True
        return (now.salt1, now.salt2) != (header.salt1, header.salt2)

    def published_end(self, header: WalHeader) -> int:
        """The WAL byte offset after the last frame the WAL index (-shm) published.

        The index header is read without locks, as SQLite itself does: its
        two copies must agree, and its salts must be the WAL header's.
        """
        for attempt in range(_HEADER_READS):
            state = self.wal_index()
            if state is not None and (state.salt1, state.salt2) == (header.salt1, header.salt2):
                return WAL_HEADER_SIZE + state.max_frame * header.frame_size
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
    def writers_paused(self, *, attempts: int = 1, between: Callable[[], object] | None = None) -> Iterator[None]:
        """Hold the write lock: writers wait (their busy timeout) until the block ends.

        Keep the block short: it copies the WAL tail and opens a snapshot's
        read transaction, nothing longer. The lock is asked for ``attempts``
        times; ``between`` runs between two (to move the pin, so that an
        application's checkpoint holding the write lock can complete).
        Raises ``WritersBusyError`` if it never comes.
        """
        for attempt in range(attempts):
            try:
                self.pause_writers()
                break
            except WritersBusyError:
                if attempt == attempts - 1:
                    raise
                if between is not None:
                    between()
                time.sleep(_RETRY_PAUSE)
        paused = time.monotonic()
        try:
            yield
        finally:
            self.resume_writers()
            self.last_pause_seconds = time.monotonic() - paused

    def pause_writers(self) -> None:
        """Take the write lock, or raise ``WritersBusyError`` if it cannot be had at once (retry later)."""
        # Both connections are opened before the lock is asked for: writers never wait on a connect.
        locker = self._locker = self._locker or self._connect(holding=True)
        self._checkpointer = self._checkpointer or self._connect(holding=True)
        locker.set_busy_timeout(_WRITE_LOCK_TIMEOUT_MS)
        try:
            locker.execute("BEGIN IMMEDIATE").fetchall()
        except apsw.BusyError:
            self._rest()
            raise WritersBusyError(f"database {self.database}: the write lock is busy; retried later") from None
        locker.set_busy_timeout(_BUSY_TIMEOUT_MS)

    def resume_writers(self) -> None:
        assert self._locker is not None, "pause_writers() first"
        try:
            self._locker.execute("ROLLBACK").fetchall()
        finally:
            self._rest()

    def _rest(self) -> None:
        """Close the locker and the checkpointer (SQLite keeps the pins' locks: it closes a file only
        once no connection of this process holds a lock on it)."""
        for connection in (self._locker, self._checkpointer):
            if connection is not None:
                connection.close()
        self._locker = self._checkpointer = None

    @contextlib.contextmanager
    def _checkpointing(self) -> Iterator[apsw.Connection]:
        """The pause's checkpointer while writers are paused, else one of its own for this checkpoint."""
        if self._checkpointer is not None:
            yield self._checkpointer
            return
        connection = self._connect(holding=True)
        try:
            yield connection
        finally:
            connection.close()

    def checkpoint_passive(self) -> bool:
        """Backfill what every reader allows (PASSIVE never waits); True when the whole WAL is backfilled.

        It runs on a connection outside any transaction, beside the pin: the
        pin bounds the backfill to frames it reads, which is all captured or
        about to be. RESTART and TRUNCATE are never used: they wait on readers
        and block writers meanwhile.
        """
        try:
            with self._checkpointing() as checkpointer:
                (busy, log, done), *_ = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except apsw.BusyError:
            return False
        return bool(busy == 0 and log == done)

    def truncate_if_free(self) -> bool:
        """The emergency brake: TRUNCATE the WAL if nothing holds it back right now (never waits)."""
        return self._checkpoint_if_free("TRUNCATE")

    def ends_at(self, state: WalIndexState) -> bool:
        """Whether no frame can follow ``state`` in its WAL; ask it holding a pin at ``state`` that lets the
        WAL restart.

        Every frame is backfilled then, and SQLite backfills nothing more
        while such a pin reads the database file alone: that WAL can only
        restart as it is. True once it did restart, or when a RESTART
        checkpoint that does not wait finds no reader that could keep the
        next writer from restarting it. A reader whose snapshot is the WAL's
        end does keep it: writers then go on in the same WAL, and once that
        reader ends, their frames can be backfilled and the WAL restarted
        with nobody watching.
        """
        now = self.wal_index()
        if now is None:
            return False
        if (now.salt1, now.salt2) != (state.salt1, state.salt2):
            return True
        return now == state and self._checkpoint_if_free("RESTART") and self.wal_index() == state

    def _checkpoint_if_free(self, mode: str) -> bool:
        """A checkpoint of ``mode`` that never waits: True when nothing held it back."""
        try:
            with self._checkpointing() as checkpointer:
                checkpointer.set_busy_timeout(0)
                try:
                    (busy, log, done), *_ = checkpointer.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
                finally:
                    checkpointer.set_busy_timeout(_BUSY_TIMEOUT_MS)
        except apsw.BusyError:
            return False
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

    @contextlib.contextmanager
    def pages_now(self) -> Iterator[PageCopy]:
        """The pages of the state a read transaction beginning now sees (call it inside ``writers_paused``)."""
        assert self._db_fd is not None, "the capture is closed"
        # The WAL index is read once the transaction began (the second context): see transaction_pages.
        with (
            self.read_transaction_now() as connection,
            transaction_pages(connection, self._db_fd, self.wal_path, self.wal_index()) as pages,
        ):
            yield pages

    @staticmethod
    def copy_database(source: apsw.Connection, database: Path, target: Path) -> SnapshotSource:
        """Copy the state ``source``'s open read transaction sees into ``target``."""
        taken_at = utcnow()
        backup_into(source, target)
        return describe_copy(database, target, taken_at)
