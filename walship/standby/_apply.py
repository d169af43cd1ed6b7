"""Pages applied to a standby as one commit of its own WAL, under SQLite's own write lock.

docs/ARCHITECTURE.md ("A standby readers can trust") gives the choice and
the proof. In short: a connection of our own takes the WAL write lock with
``BEGIN IMMEDIATE``; while it holds it, the pages go into the standby's WAL as
frames that continue its checksum chain, the last one a commit frame, the WAL
is synced, the frames are entered in the WAL index, and only then the index
header moves ``mxFrame`` past them: the one store that makes the new state
visible, exactly as SQLite's own commit does. A reader sees the state its
transaction began with; a process killed before that store leaves frames
nobody reads, and SQLite's recovery replays them only up to a whole commit.
"""

import contextlib
import os
import platform
import secrets
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import apsw

from walship.errors import CorruptObjectError, StandbyBusyError, StandbyChangedError, UsageError
from walship.sqlite import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    WAL_MAGIC,
    WAL_VERSION,
    FrameShares,
    parse_wal_header,
    wal_checksum,
)
from walship.standby._walindex import IndexHeader, WalIndexWriter

__all__ = ["CHECKPOINT_FRAMES", "Applied", "Standby"]

_WRITE_BYTES = 1 << 20
# A frame header's checksum: its last two words, filled in once the batch's shares are known.
_FRAME_CHECKSUM = struct.Struct(">II")
_FRAME_CHECKSUM_AT = 16
_NO_CHECKSUM_YET = bytes(_FRAME_CHECKSUM.size)
_MAGIC = b"SQLite format 3\x00"
_NATIVE_BIG_ENDIAN = sys.byteorder == "big"
# A WAL past this many frames is checkpointed and emptied after an apply, as
# SQLite's own autocheckpoint does for a writer.
CHECKPOINT_FRAMES = 1000
# How long a checkpoint waits for readers still in the WAL; they keep it for the next one.
_CHECKPOINT_WAIT_MS = 200
# The index's entries and header are plain stores, seen in the order written only where the CPU keeps it (TSO).
_ORDERED_STORES = {"x86_64", "amd64", "i386", "i686"}


class Applied(NamedTuple):
    """One apply: the frames it committed, the page count it left, whether the WAL was emptied after it."""

    frames: int
    page_count: int
    checkpointed: bool


