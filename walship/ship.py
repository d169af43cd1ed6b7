"""WAL shipping: capture committed frames into the spool, upload them in order.

``Shipper`` is the local half: it holds the database (``WalCapture``) and the
spool, proves continuity, starts generations, captures, checkpoints and
snapshots. It makes no storage request at all; ``walship.upload`` is the
remote half.
"""

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, Field

from walship import codec
from walship.errors import (
    ContinuityLostError,
    CorruptObjectError,
    SpoolFullError,
    WalIndexUnsettledError,
    WritersBusyError,
)
from walship.layout import format_segment_key, new_generation, parse_generation
from walship.models import SegmentInfo, SnapshotInfo, SnapshotSource, WalCursor, WalPosition, utcnow
from walship.snapshot import describe_new_snapshot
from walship.spool import Spool, new_entry
from walship.sqlite import (
    WAL_HEADER_SIZE,
    WalCapture,
    captured_frames,
    check_resume,
    covered_by,
    cursor_at,
    may_follow_restart,
)

__all__ = ["ShipConfig", "Shipper", "SyncResult"]

log = logging.getLogger(__name__)


# How often the WAL index is polled between syncs, and the time kept for the
# upload after a capture (measured p99 about 0.1 s for a segment, bench/).
_POLL = 0.05
_UPLOAD_BUDGET = 0.3
# How long an in-generation snapshot waits after the spool had no room for it.
_SNAPSHOT_RETRY = 60.0


class ShipConfig(BaseModel):
    """Thresholds of the shipper; defaults follow DESIGN.md."""

    database_id: str
    level: int = Field(default=codec.DEFAULT_LEVEL, ge=codec.MIN_LEVEL, le=codec.MAX_LEVEL)
    checkpoint_pages: int = Field(default=1000, ge=1, description="PASSIVE checkpoint past this many WAL pages")
    checkpoint_seconds: float = Field(default=60.0, gt=0, description="...or when the WAL is older than this")
    emergency_wal_bytes: int = Field(default=512 << 20, description="TRUNCATE + new generation past this WAL size")
    spool_cap_bytes: int = Field(default=1 << 30, description="warn loudly when the spool holds more")
    snapshot_seconds: float = Field(
        default=3600.0, ge=0, description="snapshot within the generation this often when it changed (0: never)"
    )


class SyncResult(BaseModel):
    """What one sync captured (nothing was uploaded)."""

    segments: int = 0
    frames: int = 0
    commits: int = 0
    bytes: int = 0
    checkpointed: bool = False
    new_generation: str | None = None
    reason: str | None = None
    snapshot: str | None = None  # key of a snapshot taken within the generation


