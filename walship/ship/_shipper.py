"""The local half of WAL shipping: hold the database, capture, checkpoint, start generations, snapshot.

It makes no storage request at all; ``walship.upload`` is the remote half.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from walship.errors import ContinuityLostError, SpoolFullError, WalIndexUnsettledError, WritersBusyError
from walship.layout import new_generation, parse_generation
from walship.memory import release_free_memory
from walship.models import SnapshotInfo, WalCursor, WalPosition, utcnow
from walship.ship._guard import Guard, Tender
from walship.ship._identity import DatabaseIdentity
from walship.ship._results import FIRST_CAPTURE, ShipConfig, SyncResult, generation_log_level, merge
from walship.ship._resync import PageTracker, spool_resync
from walship.ship._segment import Captured, NoRoom, TailCopy, TooBig, capture_segment, read_tail, spool_tail
from walship.ship._snapshots import BackgroundSnapshot, SnapshotJob, spool_snapshot
from walship.ship._watch import POLL_SECONDS, has_new_commits, published_end, wait_for_commits
from walship.spool import Spool
from walship.sqlite import WAL_HEADER_SIZE, WalCapture, WalIndexState, check_resume, covered_by, cursor_at_end

__all__ = ["Shipper"]

log = logging.getLogger(__name__)

# How often the pin is tended (and the application's checkpoint waits on us at most).
_POLL = POLL_SECONDS
# The most a checkpoint's last step reads while writers wait; more means they outran the backfill.
_TAIL_LIMIT = 8 << 20
# How long a run's end waits for its last checkpoint's seal (``Guard.seal``), and how often it looks.
_SEAL_WAIT = 0.5
_SEAL_POLL = 0.01


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
        make_room: Callable[[], object] = lambda: None,
    ) -> None:
        """``capture`` and ``guarded`` come from ``walship.handover.hold_database`` (a held, pinned database);
        ``make_room`` may free the spool's disk when it cannot hold a snapshot (``_room_for_a_snapshot``)."""
        self.database = database.resolve()
        self._make_room = make_room
        self.spool = spool
        self.config = config
        self.capture = capture or WalCapture(self.database)
        self.cursor: WalCursor | None = None
        self._guard = Guard(self.capture, guarded=guarded)
        self._last_sync = utcnow()
        self._last_checkpoint = time.monotonic()
        self._last_backfill = -float("inf")  # when a sync last moved the pin and backfilled (``_tend_wal``)
        # The last capture stopped short of the published WAL end (a spool too small for the backlog).
        self._behind = False
        # The last capture found no room in the spool for committed WAL (its disk is full).
        self.out_of_room = False
        self._snapshots = BackgroundSnapshot(
            spool, self.database, database_id=config.database_id, sealing=config.sealing
        )
        self._snapshot_taken: str | None = None  # reported by the next sync
        self._lock = threading.RLock()
        self._seen: WalIndexState | None = None  # the WAL index at the previous tend
        self._backfill_seen: WalIndexState | None = None  # ... and at the previous sync
        self._tender = Tender(self.tend, _POLL, str(self.database))
        self._tended = SyncResult()  # captured by tending since the last sync
        self._pages = PageTracker(spool.root)

    # Opening and ending a run ---------------------------------------------------------

    def open(self) -> SyncResult:
        """Prove the WAL continues the spool's cursor, or start a new generation."""
        with self._lock:
            cursor = self.spool.load_cursor()
            self.spool.discard_uncaptured(cursor)
            self._pages.load(cursor)
            if not self.capture.pinned:
                self._guard.guarded = self.capture.pin_now(covered_by(cursor)) and self._guard.guarded
            try:
                if cursor is None:
                    raise ContinuityLostError(self.spool.no_cursor_reason or FIRST_CAPTURE)
                check_resume(cursor, self.capture, guarded=self._guard.guarded)
                self.cursor = cursor
                # Commits made while no shipper ran belong to the next segment.
                self._last_sync = cursor.moved_at or self._last_sync
            except ContinuityLostError as lost:
                return self._recover(str(lost), cursor)
            self._note_pin()
            return self.sync()

    def finish(self) -> SyncResult:
        """Capture the tail and backfill what readers allow, so that a successor can continue.

        A successor that overlapped this run continues whatever happened; one
        that starts after a gap can prove continuity only from a cursor that
        records a complete checkpoint, hence a last ``_checkpoint`` here, and
        a moment's wait for its seal (``Guard.seal``): under writes, the next
        one restarts the WAL within milliseconds.
        """
        self._snapshots.wait()
        with self._lock:
            result = self.sync()
            if result.new_generation is None and self.cursor is not None and not self.cursor.checkpointed:
                result = merge(result, self._checkpoint())
                self._await_seal()
            self._pages.sync()
            return result

    def _await_seal(self) -> None:
        deadline = time.monotonic() + _SEAL_WAIT
        while self._unsealed() and not self._seal() and time.monotonic() < deadline:
            time.sleep(_SEAL_POLL)
        if self._unsealed():
            log.info(
                "a reader of %s keeps its WAL from restarting: the next run compares pages to continue (a resync)",
                self.database,
            )

    def close(self) -> None:
        self.stop_tending()
        self._snapshots.wait()
        self.capture.close()
        self._pages.close()

    # Holding the WAL -------------------------------------------------------------------

    def start_tending(self) -> None:
        """Keep moving the pin in a thread of its own (``Tender``) until ``stop_tending``."""
        self._tender.start()

    def stop_tending(self) -> None:
        self._tender.stop()

    def tend(self) -> None:
        """``_tend`` between syncs; what it captured is reported with the next sync, so a run's counts add up."""
        result = self._tend()
        if result is not None:  # most tends capture nothing: no merge on the fleet's hot path
            with self._lock:
                self._tended = merge(self._tended, result)

    def _tend(self) -> SyncResult | None:
        """Move the pin when the application may be waiting on it; capture first if it backfilled everything.

        Under load the pin moves with a sync's upkeep (``_tend_wal``, at most
        every ``backfill_seconds``): moving it more often would let SQLite's
        autocheckpoint backfill, and fsync the database, at nearly every
        commit. It moves between syncs when the WAL
        went quiet (its end did not move for a poll: an application's FULL,
        RESTART or TRUNCATE checkpoint holds the write lock while it waits for
        readers), or when the application backfilled every frame: the pin that
        lets the WAL restart is taken then, once every frame is captured.
        """
        with self._lock:
            if self.cursor is None:
                return None
            state = self.capture.wal_index()
            if state is None or state == self.capture.pin:
                return None
            self._seal()  # the WAL restarted after a complete checkpoint: a successor may continue across it
            result: SyncResult | None = None
            if state.complete and not covered_by(self.cursor)(state):
                try:
                    result = self._capture()
                except ContinuityLostError as lost:
                    return self._recover(str(lost), self.cursor)
            elif state != self._seen:
                self._seen = state  # still moving: wait for the next sync, or for it to go quiet
                return result
            self._move_pin()
            return result

    def _move_pin(self, *, save: bool = True) -> None:
        if self.capture.move_pin(covered_by(self.cursor)):
            self._note_pin(save=save)

    def _unsealed(self) -> bool:
        """Everything is backfilled and captured, and only the seal is missing."""
        return self.cursor is not None and not self.cursor.checkpointed and self._guard.sealable(self.cursor)

    def _seal(self) -> bool:
        """Mark the cursor ``checkpointed`` if its WAL can hold nothing after it now (``Guard.seal``)."""
        if (sealed := self._guard.seal(self.cursor)) is None:
            return False
        self.cursor = sealed
        self.spool.save_cursor(sealed)
        return True

    def _note_pin(self, *, save: bool = True) -> None:
        """After a new pin: whether the WAL is guarded, and a complete checkpoint at the cursor recorded.

        ``save=False`` while the cursor is ahead of the spool (a tail copy not yet durable).
        """
        if (checkpointed := self._guard.after_pin(self.cursor)) is not None:
            self.cursor = checkpointed
            if save:
                self.spool.save_cursor(checkpointed)

    # Generations and snapshots ----------------------------------------------------------

    def start_generation(self, reason: str) -> SyncResult:
        """Snapshot the database at an exact WAL point and begin a generation there."""
        with self._lock:
            self._room_for_a_snapshot()
            generation = new_generation(after=self.spool.newest_generation())
            self.spool.begin_generation(generation)
            log.log(generation_log_level(reason), "starting generation %s of %s: %s", generation, self.database, reason)
            self.spool.check_snapshot_room(self.database)
            with self.spool.snapshot_file(self.database) as target, contextlib.ExitStack() as stack:
                target.unlink()
                # Writers wait only while the WAL end is read and the snapshot's
                # read transaction begins: from then on it sees exactly that end.
                # The application's own checkpoint may hold the write lock a moment: ask again, moving the pin.
                with self.capture.writers_paused(attempts=50, between=self._move_pin_to_cursor):
                    cursor = cursor_at_end(self.capture, generation)
                    source_connection = stack.enter_context(self.capture.read_transaction_now())
                    state_at = utcnow()
                    landed = cursor.model_copy(
                        update={"moved_at": state_at, "snapshot_sequence": 0, "snapshot_at": state_at}
                    )
                    self._land(landed)
                source = self.capture.copy_database(source_connection, self.database, target)
                # The map describes the replica: the copy's pages (page 1 may differ from the database's).
                self._pages.begin(generation, source.path, source.page_size, DatabaseIdentity.of(source_connection))
                position = WalPosition(generation=generation, sequence=0)
                spool_snapshot(
                    self.spool,
                    source,
                    position,
                    state_at,
                    database_id=self.config.database_id,
                    sealing=self.config.sealing,
                )
            self._behind = False
            self.spool.save_cursor(landed)
            self._last_sync = state_at
            return SyncResult(new_generation=generation, reason=reason)

    def _move_pin_to_cursor(self) -> None:
        """Between two attempts at pausing writers: an application checkpoint holding the write lock
        may be waiting on our pin."""
        self.capture.move_pin(covered_by(self.cursor))

    def _land(self, cursor: WalCursor) -> None:
        """While writers wait: the cursor moves to the exact point a snapshot or resync holds, and the
        pin with it (nothing is appended meanwhile, so it lands exactly there)."""
        self.cursor = cursor
        self._guard.guarded = self.capture.move_pin(covered_by(cursor))

    def _recover(self, reason: str, cursor: WalCursor | None) -> SyncResult:
        """After continuity was lost: a resync segment when the page digest map says what the replica
        holds at ``cursor``, else a new generation (with both reasons)."""
        with self._lock:
            why_not = self._pages.why_not(cursor, self.capture)
            if why_not is not None or cursor is None:
                return self.start_generation(f"{reason} ({why_not}, so no resync)" if cursor else reason)
            log.warning("resyncing %s in generation %s: %s", self.database, cursor.generation, reason)
            self._room_for_a_snapshot()  # a resync may copy every page
            try:
                done = spool_resync(
                    self.capture,
                    self.spool,
                    self._pages,
                    cursor,
                    reason=reason,
                    sealing=self.config.sealing,
                    between=self._move_pin_to_cursor,
                    at_point=self._land,
                )
            except ContinuityLostError as another:  # the file holds another database now: nothing was spooled
                self.cursor = cursor
                return self.start_generation(f"{reason} ({another}, so no resync)")
            self.cursor = done.cursor
            self._behind = False
            self.spool.save_cursor(self.cursor)
            self._last_sync = done.segment.captured_at
            return SyncResult(segments=1, bytes=done.segment.raw_size, resync=done.summary)

    def _room_for_a_snapshot(self) -> None:
        """Before a new generation or a resync: a spool that cannot hold a snapshot asks ``make_room`` (with
        several replicas, one that is down stops holding entries only it needs); what then still does not fit
        is refused where it is written."""
        try:
            self.spool.check_snapshot_room(self.database)
        except SpoolFullError:
            self._make_room()

    @property
    def snapshot_in_progress(self) -> bool:
        """An in-generation snapshot is being copied, compressed and spooled beside capture."""
        return self._snapshots.copying

    def snapshot_due(self) -> bool:
        """The generation changed since its newest snapshot, that one is old enough, and none is being taken."""
        cursor = self.cursor
        if cursor is None or not self.config.snapshot_seconds or cursor.sequence == cursor.snapshot_sequence:
            return False
        taken = cursor.snapshot_at or parse_generation(cursor.generation)
        old_enough = (utcnow() - taken).total_seconds() >= self.config.snapshot_seconds
        return old_enough and not self._snapshots.busy

    def take_snapshot(
        self, only_for: tuple[str, ...] = (), fixed: Callable[[WalPosition], None] | None = None
    ) -> SyncResult:
        """Begin a snapshot of the database at the cursor, inside the current generation.

        ``only_for``: a bridge for these replicas (locations) alone, which
        missed entries (``walship.acks``); the cursor's snapshot schedule,
        which the others follow, does not count it. ``fixed`` hears the
        position the snapshot holds once it is fixed, before any later
        capture can be spooled.

        Restores then start here instead of replaying the whole generation's
        WAL, and retention can let older WAL go. The tail is captured and the
        copy's read transaction begins inside one writers' pause, so the copy
        holds exactly the state of the last segment; the copy itself runs
        beside capture (``BackgroundSnapshot``). A busy write lock (the
        application checkpointing) or a full spool puts it off.
        """
        if not self._snapshots.check_room():
            return SyncResult()
        with self._lock, contextlib.ExitStack() as stack:
            try:
                with self.capture.writers_paused():
                    tail = self._capture()
                    cursor = self.cursor
                    assert cursor is not None
                    header = self.capture.wal_header()
                    if self._behind or (header is not None and self._published_end() != cursor.offset):
                        # Not everything published is captured (an unsettled
                        # index, a fresh WAL with no commit yet, a backlog): try later.
                        return tail
                    connection = stack.enter_context(self.capture.read_transaction_now())
                    state_at = utcnow()
            except WritersBusyError:
                return SyncResult()
            except ContinuityLostError as lost:
                return self._recover(str(lost), self.cursor)
            done = self._bridge_spooled if only_for else self._snapshot_spooled
            if fixed is not None:
                fixed(cursor.position)  # still under the lock: nothing after it is captured yet
            self._snapshots.start(SnapshotJob(stack.pop_all(), connection, cursor.position, state_at, done, only_for))
            return tail

    def _bridge_spooled(self, info: SnapshotInfo) -> None:
        with self._lock:
            self._snapshot_taken = info.key

    def _snapshot_spooled(self, info: SnapshotInfo) -> None:
        with self._lock:
            cursor = self.cursor
            if cursor is None or cursor.generation != info.generation:
                return  # a new generation began meanwhile; its own snapshot is newer
            self.cursor = cursor.model_copy(update={"snapshot_sequence": info.sequence, "snapshot_at": info.created_at})
            self.spool.save_cursor(self.cursor)
            self._snapshot_taken = info.key

    # Syncing ------------------------------------------------------------------------------

    def sync(self, upload: Callable[[SyncResult], None] | None = None) -> SyncResult:
        """Capture new committed frames, then backfill, restart or snapshot when due (``_upkeep``); with what
        the tending thread captured since the last sync.

        ``upload``, when given, is handed what was captured as soon as it is
        spooled, before the upkeep (and outside the lock: the pin is tended
        meanwhile), and the result holds only what came after: a commit's way
        to storage never waits for a checkpoint. What the upkeep spools (a
        checkpoint's last frames) goes up with the next capture.
        """
        began = time.monotonic()
        with self._lock:
            assert self.cursor is not None, "open() first"
            try:
                result, recovered = self._capture(), False
            except ContinuityLostError as lost:
                result, recovered = self._recover(str(lost), self.cursor), True
        if upload is not None:
            upload(merge(self._take_tended(), result))
            result = SyncResult()
        if not recovered:
            result = merge(result, self._upkeep(began))
        return merge(self._take_tended(), result)

    def _take_tended(self) -> SyncResult:
        with self._lock:
            tended, self._tended = self._tended, SyncResult()
        return tended

    def _upkeep(self, began: float) -> SyncResult:
        """After the capture of a sync that ``began`` (monotonic): the WAL's upkeep when due (``_tend_wal``),
        a snapshot when due. Counted between syncs' starts, which keep to their schedule: a quiet database's
        syncs, ``interval`` apart, each tend the WAL."""
        result = SyncResult()
        with self._lock:
            assert self.cursor is not None
            # The live WAL ends where the index says: after a restart SQLite
            # reuses the file without shrinking it, so its size says nothing.
            live = self._published_end() or self.cursor.offset
            if live > self.config.emergency_wal_bytes:
                return self._emergency_brake()
            if began - self._last_backfill >= self.config.backfill_seconds:
                self._last_backfill = began
                result = self._tend_wal(live)
        if self.snapshot_due():
            result = merge(result, self.take_snapshot())
        with self._lock:
            taken, self._snapshot_taken = self._snapshot_taken, None
        if taken is not None:
            result = merge(result, SyncResult(snapshot=taken))
        if self.spool.pending_bytes() > self.config.spool_cap_bytes:
            log.error(
                "spool %s holds more than %d bytes: storage is not keeping up or is unreachable",
                self.spool.root,
                self.config.spool_cap_bytes,
            )
        return result

    def _tend_wal(self, live: int) -> SyncResult:
        """Move the pin to what was captured and backfill when the WAL is big; restart it when bigger or old.

        Backfilling (PASSIVE, beside the pin) never makes writers wait; a WAL
        restart needs every frame backfilled at once, which under steady
        writes takes a moment's pause of writers (``_checkpoint``): only past
        ``restart_pages`` or ``checkpoint_seconds``, so writers rarely feel it.
        Each pin move lets SQLite's autocheckpoint backfill and fsync the
        database inside the next writer's commit, so under steady writes this
        runs at most every ``backfill_seconds``, however often syncs capture.
        """
        assert self.cursor is not None
        page = max(self.cursor.page_size, 512)
        app_backfilled = self._app_backfills()
        aged = live > WAL_HEADER_SIZE and time.monotonic() - self._last_checkpoint > self.config.checkpoint_seconds
        if self._unsealed():
            self._seal()  # all backfilled and captured: only the restart is awaited
            return SyncResult()
        if not self.cursor.checkpointed and (aged or live > self.config.restart_pages * page):
            return self._checkpoint()
        self._move_pin()  # to what was just captured: backfill may go that far
        if not self.cursor.checkpointed and live > self.config.checkpoint_pages * page and not app_backfilled:
            # Beside the pin, writers go on; if it all got in, the next tend lets the WAL restart.
            self.capture.checkpoint_passive()
        return SyncResult()

    def _app_backfills(self) -> bool:
        """Whether the application's own checkpoints backfilled since the last sync (then ours would only
        add database fsyncs beside theirs)."""
        state = self.capture.wal_index()
        previous, self._backfill_seen = self._backfill_seen, state
        if state is None or previous is None or (state.salt1, state.salt2) != (previous.salt1, previous.salt2):
            return False
        return state.backfilled > previous.backfilled

    def _checkpoint(self) -> SyncResult:
        """Backfill the WAL and let it restart, pausing writers only for the last few frames.

        The bulk is backfilled beside the pin (PASSIVE, writers go on). Then,
        for a moment, writers wait while the few frames they added meanwhile
        are captured and backfilled, so the whole WAL is in the database file
        and captured; the pin that lets the WAL restart is taken, and the next
        writer restarts it. A busy write lock (the application checkpointing)
        leaves it to the next sync.
        """
        self._move_pin()
        self.capture.checkpoint_passive()
        self._last_checkpoint = time.monotonic()
        cursor = self.cursor
        assert cursor is not None
        tail: TailCopy | TooBig | None = None
        complete = False
        try:
            with self.capture.writers_paused():
                tail = read_tail(
                    self.capture,
                    cursor,
                    guarded=self._guard.guarded,
                    committed_after=self._last_sync,
                    limit=_TAIL_LIMIT,
                )
                if not isinstance(tail, TooBig):
                    # Captured in memory: the pin that lets the WAL restart may be taken at its end.
                    self.cursor = tail.cursor if tail is not None else cursor
                    self._move_pin(save=False)
                    complete = self.capture.checkpoint_passive()
                    if complete:
                        self._move_pin(save=False)
        except WritersBusyError:
            return SyncResult()
        except ContinuityLostError as lost:
            return self._recover(str(lost), self.cursor)
        if isinstance(tail, TooBig):
            return SyncResult()  # writers outran the backfill; the next sync tries again
        if complete and (sealed := self._guard.seal(self.cursor)) is not None:
            self.cursor = sealed  # saved with the tail
        return merge(self._spool_tail(tail), SyncResult(checkpointed=complete))

    def _spool_tail(self, tail: TailCopy | None) -> SyncResult:
        """Make the pause's tail copy durable, then the cursor that covers it."""
        if tail is not None:
            self._pages.captured(tail.segment.sequence, spool_tail(self.spool, tail, self.config.sealing))
            self._last_sync = tail.segment.captured_at
        assert self.cursor is not None
        self.spool.save_cursor(self.cursor)
        if tail is None:
            return SyncResult()
        segment = tail.segment
        return SyncResult(segments=1, frames=segment.frames, commits=segment.commits, bytes=segment.raw_size)

    def _emergency_brake(self) -> SyncResult:
        """DESIGN: TRUNCATE is the brake for a runaway WAL, and always followed by a new snapshot."""
        result = self._checkpoint()
        self.capture.truncate_if_free()
        return merge(result, self.start_generation(f"the WAL passed {self.config.emergency_wal_bytes} bytes"))

    def _published_end(self) -> int | None:
        return published_end(self.capture)

    def published_end(self) -> tuple[int, int, int] | None:
        """The WAL's salts and the offset after its last published commit now (None without a WAL)."""
        with self._lock:
            header, end = self.capture.wal_header(), self._published_end()
            return None if header is None or end is None else (header.salt1, header.salt2, end)

    def captured_to(self, end: tuple[int, int, int]) -> bool:
        """Whether the cursor holds every commit up to ``end`` (from ``published_end``).

        A cursor in a later WAL does (a restart needs every frame of the one
        before captured); in an earlier one it does not. Salt-1 grows by one
        per restart.
        """
        with self._lock:
            cursor = self.cursor
            if cursor is None:
                return False
            if (cursor.salt1, cursor.salt2) == end[:2]:
                return cursor.offset >= end[2]
            return 0 < (cursor.salt1 - end[0]) & 0xFFFFFFFF < 0x80000000

    @property
    def behind(self) -> bool:
        """The last capture stopped short of the committed WAL (a spool smaller than the backlog)."""
        return self._behind

    def has_new_commits(self) -> bool:
        """Whether the WAL index published commits beyond the cursor (reads two local files)."""
        assert self.cursor is not None
        return has_new_commits(self.capture, self.cursor)

    def wait_for_commits(
        self, interval: float, deadline: float, stop: threading.Event | None = None, *, since: float | None = None
    ) -> None:
        """Sleep until the next sync is due: new commits once ``config.coalesce_seconds`` passed since the
        sync that began at ``since`` (monotonic; default now), or ``interval`` (``walship.ship._watch``).

        First the sync's freed buffers go back to the OS: glibc would keep them
        (``walship.memory.release_free_memory``).
        """
        release_free_memory()
        since = time.monotonic() if since is None else since
        window, cursor = self.config.coalesce_seconds, lambda: self.cursor
        wait_for_commits(
            self.capture, cursor, since=since, window=window, interval=interval, deadline=deadline, stop=stop
        )

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
            result = merge(result, piece)
            if not (piece.segments and self._behind and not budget.by_free_space):
                return result

    def _capture_piece(self, max_bytes: int) -> SyncResult:
        self._behind = False
        cursor = self.cursor
        assert cursor is not None, "open() first"
        try:
            captured = capture_segment(
                self.capture,
                self.spool,
                cursor,
                guarded=self._guard.guarded,
                committed_after=self._last_sync,
                max_bytes=max_bytes,
                sealing=self.config.sealing,
            )
        except WalIndexUnsettledError as exc:
            log.warning("%s", exc)
            return SyncResult()
        if isinstance(captured, NoRoom):
            self._behind = self.out_of_room = True
            return SyncResult()
        if not isinstance(captured, Captured):
            return SyncResult()
        self.out_of_room = False
        self._pages.captured(captured.segment.sequence, captured.pages)
        self.cursor = captured.cursor
        self.spool.save_cursor(self.cursor)
        self._behind = captured.budget_reached
        if not self._behind:
            # Every commit of the next segment comes after this one's capture.
            self._last_sync = captured.segment.captured_at
        # The cursor moved into this WAL: the pin guards it if it reads this WAL, or lets it restart only here.
        self._note_pin()
        segment = captured.segment
        return SyncResult(segments=1, frames=segment.frames, commits=segment.commits, bytes=segment.raw_size)
