"""One process ships a fleet: a ``ShippingRun`` per database, their syncs scheduled from one thread.

Each database keeps everything a single shipper guarantees (its spool, lock,
lease, generations and hand-over) because it *is* a ``ShippingRun``, driven
step by step (``begin``, ``step``, ``end``). What changes is who decides
when: instead of a thread per database polling its WAL index every 50 ms,
one scheduler keeps a heap of next looks. A database that took writes
lately is hot: its WAL index is read (and its pin tended) every ``poll``.
An idle one is looked at through two ``stat`` calls (``Activity``), backing
off to ``idle_poll``; a change makes it hot again. Syncs and uploads run on
a few worker threads, so a slow upload never delays another database's look.

A failure is the database's own: its row says why and the others go on.
"""

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import BaseModel

from walship.errors import UsageError
from walship.fleet._activity import Activity
from walship.fleet._memory import lean_sqlite, more_open_files
from walship.fleet._plan import FleetMember
from walship.fleet._rows import FleetReport, FleetRow, RowState
from walship.fleet._stores import SharedStores
from walship.ship import ShipConfig, ShippingRun, ShipReport, ShipSteps, SyncResult
from walship.spool import PendingEntry
from walship.sqlite import check_database
from walship.storage import ObjectStore
from walship.upload import UploadResult

log = logging.getLogger(__name__)

__all__ = ["FleetEvent", "FleetShipping"]

# A database stays hot this long after its last sign of writes.
_HOT_SECONDS = 5.0
# Time kept for the upload once commits were noticed (as the single shipper's wait).
_UPLOAD_BUDGET = 0.3


class FleetEvent(BaseModel):
    """A change or a failure worth telling (not every sync): new generation, upload failing or back, a stop."""

    kind: str  # generation | resynced | upload-failed | upload-recovered | failed | removed
    database: str
    replica: str
    detail: str = ""


Notify = Callable[[FleetEvent], None]


