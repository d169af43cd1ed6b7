"""One replica of a shipping run: its store, lease, uploads and report, and its own thread when there are several.

Capture is shared; uploads are not. With several replicas each drains the
spool in its own thread (``ReplicaUploader``), so one that is down or slow
never delays the others: its backlog waits in the spool (``walship.acks``).
With one, the run drains it inline, as a sync's own step.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field

from walship.acks import ReplicaAcks
from walship.envelope import Sealing, check_replica_sealing
from walship.errors import StorageError, TransientStorageError
from walship.layout import generation_prefix
from walship.lease import acquire_lease
from walship.models import WalPosition, utcnow
from walship.spool import PendingEntry, Spool
from walship.storage import ObjectStore
from walship.upload import UploadResult, upload_pending

__all__ = ["ReplicaEvents", "ReplicaLink", "ReplicaReport", "ReplicaUploader", "UploadTally"]

log = logging.getLogger(__name__)

# How often a replica behind is asked whether it answers again, whatever the syncs' pace.
PROBE_SECONDS = 5.0


class UploadTally(BaseModel):
    """What a replica received, summed over a run's drains."""

    segments_uploaded: int = 0
    commits_uploaded: int = 0
    bytes_uploaded: int = 0
    snapshots_uploaded: list[str] = Field(default_factory=list)
    max_lag_seconds: float = 0.0  # capture to storage
    position: WalPosition | None = None

    def count_upload(self, uploaded: UploadResult) -> None:
        self.segments_uploaded += uploaded.segments
        self.commits_uploaded += uploaded.commits
        self.bytes_uploaded += uploaded.bytes
        self.snapshots_uploaded += uploaded.snapshots
        self.max_lag_seconds = max(self.max_lag_seconds, uploaded.oldest_captured_at_lag_seconds or 0.0)
        self.position = uploaded.last_position or self.position


class ReplicaReport(UploadTally):
    """What one replica of a run received, and how it kept up."""

    replica: str  # its location
    upload_failures: int = 0
    # Capture-to-storage lag or the age of the oldest entry it still needs, at the last sync.
    lag_seconds: float = 0.0
    behind_since: datetime | None = None
    # Snapshots it resumed at after it was behind (taken for it alone when none was spooled).
    resumed_at: list[str] = Field(default_factory=list)
    pending_at_end: int = 0


class ReplicaEvents:
    """What a link tells the run's observer: uploads, failures, falling behind and catching up."""

    def __init__(
        self,
        uploaded: Callable[[list[PendingEntry], UploadResult], None],
        failed: Callable[[int, StorageError], None],
        behind: Callable[[str, str], None],
        caught_up: Callable[[str, str], None],
    ) -> None:
        self.uploaded, self.failed, self.behind, self.caught_up = uploaded, failed, behind, caught_up