class Standby:
    """A WAL-mode database that walship alone writes, one atomic apply at a time, while others read it.

    One ``Standby`` per database per process, and no other descriptor of the
    database, its ``-wal`` or ``-shm`` may be closed in this process while it
    is open (POSIX locks belong to the process: closing any descriptor drops
    them). ``busy_seconds`` is how long an apply waits for the write lock
    before ``StandbyBusyError``.
    """

    def __init__(self, path: Path, *, busy_seconds: float = 5.0, checkpoint_frames: int = CHECKPOINT_FRAMES) -> None:
        if platform.machine().lower() not in _ORDERED_STORES:
            raise UsageError(
                f"a standby cannot be kept on {platform.machine()} yet (its WAL index writes need x86's store order): "
                "restore without --delta, or follow from an x86-64 host"
            )
        if not path.is_file():
            raise UsageError(f"standby {path} does not exist: restore it first ('walship restore --output {path}')")
        self.path, self._checkpoint_frames = path, checkpoint_frames
        self._busy_ms = int(busy_seconds * 1000)
        self._connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        self._descriptors: list[int] = []
        self._index: WalIndexWriter | None = None
        self._published: IndexHeader | None = None
        try:
            self._connection.set_busy_timeout(self._busy_ms)
            mode = self._connection.execute("PRAGMA journal_mode").fetchall()[0][0]
            if mode != "wal":
                raise UsageError(f"standby {path} is in {mode} journal mode, not WAL: restore it again with walship")
            (page_size,) = self._connection.execute("PRAGMA page_size").fetchall()[0]
            self.page_size = int(str(page_size))
            with self._write_lock():  # opens the -wal and -shm files if they were not there
                for suffix in ("-wal", "-shm"):
                    self._descriptors.append(os.open(f"{path}{suffix}", os.O_RDWR))
                self._wal, shm = self._descriptors
                self._index = WalIndexWriter(shm)
                self._published = self._index.header()
        except apsw.Error as exc:
            self.close()
            raise UsageError(f"standby {path} cannot be opened as a SQLite database ({exc}): check the path") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection first, then the descriptors, so no lock of SQLite's is dropped under it."""
        self._connection.close()
        if self._index is not None:
            self._index.close()
            self._index = None
        for descriptor in self._descriptors:
            os.close(descriptor)
        self._descriptors = []

    def __enter__(self) -> "Standby":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def apply(self, pages: Iterable[tuple[int, bytes]], page_count: int) -> Applied:
        """Make ``pages`` (page number, image) the standby's new state, ``page_count`` pages long, in one step.

        Later images of a page win; pages past ``page_count`` are left out.
        Readers see all of it at once or none of it; a process killed midway
        leaves the state it found (or, once SQLite recovers the WAL with no
        reader left, this one whole).
        """
        index = self._index
        if index is None:
            raise ValueError(f"standby {self.path} is closed")
        with self._write_lock():
            before = index.header()
            self._check_unchanged(before)
            start = self._start_wal(before) if before.max_frame == 0 else self._continued(before)
            numbers, checksum = self._write_frames(start, pages, page_count)
            os.fsync(self._wal)
            after = start.after(len(numbers), page_count, checksum)
            index.publish(start, numbers, after)
            self._published = after
        checkpointed = after.max_frame >= self._checkpoint_frames and self.checkpoint()
        return Applied(len(numbers), page_count, checkpointed)

    @property
    def published(self) -> IndexHeader:
        """The WAL index header as walship last published or found it."""
        assert self._published is not None, "the standby is closed"
        return self._published

    def settle(self, wait_seconds: float) -> bool:
        """Checkpoint until the WAL is empty and the file holds the whole state; False if readers kept it that long."""
        deadline = time.monotonic() + wait_seconds
        while not self.checkpoint():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        assert self._index is not None
        self._published = self._index.header()
        return True

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and empty it; False when a reader still in it kept it for later."""
        self._connection.set_busy_timeout(_CHECKPOINT_WAIT_MS)
        try:
            self._connection.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)
        except apsw.BusyError:
            return False
        finally:
            self._connection.set_busy_timeout(self._busy_ms)
        return True

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except apsw.BusyError as exc:
            raise StandbyBusyError(
                f"standby {self.path}: another connection writes to it (holds its write lock); "
                "applications must open a standby read-only"
            ) from exc
        try:
            yield
        finally:
            # SQLite's own pages did not change: this ends the transaction and releases the lock.
            self._connection.execute("COMMIT")

    def _check_unchanged(self, now: IndexHeader) -> None:
        """Refuse a standby someone else committed to since our last apply (a checkpoint may have emptied the WAL)."""
        ours = self._published
        assert ours is not None
        same = now.change == ours.change and now.page_count == ours.page_count
        if now.max_frame:
            same = same and (now.max_frame, now.salts, now.frame_checksum) == (
                ours.max_frame,
                ours.salts,
                ours.frame_checksum,
            )
        if not same:
            raise StandbyChangedError(
                f"standby {self.path} holds a commit walship did not apply: it no longer follows its replica; "
                "restore it again"
            )

    def _start_wal(self, header: IndexHeader) -> IndexHeader:
        """Begin the WAL anew, with new salts, as SQLite does once every frame was checkpointed."""
        old = os.pread(self._wal, WAL_HEADER_SIZE, 0)
        sequence = (parse_wal_header(old).checkpoint_seq + 1) & 0xFFFFFFFF if _is_wal_header(old) else 0
        salt1 = (int.from_bytes(header.salts[:4], "big") + 1) & 0xFFFFFFFF
        salts = struct.pack(">II", salt1, secrets.randbits(32))
        fields = struct.pack(">4I", WAL_MAGIC[_NATIVE_BIG_ENDIAN], WAL_VERSION, self.page_size, sequence) + salts
        checksum = wal_checksum(fields, 0, 0, _NATIVE_BIG_ENDIAN)
        os.pwrite(self._wal, fields + struct.pack(">II", *checksum), 0)
        return replace(
            header, big_endian=_NATIVE_BIG_ENDIAN, page_size=self.page_size, salts=salts, frame_checksum=checksum
        )

    def _continued(self, header: IndexHeader) -> IndexHeader:
        wal = parse_wal_header(os.pread(self._wal, WAL_HEADER_SIZE, 0))
        if (wal.page_size, struct.pack(">II", wal.salt1, wal.salt2)) != (self.page_size, header.salts):
            raise CorruptObjectError(f"standby {self.path}: its WAL and its WAL index disagree")
        return header

    def _write_frames(
        self, start: IndexHeader, pages: Iterable[tuple[int, bytes]], page_count: int
    ) -> tuple[list[int], tuple[int, int]]:
        """Append a frame per page after ``start.max_frame``, the last one committing; their numbers and checksum."""
        frame_size = FRAME_HEADER_SIZE + self.page_size
        offset = WAL_HEADER_SIZE + start.max_frame * frame_size
        checksum, numbers, batch = start.frame_checksum, [], bytearray()
        held: tuple[int, bytes] | None = None  # the frame that commits is the last, known only at the end

        def write_batch() -> None:
            """Chain the batch's checksums into its frame headers, then write it."""
            nonlocal checksum, offset, batch
            shares = FrameShares(batch, frame_size, start.big_endian)
            for index in range(len(shares)):
                checksum = shares.after(index, checksum)
                _FRAME_CHECKSUM.pack_into(batch, index * frame_size + _FRAME_CHECKSUM_AT, *checksum)
            os.pwrite(self._wal, batch, offset)
            offset, batch = offset + len(batch), bytearray()

        def frame(number: int, image: bytes, commit: int) -> None:
            batch.extend(struct.pack(">II", number, commit) + start.salts + _NO_CHECKSUM_YET + image)
            numbers.append(number)
            if len(batch) >= _WRITE_BYTES or commit:
                write_batch()

        for number, image in pages:
            self._check_page(number, image)
            if number > page_count:
                continue
            if held is not None:
                frame(*held, 0)
            held = (number, image)
        if held is None:
            raise ValueError("an apply needs at least one page within the new page count")
        frame(*held, page_count)
        return numbers, checksum

    def _check_page(self, number: int, image: bytes) -> None:
        if number < 1 or len(image) != self.page_size:
            raise CorruptObjectError(
                f"standby {self.path}: page {number} of {len(image)} bytes, for {self.page_size}-byte pages"
            )
        # Page 1 holds the header: it must keep the standby in WAL mode at its page size.
        size = int.from_bytes(image[16:18], "big")
        if number == 1 and (
            not image.startswith(_MAGIC) or (65536 if size == 1 else size) != self.page_size or image[18:20] != b"\2\2"
        ):
            raise CorruptObjectError(f"standby {self.path}: the new page 1 is not a WAL-mode database header")


def _is_wal_header(data: bytes) -> bool:
    try:
        parse_wal_header(data)
    except CorruptObjectError:
        return False
    return True
