"""One shipping run: hold the database, take the lease, ship for a window, drain, hand over.

Storage unreachable when the window starts does not stop it: the run captures
into the spool (which exists for outages) and tries the lease again each
interval; nothing is written to the replica before the lease is held.

The same run serves the CLI's direct mode and the Prefect flow. Its storage
steps (lease, final drain, position, release) come from a ``ShipSteps``:
the flow runs each as a task with the retry policy, the direct mode calls
the core with ``retrying``. What happens along the way (syncs, uploads, the
lag, a hand-over, progress every ``ShipConfig.progress_seconds``) goes to a
``ShipObserver``: events, logs and the artifact in Prefect, lines on a terminal.
"""

import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import Field

from walship.dblock import ShipperIdentity
from walship.errors import IncompleteError, SpoolEntryDamagedError, StorageError, UsageError
from walship.handover import HeldDatabase, hold_database
from walship.lease import holder_for
from walship.ship._fanout import ReplicaSet, ShipSteps
from walship.ship._replicas import ReplicaEvents, ReplicaLink, ReplicaReport, UploadTally
from walship.ship._results import ResyncSummary, ShipConfig, SyncResult
from walship.ship._shipper import Shipper
from walship.spool import PendingEntry, Spool, default_spool_dir
from walship.storage import ObjectStore, StorageCredentials, open_store
from walship.upload import UploadResult

__all__ = ["ShipObserver", "ShipReport", "ShipSteps", "ShippingRun"]

# At the end of a run, how many syncs in a row may capture nothing before the run says it could not catch up.
_EMPTY_SYNCS = 20
_EMPTY_SYNC_PAUSE = 0.05


class ShipReport(UploadTally):
    """What one shipping run did; what it uploaded is the first replica's (``replicas`` has each one's)."""

    syncs: int = 0
    segments_captured: int = 0
    commits_captured: int = 0
    bytes_captured: int = 0
    checkpoints: int = 0
    generations_started: list[str] = Field(default_factory=list)
    generation_reasons: list[str] = Field(default_factory=list)
    resyncs: list[ResyncSummary] = Field(default_factory=list)
    # Capture-to-storage lag or the oldest spooled entry's age, whichever is larger, at the last sync.
    lag_seconds: float = 0.0
    # An earlier run's captures this run found spooled: it uploads them too, before its own.
    segments_left_by_earlier_run: int = 0
    commits_left_by_earlier_run: int = 0
    segments_spooled: int = 0
    handover_waited_seconds: float | None = None
    upload_failures: int = 0
    pending_at_end: int = 0
    replicas: list[ReplicaReport] = Field(default_factory=list)

    def count_sync(self, result: SyncResult, *, counted: bool = False) -> None:
        """``counted``: the rest of a sync whose capture was counted already."""
        self.syncs += int(not counted)
        self.segments_captured += result.segments
        self.commits_captured += result.commits
        self.bytes_captured += result.bytes
        self.checkpoints += int(result.checkpointed)
        if result.new_generation:
            self.generations_started.append(result.new_generation)
            self.generation_reasons.append(result.reason or "")
        if result.resync:
            self.resyncs.append(result.resync)

    @property
    def segments_uploaded_of_earlier_run(self) -> int:
        # Uploads go in spool order, so an earlier run's segments go up before this run's.
        return min(self.segments_left_by_earlier_run, self.segments_uploaded)

    @property
    def segments_uploaded_of_this_run(self) -> int:
        return self.segments_uploaded - self.segments_uploaded_of_earlier_run

    @property
    def commits_uploaded_of_earlier_run(self) -> int:
        return min(self.commits_left_by_earlier_run, self.commits_uploaded)


class ShipObserver(Protocol):
    """Hears what a run does as it happens; must not raise."""

    def synced(self, result: SyncResult) -> None: ...

    def uploaded(self, pending: list[PendingEntry], uploaded: UploadResult) -> None: ...

    def upload_failed(self, still_spooled: int, error: StorageError) -> None: ...

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None:
        """Once per sync, what is still spooled (for lag alarms); with several replicas, once per replica (its
        location) with what it still needs."""

    def handover(self, message: str) -> None:
        """Waiting for the database's running shipper, and taking over from it."""

    def progress(self, database_id: str, report: "ShipReport") -> None:
        """About every ``ShipConfig.progress_seconds`` of the window: the report so far."""

    def replica_behind(self, replica: str, reason: str) -> None:
        """One of several replicas stopped holding the spool back (``walship.acks``)."""

    def replica_caught_up(self, replica: str, detail: str) -> None:
        """A replica that was behind stores entries again."""

    def close(self) -> None: ...