class ReplicaLink:
    """One replica of the run: connected (sealing checked, lease held) before anything is written there."""

    def __init__(
        self, url: str, open_store: Callable[[str], ObjectStore], sealing: Sealing, *, alongside_others: bool
    ) -> None:
        self.url, self._open_store, self.sealing = url, open_store, sealing
        self.alongside_others = alongside_others
        self.connected = False
        # Its last drain (at the run's end: its finishing) failed on storage: the replica is down or unreachable.
        self.failing = False
        # It answers again after it was behind, and waits for a snapshot to resume at (``ReplicaAcks.resume``).
        self.wants_bridge = False
        # Set by the run (why) when this replica is to stop holding the spool back; done by its own uploader.
        self.behind_requested: str | None = None
        self._resuming: str | None = None  # the bridge snapshot it resumed at, until it is stored
        self._upload_lag = 0.0  # the longest capture-to-storage lag since the last sync
        self._next_probe = 0.0  # monotonic: when a replica behind is asked again whether it answers

    @property
    def tolerated(self) -> type[StorageError]:
        """The storage failures that leave this replica's entries spooled rather than end the run."""
        return StorageError if self.alongside_others else TransientStorageError

    @functools.cached_property
    def store(self) -> ObjectStore:
        return self._open_store(self.url)

    @property
    def location(self) -> str:
        return self.store.location

    @functools.cached_property
    def report(self) -> ReplicaReport:
        return ReplicaReport(replica=self.location)

    def connect(self, take_lease: Callable[[], None], spool: Spool, acks: ReplicaAcks, events: ReplicaEvents) -> None:
        """Check the replica's sealing, then take its lease: before anything is written there. A replica this
        spool never shipped to, new to the generation the capture continues, gets a snapshot of its own."""
        # A replica never mixes plaintext and encrypted objects.
        check_replica_sealing(self.store, self.sealing)
        known = spool.load_lease(self.location) is not None
        take_lease()
        self.connected = True
        if not known:
            self._join_generation(spool, acks, events)

    def _join_generation(self, spool: Spool, acks: ReplicaAcks, events: ReplicaEvents) -> None:
        """Behind from the start when the replica holds no snapshot of the capture's generation and none is
        spooled: the segments it would get restore nothing without one."""
        cursor = spool.load_cursor()
        if cursor is None or acks.behind(self.location):
            return  # the first capture begins a generation, with its snapshot, for every replica
        generation = cursor.generation
        if any(e.kind == "snapshot" and e.generation == generation for e in spool.pending()):
            return
        if next(iter(self.store.list(f"{generation_prefix(generation)}snapshots/")), None) is not None:
            return
        reason = (
            f"it holds nothing of generation {generation}, which began before this spool shipped to it: "
            "it gets a snapshot of its own"
        )
        acks.new_to_generation(self.location, WalPosition(generation=generation, sequence=cursor.sequence), reason)
        self.report.behind_since = utcnow()
        events.behind(self.location, reason)

    def drain(self, spool: Spool, acks: ReplicaAcks, holder: str, events: ReplicaEvents) -> None:
        """Upload what this replica still needs; a storage failure leaves it spooled for the next try.

        With one replica only a transient failure does, as any other ends
        the run. With several, any storage failure of one (its bucket gone,
        its credentials refused) must not stop the others: it is kept and
        tried again like an outage, and the run fails at its end naming it.
        """
        if self.behind_requested is not None:
            reason, self.behind_requested = self.behind_requested, None
            self.fall_behind(acks, reason, events)
        behind = acks.behind(self.location)
        pending = spool.pending()
        if not (pending or behind) or (behind and time.monotonic() < self._next_probe):
            return
        try:
            if behind:
                self._next_probe = time.monotonic() + PROBE_SECONDS
            if not self.connected:
                self.connect(
                    lambda: spool.save_lease(self.location, acquire_lease(self.store, holder)), spool, acks, events
                )
                behind = acks.behind(self.location)
            elif behind:
                self.probe(spool, holder)
            if behind and not self.resume(acks, events):
                return
            uploaded = upload_pending(self.store, spool, holder=holder, acks=acks)
        except self.tolerated as exc:
            self.unreachable(exc, len(pending), events)
            return
        self.failing = False
        self.counted(pending, uploaded, events)

    def counted(self, pending: list[PendingEntry], uploaded: UploadResult, events: ReplicaEvents) -> None:
        self.report.count_upload(uploaded)
        self._upload_lag = max(self._upload_lag, uploaded.oldest_captured_at_lag_seconds or 0.0)
        if self._resuming is not None and self._resuming in uploaded.snapshots:
            events.caught_up(self.location, f"resumed at snapshot {self._resuming}")
            self._resuming = None
        events.uploaded(pending, uploaded)

    def unreachable(self, exc: StorageError, still_spooled: int, events: ReplicaEvents) -> None:
        self.failing = True
        self.report.upload_failures += 1
        events.failed(still_spooled, exc)

    def probe(self, spool: Spool, holder: str) -> None:
        """Proof that a replica behind answers again (its lease taken again), before its bridge is asked for."""
        spool.save_lease(self.location, acquire_lease(self.store, holder))
        self.failing = False  # it answers: no reason to let it fall behind again before it tries to upload

    def resume(self, acks: ReplicaAcks, events: ReplicaEvents) -> bool:
        """The replica answers again (its lease was taken): whether it may upload now, from its bridge."""
        if not acks.behind(self.location):
            return True  # resumed meanwhile, at a bridge taken for it (``resuming_at``)
        try:
            bridge = acks.resume(self.location)
        except LookupError:
            self.wants_bridge = True  # the run takes a snapshot for it
            return False
        self.wants_bridge = False
        self.report.behind_since = None
        if bridge is None:
            events.caught_up(self.location, "it missed nothing while behind")
            return True
        assert bridge.snapshot is not None
        self._resuming = bridge.snapshot.key
        self.report.resumed_at.append(bridge.snapshot.key)
        # Said now: the run may end (another replica down) before the snapshot reaches this one.
        log.info("replica %s answers again: resumed at snapshot %s, which holds what it missed", self.location,
                 bridge.snapshot.key)  # fmt: skip
        return True

    def resuming_at(self, key: str) -> None:
        """A snapshot taken for it alone (``ReplicaAcks.expect_bridge``): it resumes there."""
        self.wants_bridge = False
        self.report.behind_since = None
        self._resuming = key
        self.report.resumed_at.append(key)
        # Said now: the run may end (this replica down again) before the snapshot reaches it.
        log.info("replica %s answers again: resumed at snapshot %s, taken for it alone", self.location, key)

    def fall_behind(self, acks: ReplicaAcks, reason: str, events: ReplicaEvents) -> None:
        self._next_probe = time.monotonic() + PROBE_SECONDS  # it just failed: asked again later, not at once
        acks.fall_behind(self.location, reason)
        self.report.behind_since = utcnow()
        events.behind(self.location, reason)

    def backlog_lag(self, pending: list[PendingEntry], acks: ReplicaAcks) -> float:
        """After a sync: the replica's lag, the age of the oldest entry it still needs or the longest
        capture-to-storage lag of its uploads since the last sync."""
        oldest = min((e.cached_at for e in pending if acks.wants(self.location, e)), default=None)
        backlog = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
        self.report.lag_seconds, self._upload_lag = max(self._upload_lag, backlog), 0.0
        return self.report.lag_seconds


