"""One process ships a fleet: a ``ShippingRun`` per written database, their syncs scheduled from one thread.

Each database keeps everything a single shipper guarantees (its spool, lock,
lease, generations and hand-over) because it *is* a ``ShippingRun``, driven
step by step (``begin``, ``step``, ``end``). What changes is who decides
when: instead of a thread per database polling its WAL index every 50 ms,
one scheduler keeps a heap of next looks. A database that took writes
lately is hot: its WAL index is read (and its pin tended) every ``poll``.

An idle database is *parked*: its run ended as a window's end does (every
commit captured and uploaded, the lease let go) and it holds no connection
and no descriptor; the kernel says when its files change (``ChangeWatch``),
else it is looked at through two ``stat`` calls (``Activity``) backing off
to ``idle_poll``, and a change wakes it: a new
run begins, which captures what was committed meanwhile (or resyncs, when
the application reset the WAL while nobody held it). The stat signature
taken before a run's final capture is recorded in its spool (``CAUGHT_UP``),
so the next window leaves a database that has not changed since closed.
How many databases are held at once is bounded by the open-files limit
(``open_file_budget``). Syncs, uploads, wakes and parks run on a few worker
threads, so a slow upload never delays another database's look.

A failure is the database's own: its row says why and the others go on.
"""

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from walship.errors import ShipperRunningError, UsageError
from walship.fleet._activity import Activity, Signature
from walship.fleet._budget import budget_warning, open_file_budget
from walship.fleet._changes import WATCHED_POLL, ChangeWatch
from walship.fleet._member import (
    FleetEvent,
    Member,
    MemberRun,
    Notify,
    RowObserver,
    Totals,
    caught_up_record,
    forget_caught_up,
    holding_on,
    read_caught_up,
    unfinished_replicas,
)
from walship.fleet._memory import lean_sqlite
from walship.fleet._plan import FleetMember
from walship.fleet._rows import FleetReport, FleetRow, RowState
from walship.fleet._stores import SharedStores
from walship.ship import ShipConfig, ShipSteps, budget_window, sync_due
from walship.sqlite import check_database

log = logging.getLogger(__name__)

__all__ = ["PARK_AFTER", "FleetShipping"]

# A database stays hot this long after its last sign of writes.
_HOT_SECONDS = 5.0
# A held database with no change for this long is parked (sooner when others wait to be opened).
PARK_AFTER = 30.0
_PARK_UNDER_PRESSURE = 1.0
# Parked again this soon when its end itself changed the files (its checkpoint); past the recent-change window.
_PARK_AGAIN = 3.0