@dataclass(eq=False)
class _Member:
    spec: FleetMember
    row: FleetRow
    activity: Activity
    run: ShippingRun | None = None
    hot_until: float = 0.0
    idle_delay: float = 0.0
    noticed: float | None = None
    last_step: float = field(default_factory=time.monotonic)
    busy: bool = False
    done: bool = False


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
        notify: Notify | None = None,
        workers: int = 4,
        poll: float = 0.05,
        idle_poll: float = 1.0,
        idle_sync: float = 30.0,
        handover_wait: float = 0.0,
    ) -> None:
        """``handover_wait``: how long each database waits for a running shipper of it (the previous window)."""
        self.handover_wait = handover_wait
        self.interval, self.poll, self.idle_poll, self.idle_sync = interval, poll, idle_poll, idle_sync
        self._config_for, self._steps, self._stores = config_for, steps, stores
        self._notify = notify or (lambda event: None)
        self._members = [
            _Member(m, FleetRow(database=str(m.database), replica=m.replica), Activity(m.database.absolute()))
            for m in members
        ]
        self._workers = workers
        self._stop = threading.Event()

    @property
    def rows(self) -> list[FleetRow]:
        return [m.row for m in self._members]

    def stop(self) -> None:
        """End the window early, as if its time were up: every database's final capture and drain still run."""
        self._stop.set()

    def run(self, *, duration: float, once: bool = False) -> FleetReport:
        started = time.monotonic()
        deadline = started + duration
        lean_sqlite()
        more_open_files()
        with ThreadPoolExecutor(self._workers, thread_name_prefix="walship-fleet") as pool:
            list(pool.map(self._begin, self._members))
            if once:
                list(pool.map(self._step, [m for m in self._members if self._live(m)]))
            else:
                self._window(pool, deadline)
            list(pool.map(self._end, [m for m in self._members if self._live(m)]))
        return FleetReport(rows=self.rows, seconds=time.monotonic() - started)

    # The scheduler -------------------------------------------------------------------------

    def _window(self, pool: ThreadPoolExecutor, deadline: float) -> None:
        now = time.monotonic()
        # Spread the first looks over one idle poll, so that a thousand databases do not stat at once.
        spread = self.idle_poll / max(len(self._members), 1)
        heap = [(now + i * spread, i) for i, m in enumerate(self._members) if self._live(m)]
        heapq.heapify(heap)
        while heap and not self._stop.is_set() and (now := time.monotonic()) < deadline:
            while heap and heap[0][0] <= now:
                _, i = heapq.heappop(heap)
                member = self._members[i]
                if (delay := self._look(member, now, pool)) is not None:
                    heapq.heappush(heap, (now + delay, i))
            if heap:
                self._stop.wait(max(0.0, min(heap[0][0], deadline) - time.monotonic()))
        # Wait for the syncs in flight, so that the final ones start from a settled run.
        while any(m.busy for m in self._members):
            time.sleep(self.poll)

    def _look(self, member: _Member, now: float, pool: ThreadPoolExecutor) -> float | None:
        """Decide what ``member`` needs now (nothing, a tend, a sync); the delay to its next look, None for never."""
        if not self._live(member):
            return None
        if member.busy:
            return self.poll
        if now >= member.hot_until:
            try:
                changed = member.activity.look()
            except FileNotFoundError:
                member.busy = True
                pool.submit(self._removed, member)
                return None
            if changed:
                member.hot_until, member.idle_delay = now + _HOT_SECONDS, self.poll
            else:
                if now - member.last_step >= self.idle_sync:
                    # Now and then a sync all the same: checkpoints and snapshots fall due on idle databases too.
                    self._submit(member, pool)
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
            member.hot_until = now + _HOT_SECONDS
            member.noticed = member.noticed if member.noticed is not None else now
        waited = now - member.noticed if member.noticed is not None else 0.0
        budget = min(_UPLOAD_BUDGET, self.interval / 3)
        if waited >= self.interval - budget - self.poll or now - member.last_step >= self.interval:
            self._submit(member, pool)
        return self.poll

    def _submit(self, member: _Member, pool: ThreadPoolExecutor) -> None:
        member.busy = True
        pool.submit(self._step, member)

    # Each database's run, on the workers ---------------------------------------------------------

    def _live(self, member: _Member) -> bool:
        return member.run is not None and not member.done

    def _begin(self, member: _Member) -> None:
        spec, row = member.spec, member.row
        try:
            check_database(spec.database)
        except UsageError as exc:
            row.state, row.last_error = RowState.SKIPPED, str(exc)
            return
        run = _Run(
            spec.database.absolute(),
            spec.replica,
            self._config_for(spec),
            spool_dir=None,
            steps=self._steps,
            observer=_RowObserver(row, self._notify),
        )
        run.stores = self._stores
        try:
            run.begin(handover_wait=self.handover_wait)
        except Exception as exc:
            self._failed(member, exc)
            return
        member.run = run
        self._copy(member)

    def _step(self, member: _Member) -> None:
        assert member.run is not None
        try:
            member.run.step()
        except Exception as exc:
            member.run.close()
            self._failed(member, exc)
        else:
            self._copy(member)
        finally:
            member.last_step, member.noticed = time.monotonic(), None
            member.busy = False

    def _end(self, member: _Member, state: RowState = RowState.DONE) -> None:
        assert member.run is not None
        try:
            member.run.end()
        except Exception as exc:
            self._failed(member, exc)
        else:
            self._copy(member)
            member.row.state = state
        member.done = True

    def _removed(self, member: _Member) -> None:
        """The database was deleted: ship what it had, let its lease go, and look at it no more."""
        self._end(member, RowState.REMOVED)
        self._notify(self._event("removed", member, "the database file is gone; its shipping ended"))
        member.busy = False

    def _failed(self, member: _Member, exc: Exception) -> None:
        member.done = True
        if member.run is not None:
            self._copy(member)
        member.row.state, member.row.last_error = RowState.FAILED, str(exc) or type(exc).__name__
        self._notify(self._event("failed", member, member.row.last_error))

    def _copy(self, member: _Member) -> None:
        assert member.run is not None
        report, row = member.run.report, member.row
        if report.position is not None:
            row.position = str(report.position)
        elif report.generations_started:
            row.position = f"{report.generations_started[-1]}/0"  # its snapshot so far, no segment yet
        row.max_lag_seconds = report.max_lag_seconds
        row.segments_uploaded = report.segments_uploaded
        row.syncs = report.syncs
        row.generations = list(report.generations_started)
        row.upload_failures = report.upload_failures

    @staticmethod
    def _event(kind: str, member: _Member, detail: str) -> FleetEvent:
        return FleetEvent(kind=kind, database=member.row.database, replica=member.row.replica, detail=detail)


class _Run(ShippingRun):
    """A database's run whose uploads go through the fleet's shared storage clients."""

    stores: SharedStores

    def _store(self) -> ObjectStore:
        return self.stores.open(self.replica)


class _RowObserver:
    """A database's ``ShipObserver``: keeps its row current and tells the fleet of changes and failures only."""

    def __init__(self, row: FleetRow, notify: Notify) -> None:
        self.row, self.notify = row, notify
        self._failing = False

    def _event(self, kind: str, detail: str) -> None:
        self.notify(FleetEvent(kind=kind, database=self.row.database, replica=self.row.replica, detail=detail))

    def synced(self, result: SyncResult) -> None:
        if result.new_generation:
            self._event("generation", f"{result.new_generation}: {result.reason}")
        if result.resync:
            resync = result.resync
            self._event("resynced", f"{resync.key}: {resync.pages} of {resync.page_count} pages ({resync.reason})")

    def uploaded(self, pending: list[PendingEntry], uploaded: UploadResult) -> None:
        if self._failing:
            self._failing, self.row.last_error = False, None
            self._event("upload-recovered", f"{uploaded.segments} segments uploaded")

    def upload_failed(self, still_spooled: int, error: Exception) -> None:
        self.row.last_error, self.row.pending = str(error), still_spooled
        if not self._failing:
            self._failing = True
            self._event("upload-failed", f"{still_spooled} entries stay spooled: {error}")

    def spooled(self, pending: list[PendingEntry]) -> None:
        self.row.pending = len(pending)

    def handover(self, message: str) -> None:
        log.info("%s", message)

    def progress(self, database_id: str, report: ShipReport) -> None:
        pass  # the fleet's table holds every database's row; a line per database would bury it

    def close(self) -> None:
        pass