class ReplicaUploader:
    """Drains one replica in a thread of its own whenever it is woken (each sync wakes every replica).

    A failure that is not storage's (a damaged spool entry, a bug) ends the
    thread and is raised in the run's thread by ``check``.
    """

    def __init__(self, link: ReplicaLink, drain: Callable[[], None]) -> None:
        self.link, self._drain = link, drain
        self._wake, self._stop = threading.Event(), threading.Event()
        self.failure: BaseException | None = None
        self._drains = threading.Condition()
        self._begun = self._ended = 0
        self.thread = threading.Thread(target=self._loop, name=f"walship-upload-{link.location}", daemon=True)
        self.thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the drain under way (storage's own timeouts bound it), then end."""
        self._stop.set()
        self._wake.set()
        self.thread.join()

    def check(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def settle(self, deadline: float) -> bool:
        """Wake it and wait, until ``deadline`` (monotonic), for a drain begun after this call to end; False
        when none did (storage hangs). A drain that failed counts: ``check`` raises its failure."""
        with self._drains:
            wanted = self._begun + 1
        if self.failure is not None or not self.thread.is_alive():
            return True
        self.wake()
        with self._drains:
            return self._drains.wait_for(lambda: self._ended >= wanted, max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._drains:
                self._begun += 1
            try:
                self._drain()
            except BaseException as exc:
                self.failure = exc
                return
            finally:
                with self._drains:
                    self._ended += 1
                    self._drains.notify_all()