class Shipper:
    """The local half of WAL shipping for one database.

    Every method that reads or moves the cursor holds ``_lock``: the tending
    thread (``start_tending``) moves the pin and captures beside the flow's
    loop, which uploads and snapshots.
    """

    def __init__(
        self,
        database: Path,
        spool: Spool,
        config: ShipConfig,
        *,
        capture: WalCapture | None = None,
        guarded: bool = False,
    ) -> None:
        """``capture`` and ``guarded`` come from ``walship.handover.hold_database`` (a held, pinned database)."""
        self.database = database.resolve()
        self.spool = spool
        self.config = config
        self.capture = capture or WalCapture(self.database)
        self.cursor: WalCursor | None = None
        # Whether, since the cursor's point, every pin held let the WAL restart
        # only over captured frames: then any restart continues the lineage.
        self._guarded = guarded
        self._last_sync = utcnow()
        self._last_checkpoint = time.monotonic()
        # The last capture stopped short of the published WAL end (a spool too small for the backlog).
        self._behind = False
        self._snapshot_retry_at = 0.0
        self._lock = threading.RLock()
        self._tending: threading.Thread | None = None
        self._stop_tending = threading.Event()

    # Opening and ending a run ---------------------------------------------------------

    def open(self) -> SyncResult:
        """Prove the WAL continues the spool's cursor, or start a new generation."""
        with self._lock:
            cursor = self.spool.load_cursor()
            self.spool.discard_uncaptured(cursor)
            if not self.capture.pinned:
                self._guarded = self.capture.pin_now(covered_by(cursor)) and self._guarded
            try:
                if cursor is None:
                    raise ContinuityLostError("no earlier capture of this database")
                check_resume(cursor, self.capture, guarded=self._guarded)
                self.cursor = cursor
                # Commits made while no shipper ran belong to the next segment.
                self._last_sync = cursor.moved_at or self._last_sync
            except ContinuityLostError as lost:
                return self.start_generation(str(lost))
            self._note_pin()
            return self.sync()

    def finish(self) -> SyncResult:
        """Capture the tail and backfill what readers allow, so that a successor can continue.

        A successor that overlapped this run continues whatever happened; one
        that starts after a gap can prove continuity only from a cursor that
        records a complete checkpoint, hence the last PASSIVE one here.
        """
        with self._lock:
            result = self.sync()
            if result.new_generation is None:
                self.capture.move_pin(covered_by(self.cursor))
                result = _merge(result, SyncResult(checkpointed=self.capture.checkpoint_passive()))
                result = _merge(result, self.tend())
            return result

    def close(self) -> None:
        self.stop_tending()
        self.capture.close()

    # Holding the WAL -------------------------------------------------------------------

    def start_tending(self, poll: float = _POLL) -> None:
        """Move the pin every ``poll`` seconds in a thread of its own, whatever the caller's loop is doing.

        An application's FULL, RESTART or TRUNCATE checkpoint waits for our
        pin to move; uploads and snapshots must not make it wait longer.
        """
        self._stop_tending.clear()
        self._tending = threading.Thread(target=self._tend_loop, args=(poll,), name="walship-pin", daemon=True)
        self._tending.start()

    def stop_tending(self) -> None:
        self._stop_tending.set()
        if self._tending is not None:
            self._tending.join(timeout=30)
            self._tending = None

    def _tend_loop(self, poll: float) -> None:
        while not self._stop_tending.wait(poll):
            try:
                self.tend()
            except Exception:
                # The loop's own sync reports the same problem with context; the pin just stays.
                log.debug("tending the pin of %s failed", self.database, exc_info=True)

    def tend(self) -> SyncResult:
        """Move the pin to the WAL's end when the WAL changed; capture first if it was all backfilled.

        A WAL whose frames are all in the database file may restart at the
        next write. The pin that allows that is taken only once every frame
        is captured; a capture here (rather than at the next sync) is what lets
        an application's RESTART or TRUNCATE checkpoint complete within a poll.
        """
        with self._lock:
            if self.cursor is None:
                return SyncResult()
            state = self.capture.wal_index()
            if state is None or state == self.capture.pin:
                return SyncResult()
            result = SyncResult()
            if state.complete and not covered_by(self.cursor)(state):
                try:
                    result = self._capture()
                except ContinuityLostError as lost:
                    return self.start_generation(str(lost))
            if self.capture.move_pin(covered_by(self.cursor)):
                self._note_pin()
            return result

    def _note_pin(self) -> None:
        """After a new pin: record a complete checkpoint at the cursor, and whether the WAL is guarded."""
        cursor, pin = self.cursor, self.capture.pin
        if cursor is None or pin is None:
            return
        if not self.capture.pin_lets_restart or covered_by(cursor)(pin):
            # A restart from here on loses nothing; one before is judged by the next capture.
            same_wal = (pin.salt1, pin.salt2) == (cursor.salt1, cursor.salt2)
            self._guarded = self._guarded or same_wal
        else:
            self._guarded = False
        if (
            self.capture.pin_lets_restart
            and pin.max_frame
            and captured_frames(cursor) == pin.max_frame
            and (pin.salt1, pin.salt2) == (cursor.salt1, cursor.salt2)
            and not cursor.checkpointed
        ):
            self.cursor = cursor.model_copy(update={"checkpointed": True, "db_mtime_ns": self.capture.db_mtime_ns})
            self.spool.save_cursor(self.cursor)

    # Generations and snapshots ----------------------------------------------------------

    def start_generation(self, reason: str) -> SyncResult:
        """Snapshot the database at an exact WAL point and begin a generation there."""
        with self._lock:
            generation = new_generation()
            log.warning("starting generation %s of %s: %s", generation, self.database, reason)
            self.spool.check_snapshot_room(self.database)
            with self.spool.snapshot_file(self.database) as target, contextlib.ExitStack() as stack:
                target.unlink()
                # Writers wait only while the WAL end is read and the snapshot's
                # read transaction begins: from then on it sees exactly that end.
                with self._writers_paused_patiently():
                    header = self.capture.wal_header()
                    scan = self.capture.scan(WAL_HEADER_SIZE, None) if header is not None else None
                    source_connection = stack.enter_context(self.capture.read_transaction_now())
                    state_at = utcnow()
                    inode = self.capture.db_inode
                    if header is None or scan is None:
                        # No WAL: the snapshot holds everything, and any WAL that appears continues it.
                        cursor = WalCursor(
                            generation=generation,
                            sequence=0,
                            offset=WAL_HEADER_SIZE,
                            checkpointed=True,
                            db_inode=inode,
                            db_mtime_ns=self.capture.db_mtime_ns,
                        )
                    else:
                        cursor = cursor_at(generation, 0, header, scan, inode)
                    self.cursor = cursor.model_copy(
                        update={"moved_at": state_at, "snapshot_sequence": 0, "snapshot_at": state_at}
                    )
                    # Nothing is appended while writers wait: the pin lands exactly on the cursor.
                    self._guarded = self.capture.move_pin(covered_by(self.cursor))
                source = self.capture.copy_database(source_connection, self.database, target)
                self._spool_snapshot(source, WalPosition(generation=generation, sequence=0), state_at)
            self._behind = False
            self.spool.save_cursor(self.cursor)
            self._last_sync = state_at
            return SyncResult(new_generation=generation, reason=reason)

    @contextlib.contextmanager
    def _writers_paused_patiently(self, attempts: int = 50) -> Iterator[None]:
        """The writers' pause, asked for again while the application's own checkpoint holds the write lock.

        Between attempts the pin moves, so that checkpoint can complete.
        """
        for attempt in range(attempts):
            try:
                self.capture.pause_writers()
                break
            except WritersBusyError:
                if attempt == attempts - 1:
                    raise
                self.capture.move_pin(covered_by(self.cursor))
                time.sleep(_POLL)
        try:
            yield
        finally:
            self.capture.resume_writers()

    def snapshot_due(self) -> bool:
        """The generation changed since its newest snapshot, and that snapshot is old enough."""
        cursor = self.cursor
        if cursor is None or not self.config.snapshot_seconds or cursor.sequence == cursor.snapshot_sequence:
            return False
        taken = cursor.snapshot_at or parse_generation(cursor.generation)
        return (utcnow() - taken).total_seconds() >= self.config.snapshot_seconds

    def take_snapshot(self) -> SyncResult:
        """Snapshot the database at the cursor, inside the current generation.

        Restores then start here instead of replaying the whole generation's
        WAL, and retention can let older WAL go. The tail is captured and the
        copy's read transaction begins inside one writers' pause, so the copy
        holds exactly the state of the last segment. A busy write lock (the
        application checkpointing) puts it off to the next sync.
        """
        if time.monotonic() < self._snapshot_retry_at:
            return SyncResult()
        try:
            self.spool.check_snapshot_room(self.database)
        except SpoolFullError as full:
            # Shipping WAL goes on without this snapshot; it is tried again later.
            log.warning("snapshot of %s put off for %.0f s: %s", self.database, _SNAPSHOT_RETRY, full)
            self._snapshot_retry_at = time.monotonic() + _SNAPSHOT_RETRY
            return SyncResult()
        with self.spool.snapshot_file(self.database) as target:
            target.unlink()
            return self._snapshot_into(target)

    def _snapshot_into(self, target: Path) -> SyncResult:
        try:
            with self._lock, contextlib.ExitStack() as stack:
                with self.capture.writers_paused():
                    tail = self._capture()
                    cursor = self.cursor
                    assert cursor is not None
                    header = self.capture.wal_header()
                    if header is not None and self._published_end() != cursor.offset:
                        # Not everything published is captured (an unsettled
                        # index, a fresh WAL with no commit yet, a backlog): try later.
                        return tail
                    source_connection = stack.enter_context(self.capture.read_transaction_now())
                    state_at = utcnow()
                source = self.capture.copy_database(source_connection, self.database, target)
        except WritersBusyError:
            return SyncResult()
        except ContinuityLostError as lost:
            return self.start_generation(str(lost))
        info = self._spool_snapshot(source, cursor.position, state_at)
        with self._lock:
            assert self.cursor is not None
            self.cursor = self.cursor.model_copy(update={"snapshot_sequence": cursor.sequence, "snapshot_at": state_at})
            self.spool.save_cursor(self.cursor)
        return tail.model_copy(update={"snapshot": info.key})

    def _spool_snapshot(self, source: SnapshotSource, position: WalPosition, state_at: datetime) -> SnapshotInfo:
        """Compress a copy that holds exactly ``position`` and spool it for upload."""
        with self.spool.writing(".zst", what=f"compressing a snapshot of {self.database}", needed=source.size) as zst:
            compressed = codec.compress_file(source.path, zst, self.config.level)
            source.path.unlink()
            info = describe_new_snapshot(
                source,
                compressed,
                database_id=self.config.database_id,
                generation=position.generation,
                position=position,
                state_at=state_at,
            )
            self.spool.add(new_entry(info), compressed.path)
        return info

    # Syncing ------------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Capture new committed frames; checkpoint (PASSIVE, beside the pin) when the WAL is big or old."""
        with self._lock:
            assert self.cursor is not None, "open() first"
            try:
                result = self._capture()
            except ContinuityLostError as lost:
                return self.start_generation(str(lost))
            # The live WAL ends where the index says: after a restart SQLite
            # reuses the file without shrinking it, so its size says nothing.
            live = self._published_end() or self.cursor.offset
            if live > self.config.emergency_wal_bytes:
                return _merge(result, self._emergency_brake())
            due = live > self.config.checkpoint_pages * max(self.cursor.page_size, 512) or (
                live > WAL_HEADER_SIZE and time.monotonic() - self._last_checkpoint > self.config.checkpoint_seconds
            )
            if due and not self.cursor.checkpointed:
                result = _merge(result, self._checkpoint())
        if self.snapshot_due():
            result = _merge(result, self.take_snapshot())
        if self.spool.pending_bytes() > self.config.spool_cap_bytes:
            log.error(
                "spool %s holds more than %d bytes: storage is not keeping up or is unreachable",
                self.spool.root,
                self.config.spool_cap_bytes,
            )
        return result

    def _checkpoint(self) -> SyncResult:
        """Backfill everything captured, without pausing writers: pin at the end, PASSIVE, pin again.

        Once the whole WAL is in the database file and captured, the pin that
        lets the WAL restart is taken, and the next writer restarts it.
        """
        self.capture.move_pin(covered_by(self.cursor))
        complete = self.capture.checkpoint_passive()
        self._last_checkpoint = time.monotonic()
        return _merge(SyncResult(checkpointed=complete), self.tend())

    def _emergency_brake(self) -> SyncResult:
        """DESIGN: TRUNCATE is the brake for a runaway WAL, and always followed by a new snapshot."""
        result = self._checkpoint()
        self.capture.truncate_if_free()
        return _merge(result, self.start_generation(f"the WAL passed {self.config.emergency_wal_bytes} bytes"))

    def _published_end(self) -> int | None:
        """Where the WAL index says the committed WAL ends now (None if unknown)."""
        try:
            header = self.capture.wal_header()
            return self.capture.published_end(header) if header is not None else None
        except (WalIndexUnsettledError, CorruptObjectError, FileNotFoundError):
            return None

    def has_new_commits(self) -> bool:
        """Whether the WAL index published commits beyond the cursor (reads two local files)."""
        cursor = self.cursor
        assert cursor is not None
        header = self.capture.wal_header()
        if header is None:
            return False
        if (header.salt1, header.salt2) != (cursor.salt1, cursor.salt2):
            return True
        end = self._published_end()
        return end is not None and end > cursor.offset

    def wait_for_commits(self, interval: float, deadline: float, stop: threading.Event | None = None) -> None:
        """Sleep until the next sync is due, polling the WAL index (no storage request).

        A sync is due ``interval`` after the previous one, or sooner: once new
        commits have waited ``interval`` minus the time an upload takes, so a
        commit is durable in storage within about ``interval`` of being made.
        """
        budget = min(_UPLOAD_BUDGET, interval / 3)
        started = time.monotonic()
        noticed: float | None = None
        while (now := time.monotonic()) < deadline and now - started < interval:
            if stop is not None and stop.is_set():
                return
            if noticed is None and self.has_new_commits():
                noticed = now
            if noticed is not None and now - noticed >= interval - budget - _POLL:
                return
            time.sleep(min(_POLL, max(0.0, deadline - now)))

    def _capture(self) -> SyncResult:
        """Capture the committed tail, in segments no bigger than the spool's budget.

        With room to spare, pieces of ``SEGMENT_CAP_BYTES`` follow each other
        until the tail is captured. When free space sets the budget, one piece
        is captured and the rest waits (``_behind``) for the uploads to free
        space: a backlog bigger than the spool drains through it. Frames left
        behind stay safe: no pin that lets the WAL restart is taken before
        they are captured (``covered_by``).
        """
        result = SyncResult()
        while True:
            budget = self.spool.segment_budget()
            piece = self._capture_piece(budget.bytes)
            result = _merge(result, piece)
            if not (piece.segments and self._behind and not budget.by_free_space):
                return result

    def _capture_piece(self, max_bytes: int) -> SyncResult:
        self._behind = False
        cursor = self.cursor
        assert cursor is not None, "open() first"
        header = self.capture.wal_header()
        if header is None:
            return SyncResult()
        restarted = (header.salt1, header.salt2) != (cursor.salt1, cursor.salt2)
        if restarted:
            if not may_follow_restart(cursor, header, guarded=self._guarded):
                raise ContinuityLostError("the WAL was reset by someone else")
            start, seed = WAL_HEADER_SIZE, None
        else:
            start, seed = cursor.offset, (cursor.checksum1, cursor.checksum2)
            if start == WAL_HEADER_SIZE:
                seed = None
        try:
            scan = self.capture.scan(start, seed, max_bytes=max_bytes)
        except WalIndexUnsettledError as exc:
            log.warning("%s", exc)
            return SyncResult()
        if scan.commits == 0 or (scan.header.salt1, scan.header.salt2) != (header.salt1, header.salt2):
            return SyncResult()
        size = scan.last_commit_offset - start
        if not self.spool.room_for_segment(size):
            self._behind = True
            return SyncResult()
        now = utcnow()
        with self.spool.writing(".wal", what=f"a WAL segment of {self.database}", needed=size) as data:
            with data.open("wb") as out:
                hashing = _HashingWriter(out)
                self.capture.copy_range(start, scan.last_commit_offset, hashing.write)
                out.flush()
                os.fsync(out.fileno())
            start_checksum = (header.checksum1, header.checksum2) if seed is None else seed
            info = SegmentInfo(
                key=format_segment_key(cursor.generation, cursor.sequence + 1),
                generation=cursor.generation,
                sequence=cursor.sequence + 1,
                salt1=header.salt1,
                salt2=header.salt2,
                big_endian=header.big_endian,
                page_size=header.page_size,
                start_offset=start,
                end_offset=scan.last_commit_offset,
                checksum_start1=start_checksum[0],
                checksum_start2=start_checksum[1],
                checksum_end1=scan.last_commit_checksum[0],
                checksum_end2=scan.last_commit_checksum[1],
                frames=scan.frames_committed,
                commits=scan.commits,
                db_size_pages=scan.db_size_pages or 0,
                wal_restarted=restarted,
                committed_after=self._last_sync,
                captured_at=now,
                raw_size=hashing.count,
                sha256=hashing.digest.hexdigest(),
            )
            self.spool.add(new_entry(info), data)
        self.cursor = cursor_at(cursor.generation, info.sequence, header, scan, cursor.db_inode).model_copy(
            update={"moved_at": now, "snapshot_sequence": cursor.snapshot_sequence, "snapshot_at": cursor.snapshot_at}
        )
        self.spool.save_cursor(self.cursor)
        self._behind = scan.budget_reached
        if not self._behind:
            # Every commit of the next segment comes after this one's capture.
            self._last_sync = now
        # The cursor moved into this WAL: the pin guards it if it reads this WAL, or lets it restart only here.
        self._note_pin()
        return SyncResult(segments=1, frames=scan.frames_committed, commits=scan.commits, bytes=hashing.count)


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return self._raw.write(data)


def _merge(a: SyncResult, b: SyncResult) -> SyncResult:
    return SyncResult(
        segments=a.segments + b.segments,
        frames=a.frames + b.frames,
        commits=a.commits + b.commits,
        bytes=a.bytes + b.bytes,
        checkpointed=a.checkpointed or b.checkpointed,
        new_generation=b.new_generation or a.new_generation,
        reason=b.reason or a.reason,
        snapshot=b.snapshot or a.snapshot,
    )