class ShippingRun:
    """``database``'s WAL to ``replicas`` (one URL or several) for one window; ``report`` fills as it goes, even
    when it fails."""

    def __init__(
        self,
        database: Path,
        replicas: str | Sequence[str],
        config: ShipConfig,
        *,
        spool_dir: Path | None,
        steps: ShipSteps,
        observer: ShipObserver,
        credentials: StorageCredentials | None = None,
    ) -> None:
        self.replicas = [replicas] if isinstance(replicas, str) else list(replicas)
        if not self.replicas:
            raise UsageError("no replica to ship to: name one with --replica")
        self.database, self.replica, self.config = database, self.replicas[0], config
        # For the window's own uploads (the steps open storage their own way).
        self.credentials = credentials
        self._stores: dict[str, ObjectStore] = {}
        self.spool_dir = (spool_dir or default_spool_dir(database)).resolve()
        self.steps, self.observer = steps, observer
        self.run_id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.holder = holder_for(database, self.run_id)
        self.replica_set = ReplicaSet(
            self.replicas,
            self._open_store,
            config,
            steps=steps,
            spool_dir=self.spool_dir,
            holder=self.holder,
            events=self._events,
        )
        self.report = ShipReport()
        self._stop = threading.Event()
        self._held: HeldDatabase | None = None
        self._spool: Spool | None = None
        self._shipper: Shipper | None = None
        self._progress_due = time.monotonic() + config.progress_seconds

    def stop(self) -> None:
        """End the window early, as if its time were up: the final capture and drain still run."""
        self._stop.set()

    def run(self, *, duration: float, interval: float, once: bool, handover_wait: float) -> ShipReport:
        # The window counts from the run's start, whatever it waited for: a run
        # that took over late must still end in time to hand over to the next.
        deadline = time.monotonic() + duration
        self.begin(handover_wait=handover_wait)
        try:
            self._window(self.shipper, deadline=deadline, interval=interval, once=once)
        except BaseException:
            self.close()
            raise
        return self.end()

    # The run in steps, for a caller that schedules many runs itself (walship.fleet):
    # begin, then step whenever a sync is due, tend the pin between steps, then end.

    def begin(self, *, handover_wait: float = 0.0) -> None:
        """Hold the database, take the lease, prove continuity (or start a generation)."""
        identity = ShipperIdentity.this_process(self.run_id, self.spool_dir, ", ".join(self.replicas))
        # Pin the WAL and take the database's lock first: a second shipper is
        # refused before it touches any spool or replica.
        held = hold_database(self.database, self.spool_dir, identity, wait=handover_wait, told=self.observer.handover)
        self._held = held
        if held.predecessor:
            self.report.handover_waited_seconds = held.waited_seconds
        try:
            self._spool = Spool(self.spool_dir)
            self._count_left_by_earlier_run(self._spool.pending())
            self._shipper = Shipper(
                self.database,
                self._spool,
                self.config,
                capture=held.capture,
                guarded=held.guarded,
                make_room=self.replica_set.make_room,
            )
            self.config.sealing.check()
            self.replica_set.open(self._spool)
            self._synced(self.shipper.open())
        except BaseException:
            self.close()
            raise

    @property
    def shipper(self) -> Shipper:
        assert self._shipper is not None, "begin() first"
        return self._shipper

    @property
    def links(self) -> list[ReplicaLink]:
        return self.replica_set.links

    def step(self) -> None:
        """One sync and the upload of what it spooled (a failed upload stays spooled for the next step)."""
        self._sync_and_upload(self.shipper)

    def _sync_and_upload(self, shipper: Shipper) -> None:
        """A sync whose capture goes up before its checkpoint or snapshot work (``Shipper.sync``)."""

        def upload(captured: SyncResult) -> None:
            self._synced(captured)
            self._upload()

        self._synced(shipper.sync(upload), counted=True)
        self._spooled(shipper.spool.pending())
        self._synced(self.replica_set.tend(shipper), counted=True)

    def end(self, *, caught_up: Callable[[], bytes] | None = None) -> ShipReport:
        """The final capture, drain and position; the lease let go; everything closed.

        What ``caught_up`` gives is written into the spool, still held, once
        nothing is left pending (``walship.fleet`` parks an idle database this way).
        """
        try:
            self._catch_up()
            self._synced(self.replica_set.bridge_before_end(self.shipper), counted=True)
            self._synced(self.shipper.finish())
            self._finish(self.shipper.spool)
            if caught_up is not None:
                self.shipper.spool.save_caught_up(caught_up())
        finally:
            self.close()
        return self.report

    def _catch_up(self) -> None:
        """Capture everything committed before the end, piece by piece through a spool smaller than the backlog.

        Such a spool takes one piece per sync; ending after one piece would
        exit 0 with commits left in the WAL only. The pieces are uploaded to
        make room, up to the WAL's end as it is now (writers that go on during
        a hand-over are the next run's). A sync that captures nothing (an
        unsettled WAL index) is tried again a few times; when the end cannot
        be reached (storage down, the disk full) the run fails, naming it.
        """
        shipper = self.shipper
        end = shipper.published_end()
        empty, made_room = 0, False
        hanging: list[str] = []
        while end is not None and not shipper.captured_to(end):
            self._upload()
            result = shipper.sync()
            self._synced(result)
            if result.segments:
                empty = 0
                continue
            if shipper.out_of_room and not made_room:
                # The window's release waits for a replica's next failure; the end cannot.
                hanging, made_room = self.replica_set.make_room(), True
                continue
            empty += 1
            if empty >= _EMPTY_SYNCS:
                unanswered = f"; replica {', '.join(hanging)} did not answer" if hanging else ""
                raise IncompleteError(
                    f"committed WAL of {self.database} up to offset {end[2]} is not captured yet (the spool "
                    f"{self.spool_dir} has no room, or storage is unreachable{unanswered}): it stays in the WAL "
                    "for the next run"
                )
            time.sleep(_EMPTY_SYNC_PAUSE)

    def close(self) -> None:
        """Let the database, spool and WAL go, without a final capture (after a failure); idempotent."""
        self.replica_set.close()
        shipper, self._shipper = self._shipper, None
        spool, self._spool = self._spool, None
        held, self._held = self._held, None
        if shipper is not None:
            shipper.close()
        if spool is not None:
            spool.close()
        if held is not None:
            held.release()
            self.observer.close()

    def _open_store(self, url: str) -> ObjectStore:
        if (store := self._stores.get(url)) is None:
            store = self._stores[url] = open_store(url, self.credentials)
        return store

    def _window(self, shipper: Shipper, *, deadline: float, interval: float, once: bool) -> None:
        """Sync, upload, wait, with the pin tended beside it all along."""
        shipper.start_tending()
        try:
            while True:
                started = time.monotonic()
                self._sync_and_upload(shipper)
                if once or time.monotonic() >= deadline or self._stop.is_set():
                    break
                shipper.wait_for_commits(interval, deadline, self._stop, since=started)
        finally:
            # Before the final capture: nothing is spooled behind the final drain.
            shipper.stop_tending()

    def _events(self, link: ReplicaLink) -> ReplicaEvents:
        def uploaded(pending: list[PendingEntry], uploaded: UploadResult) -> None:
            if link is self.links[0]:
                self.report.count_upload(uploaded)
            self.observer.uploaded(pending, uploaded)

        def failed(still_spooled: int, error: StorageError) -> None:
            self.report.upload_failures += 1
            self.observer.upload_failed(still_spooled, error)

        return ReplicaEvents(uploaded, failed, self.observer.replica_behind, self.observer.replica_caught_up)

    def _upload(self) -> None:
        """Upload what is spooled (``ReplicaSet.upload``); a damaged entry begins the next generation at once."""
        try:
            self.replica_set.upload(self.shipper.spool)
        except SpoolEntryDamagedError:
            self._new_generation_after_damage()
            raise

    def _new_generation_after_damage(self) -> None:
        """A damaged entry abandoned the spool's generation (``upload_pending``): begin the next one now, so
        that nothing more is captured into the abandoned one."""
        shipper = self.shipper
        shipper.stop_tending()
        # What the tending thread captured into it meanwhile goes too (before the new cursor ends the abandonment).
        shipper.spool.drop_abandoned()
        if shipper.spool.load_cursor() is None:
            self._synced(shipper.start_generation(shipper.spool.no_cursor_reason or "a spool entry was damaged"))

    def _finish(self, spool: Spool) -> None:
        """Each replica's final drain, position and lease (``ReplicaSet.finish``); the report's totals."""
        cursor = self.shipper.cursor
        try:
            self.replica_set.finish(spool, cursor.position if cursor is not None else None)
        except SpoolEntryDamagedError:
            self._new_generation_after_damage()
            raise
        finally:
            self.report.pending_at_end = len(spool.pending())
            self.report.segments_spooled = _segments(spool.pending())
            self.report.replicas = self.replica_set.reports
            self.report.position = self.links[0].report.position

    def _count_left_by_earlier_run(self, pending: list[PendingEntry]) -> None:
        left = [entry.segment for entry in pending if entry.segment is not None]
        self.report.segments_left_by_earlier_run = len(left)
        self.report.commits_left_by_earlier_run = sum(segment.commits for segment in left)
        self.report.segments_spooled = len(left)

    def _spooled(self, pending: list[PendingEntry]) -> None:
        """After each sync's upload: the lag and what is still spooled, and progress when it is due."""
        self.report.lag_seconds = self.replica_set.lag(pending, self.observer)
        self.report.replicas = self.replica_set.reports
        self.report.segments_spooled = _segments(pending)
        if (now := time.monotonic()) >= self._progress_due:
            self._progress_due = now + self.config.progress_seconds
            self.observer.progress(self.config.database_id, self.report)

    def _synced(self, result: SyncResult, *, counted: bool = False) -> None:
        self.report.count_sync(result, counted=counted)
        self.observer.synced(result)


def _segments(pending: list[PendingEntry]) -> int:
    return sum(1 for entry in pending if entry.kind == "segment")