class FleetShipping:
    """Ships ``members`` for one window; ``rows`` fill as it goes."""

    def __init__(
        self,
        members: list[FleetMember],
        config_for: Callable[[FleetMember], ShipConfig],
        steps: ShipSteps,
        *,
        stores: SharedStores,
        interval: float = 1.0,
        coalesce: float = 0.0,
        notify: Notify | None = None,
        workers: int = 4,
        poll: float = 0.05,
        idle_poll: float = 1.0,
        idle_sync: float = 30.0,
        park_after: float = PARK_AFTER,
        watched_poll: float = WATCHED_POLL,
        watch_changes: bool = True,
        handover_wait: float = 0.0,
        open_files: int | None = None,
    ) -> None:
        """``coalesce``: a written database's window (``sync_due``; 0: ``budget_window(interval)``);
        ``handover_wait``: how long each database waits for a running shipper of it (the previous window);
        ``open_files``: the limit to budget for (default: this process's, raised to its hard limit);
        ``watched_poll``: how often a parked database is looked at all the same when the kernel tells of changes
        to its files (``ChangeWatch``; ``watch_changes=False``: never), against ``idle_poll`` when it does not."""
        self.handover_wait = handover_wait
        self.interval, self.poll, self.idle_poll, self.idle_sync = interval, poll, idle_poll, idle_sync
        self.park_after, self.watched_poll, self.watch_changes = park_after, watched_poll, watch_changes
        # Hot databases share one process's CPU: by default each keeps its lag near ``interval``, not lower.
        self.window = coalesce or budget_window(interval)
        self._config_for, self._steps, self._stores = config_for, steps, stores
        self._notify = notify or (lambda event: None)
        self._members = [Member.of(m) for m in members]
        self._workers = workers
        self._open_files = open_files
        self._stop = threading.Event()
        self._nudge = threading.Event()  # the scheduler looks again now: a stop, or files changed
        self._held = 0  # databases held or being opened (the budget's count)
        self._held_lock = threading.Lock()
        self._budget = 0
        self._warned = False

    @property
    def rows(self) -> list[FleetRow]:
        return [m.row for m in self._members]

    def stop(self) -> None:
        """End the window early, as if its time were up: every database's final capture and drain still run."""
        self._stop.set()
        self._nudge.set()

    def run(self, *, duration: float, once: bool = False) -> FleetReport:
        started = time.monotonic()
        deadline = started + duration
        lean_sqlite()
        self._budget = open_file_budget(self._workers, self._open_files)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="walship-fleet") as pool:
            caught_up = list(pool.map(self._caught_up, self._members))
            waiting = [m for m, idle in zip(self._members, caught_up, strict=True) if not idle]
            if once:
                list(pool.map(self._once, waiting))
            else:
                self._window(pool, deadline)
                # Closed databases written since their last look still get their commits captured.
                list(pool.map(self._once, [m for m in self._members if m.run is None and self._changed(m)]))
            list(pool.map(self._end, [m for m in self._members if self._live(m)]))
        for member in self._members:
            if member.row.state == RowState.PARKED:
                member.row.state = RowState.DONE
        return FleetReport(rows=self.rows, seconds=time.monotonic() - started)

    # The scheduler -------------------------------------------------------------------------

    def _window(self, pool: ThreadPoolExecutor, deadline: float) -> None:
        watch = ChangeWatch([m.activity.database for m in self._members], self._nudge)
        if self.watch_changes:
            watch.start()
        for member, watched in zip(self._members, watch.watched, strict=True):
            member.watched = watched
        try:
            self._schedule(pool, deadline, watch)
        finally:
            watch.close()
        # Wait for the syncs in flight, so that the final ones start from a settled run.
        while any(m.busy for m in self._members):
            time.sleep(self.poll)

    def _schedule(self, pool: ThreadPoolExecutor, deadline: float, watch: ChangeWatch) -> None:
        """Each member's looks, from a heap of (due, index); an entry whose time is no longer its member's
        ``due`` was overtaken by a change the watch told of."""
        now = time.monotonic()
        # Spread the first looks over one idle poll, so that a thousand databases do not stat at once.
        spread = self.idle_poll / max(len(self._members), 1)
        heap = []
        for i, member in enumerate(self._members):
            if not member.done:
                member.due = now + i * spread
                heap.append((member.due, i))
        heapq.heapify(heap)
        while heap and not self._stop.is_set() and (now := time.monotonic()) < deadline:
            for i in watch.take():
                member = self._members[i]
                member.watched = watch.watched[i]  # False once its directory went: no more events
                if not member.done and member.due > now + self.poll:
                    member.due = now
                    heapq.heappush(heap, (now, i))
            while heap and heap[0][0] <= now:
                due, i = heapq.heappop(heap)
                member = self._members[i]
                if due != member.due:
                    continue
                if (delay := self._look(member, now, pool)) is not None:
                    member.due = now + delay
                    heapq.heappush(heap, (member.due, i))
            if heap:
                self._nudge.wait(max(0.0, min(heap[0][0], deadline) - time.monotonic()))
                self._nudge.clear()

    def _look(self, member: Member, now: float, pool: ThreadPoolExecutor) -> float | None:
        """Decide what ``member`` needs now (nothing, a tend, a sync, a wake, a park); the delay to its next look,
        None for never."""
        if member.done:
            return None
        if member.busy:
            return self.poll
        if member.run is None:
            return self._look_parked(member, now, pool)
        return self._look_held(member, now, pool)

    def _look_held(self, member: Member, now: float, pool: ThreadPoolExecutor) -> float | None:
        if now >= member.hot_until:
            try:
                changed = member.activity.look()
            except FileNotFoundError:
                self._submit(member, pool, self._removed)
                return None
            if changed:
                # Hot again only if the WAL index shows commits: the files also changed by the commits this run
                # captured while hot (their stats were not looked at then) and by checkpoints.
                member.idle_delay = self.poll
            else:
                idle_for = _PARK_AGAIN if member.park_again else self._park_after()
                if now - member.last_change >= idle_for and not holding_on(member.run):
                    self._submit(member, pool, self._park)
                    return self.poll
                if now - member.last_step >= self.idle_sync:
                    # Now and then a sync all the same: checkpoints and snapshots fall due on idle databases too.
                    self._submit(member, pool, self._step)
                member.idle_delay = min(max(member.idle_delay * 2, self.poll), self.idle_poll)
                return member.idle_delay
        assert member.run is not None
        shipper = member.run.shipper
        try:
            # The application's checkpoint may be waiting on the pin: move it (what the single shipper's thread does).
            shipper.tend()
            commits = shipper.has_new_commits()
        except Exception:
            commits = True  # let the sync meet the problem and report it
        if commits:
            member.hot_until, member.last_change, member.park_again = now + _HOT_SECONDS, now, False
        if sync_due(now - member.last_step, commits, window=self.window, interval=self.interval):
            self._submit(member, pool, self._step)
        return self.poll

    def _look_parked(self, member: Member, now: float, pool: ThreadPoolExecutor) -> float | None:
        try:
            changed = member.activity.look()
        except FileNotFoundError:
            member.done, member.row.state = True, RowState.REMOVED
            self._notify(self._event("removed", member, "the database file is gone; its shipping had ended"))
            return None
        if not changed:
            if member.watched:
                return self.watched_poll  # the kernel tells of a change
            member.idle_delay = min(max(member.idle_delay * 2, self.poll), self.idle_poll)
            return member.idle_delay
        if self._take_slot():
            member.last_change = now
            self._submit(member, pool, self._wake)
            return self.poll
        self._make_room(now, pool)
        member.activity.settle(None)  # still changed at the next look
        return self.idle_poll

    def _park_after(self) -> float:
        return _PARK_UNDER_PRESSURE if self._held >= self._budget else self.park_after

    def _take_slot(self) -> bool:
        with self._held_lock:
            if self._held >= self._budget:
                return False
            self._held += 1
            return True

    def _free_slot(self) -> None:
        with self._held_lock:
            self._held -= 1

    def _make_room(self, now: float, pool: ThreadPoolExecutor) -> None:
        """Every slot is held and a written database waits: park the longest idle one (if any is idle)."""
        idle = [m for m in self._members if m.run is not None and not m.busy and not m.done and not holding_on(m.run)]
        oldest = min(idle, key=lambda m: m.last_change, default=None)
        if oldest is not None and now - oldest.last_change >= _PARK_UNDER_PRESSURE:
            self._submit(oldest, pool, self._park)
        elif not self._warned:
            self._warned = True
            waiting = sum(1 for m in self._members if m.run is None and not m.done and m.activity.recent())
            log.warning("%s", budget_warning(max(waiting, 1), self._budget))

    def _submit(self, member: Member, pool: ThreadPoolExecutor, work: Callable[[Member], None]) -> None:
        member.busy = True
        pool.submit(work, member)

    # Each database's run, on the workers ---------------------------------------------------------

    def _live(self, member: Member) -> bool:
        return member.run is not None and not member.done

    def _changed(self, member: Member) -> bool:
        if member.done:
            return False
        try:
            return member.activity.look()
        except FileNotFoundError:
            return False

    def _caught_up(self, member: Member) -> bool:
        """True when the database has not changed since a run recorded it caught up: it stays closed."""
        recorded = read_caught_up(member.spec.database.absolute(), member.spec.replicas)
        if recorded is None:
            return False
        seen, position = recorded
        now = member.activity.current()
        if now is None or now != seen or Activity.recent_signature(now):
            return False
        member.activity.settle(now)
        member.row.state, member.row.position = RowState.IDLE, position
        return True

    def _once(self, member: Member) -> None:
        """Open, sync, upload and close one database (``--once``, and the written ones left at the window's end).
        As many run at once as there are workers, which the budget always holds."""
        with self._held_lock:
            self._held += 1
        if self._begin(member):
            self._step(member)
            if self._live(member):
                self._end(member)

    def _wake(self, member: Member) -> None:
        """Open a parked database again (its slot taken already) and ship what changed, at once."""
        log.debug("waking %s", member.spec.database)
        try:
            if self._begin(member):
                member.hot_until = time.monotonic() + _HOT_SECONDS
                self._step(member)
        finally:
            member.busy = False

    def _begin(self, member: Member) -> bool:
        """Begin a run of ``member`` in the slot taken for it; the slot is freed again when none began."""
        begun = self._open(member)
        if not begun:
            self._free_slot()
        return begun

    def _open(self, member: Member) -> bool:
        spec, row = member.spec, member.row
        first = not member.begun
        member.begun = True
        try:
            check_database(spec.database)
        except UsageError as exc:
            member.done = True
            row.state, row.last_error = RowState.SKIPPED, str(exc)
            return False
        run = MemberRun(
            spec.database.absolute(),
            spec.replicas,
            self._config_for(spec),
            spool_dir=None,
            steps=self._steps,
            observer=RowObserver(row, self._notify),
        )
        run.stores = self._stores
        try:
            # Once it ran here, a shipper that holds it now is a newer window's: it is theirs.
            run.begin(handover_wait=self.handover_wait if first else 0.0)
        except ShipperRunningError as exc:
            if first:
                self._failed(member, exc)
            else:
                member.done, row.state = True, RowState.DONE
            return False
        except Exception as exc:
            self._failed(member, exc)
            return False
        member.run = run
        row.state = RowState.SHIPPING
        self._copy(member)
        return True

    def _step(self, member: Member) -> None:
        assert member.run is not None
        member.last_step = time.monotonic()  # windows count from a sync's start
        try:
            member.run.step()
        except Exception as exc:
            member.run.close()
            self._let_go(member)
            self._failed(member, exc)
        else:
            self._copy(member)
        finally:
            member.busy = False

    def _park(self, member: Member) -> None:
        """End the database's run as a window's end does, leaving it closed until it changes."""
        log.debug("parking %s", member.spec.database)
        seen = member.activity.current()  # before the final capture: a commit after it shows as a change
        try:
            self._finish(member, seen, RowState.REMOVED if seen is None else RowState.PARKED)
        finally:
            member.busy = False

    def _end(self, member: Member, state: RowState = RowState.DONE) -> None:
        self._finish(member, member.activity.current(), state)
        member.done = True

    def _finish(self, member: Member, seen: Signature | None, state: RowState = RowState.DONE) -> bool:
        run = member.run
        assert run is not None
        try:
            record = None if seen is None else lambda: caught_up_record(seen, run.report.position, run.replicas)
            run.end(caught_up=record)
        except Exception as exc:
            self._copy(member)
            member.row.failed_replicas = unfinished_replicas(run)
            self._let_go(member)
            self._failed(member, exc)
            return False
        self._settle(member, seen)
        self._copy(member)
        member.row.state = state
        member.totals = self._totals(member)
        self._let_go(member)
        return True

    def _settle(self, member: Member, seen: Signature | None) -> None:
        """What the next looks compare with, once the run ended.

        The end's own final checkpoint (and SQLite's, when our connection was
        the last) may change the files; a commit made after the final capture
        would too, and cannot be told apart. So ``seen`` (taken before the
        final capture) stands only while the files still show it; otherwise
        the record goes and the next look wakes the database, whose next end
        then changes nothing.
        """
        if seen is not None and member.activity.current() == seen:
            member.activity.settle(seen)
            return
        log.debug("%s: its end changed the files: it wakes again", member.spec.database)
        forget_caught_up(member.spec.database.absolute())
        member.activity.settle(None)
        member.park_again = True

    def _let_go(self, member: Member) -> None:
        """The run is over (ended, or closed after a failure): its slot is free."""
        if member.run is not None:
            member.run = None
            self._free_slot()

    def _removed(self, member: Member) -> None:
        """The database was deleted: ship what it had, let its lease go, and look at it no more."""
        self._end(member, RowState.REMOVED)
        self._notify(self._event("removed", member, "the database file is gone; its shipping ended"))
        member.busy = False

    def _failed(self, member: Member, exc: Exception) -> None:
        member.done = True
        member.row.state, member.row.last_error = RowState.FAILED, str(exc) or type(exc).__name__
        self._notify(self._event("failed", member, member.row.last_error))

    def _copy(self, member: Member) -> None:
        assert member.run is not None
        report, row, before = member.run.report, member.row, member.totals
        if report.position is not None:
            row.position = str(report.position)
        elif report.generations_started:
            row.position = f"{report.generations_started[-1]}/0"  # its snapshot so far, no segment yet
        row.max_lag_seconds = max(before.max_lag_seconds, report.max_lag_seconds)
        row.segments_uploaded = before.segments_uploaded + report.segments_uploaded
        row.syncs = before.syncs + report.syncs
        row.generations = [*before.generations, *report.generations_started]
        row.upload_failures = before.upload_failures + report.upload_failures

    @staticmethod
    def _totals(member: Member) -> Totals:
        row = member.row
        return Totals(row.segments_uploaded, row.syncs, row.upload_failures, list(row.generations), row.max_lag_seconds)

    @staticmethod
    def _event(kind: str, member: Member, detail: str) -> FleetEvent:
        return FleetEvent(kind=kind, database=member.row.database, replica=member.row.replica, detail=detail)
