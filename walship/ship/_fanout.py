"""The replicas of one shipping run: connected at its start, fed after every sync, finished at its end.

With one replica a sync drains it inline and an entry leaves the spool once
stored, as walship always did. With several each drains in a thread of its
own (``ReplicaUploader``), the spool keeps what any of them still needs
(``walship.acks``), and past the spool's cap one that fails stops holding
the others back and later resumes at a snapshot of its own.
"""

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from walship.acks import ReplicaAcks
from walship.errors import StorageError, TransientStorageError, UsageError
from walship.layout import format_snapshot_key
from walship.models import WalPosition
from walship.ship._replicas import ReplicaEvents, ReplicaLink, ReplicaReport, ReplicaUploader
from walship.ship._results import ShipConfig, SyncResult
from walship.ship._shipper import Shipper
from walship.spool import PendingEntry, Spool
from walship.storage import ObjectStore
from walship.units import human_bytes
from walship.upload import UploadResult

__all__ = ["ReplicaSet", "ShipSteps"]

# How long ``ReplicaSet.make_room`` waits for each replica's drain: storage's own retries of a refused or timed-out
# connection end well within it; a hanging read does not, and is named instead.
_SETTLE_SECONDS = 30.0


class ShipSteps(Protocol):
    """A run's storage steps outside the window, each retried on transient storage errors."""

    def acquire_lease(self, replica: str, spool_dir: Path, holder: str) -> None: ...

    def drain(self, replica: str, spool_dir: Path, holder: str) -> UploadResult: ...

    def record_position(self, replica: str, position: WalPosition) -> None: ...

    def release_lease(self, replica: str, spool_dir: Path) -> None: ...


class _Spooled(Protocol):
    """What a run's observer hears from its replicas after each sync (``walship.ship.ShipObserver``)."""

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None: ...


class ReplicaSet:
    """A run's replicas (URLs, in the order given) and what they hold back in its spool."""

    def __init__(
        self,
        urls: list[str],
        open_store: Callable[[str], ObjectStore],
        config: ShipConfig,
        *,
        steps: ShipSteps,
        spool_dir: Path,
        holder: str,
        events: Callable[[ReplicaLink], ReplicaEvents],
    ) -> None:
        several = len(urls) > 1
        self.links = [ReplicaLink(url, open_store, config.sealing, alongside_others=several) for url in urls]
        self.config, self.steps, self.spool_dir, self.holder = config, steps, spool_dir, holder
        self.events = events
        self._uploaders: list[ReplicaUploader] = []
        self._acks: ReplicaAcks | None = None

    @property
    def several(self) -> bool:
        return len(self.links) > 1

    @property
    def acks(self) -> ReplicaAcks:
        assert self._acks is not None, "open() first"
        return self._acks

    @property
    def reports(self) -> list[ReplicaReport]:
        return [link.report for link in self.links]

    def open(self, spool: Spool) -> None:
        """Check each replica's sealing and take its lease before anything goes there; one that is unreachable
        is tried again each sync."""
        locations = [link.location for link in self.links]
        if len(set(locations)) < len(locations):
            urls = ", ".join(link.url for link in self.links)
            raise UsageError(f"a replica is named twice ({urls}): name each one once")
        self._acks = ReplicaAcks(spool, locations)
        if self.several:
            # Each connects in its own thread, on its first drain: one that hangs must not hold back the
            # capture, nor the others (a failure there is kept for the run's end, as any of its failures).
            self._uploaders = [
                ReplicaUploader(link, functools.partial(self._drain, link, spool)) for link in self.links
            ]
            return
        link = self.links[0]
        try:
            self._connect(link, spool)
        except TransientStorageError as exc:
            link.unreachable(exc, len(spool.pending()), self.events(link))

    def upload(self, spool: Spool) -> None:
        """Upload what is spooled; a failure leaves it spooled for the next sync (no backoff inside).

        With several replicas this only wakes their uploaders, after raising
        what ended one of them (a damaged spool entry, a bug).
        """
        for uploader in self._uploaders:
            uploader.check()
        for uploader in self._uploaders:
            uploader.wake()
        if not self.several and (spool.pending() or self.acks.behind(self.links[0].location)):
            self._drain(self.links[0], spool)

    def _drain(self, link: ReplicaLink, spool: Spool) -> None:
        link.drain(spool, self.acks, self.holder, self.events(link))

    def lag(self, pending: list[PendingEntry], observer: _Spooled) -> float:
        """After a sync: each replica's lag, told to ``observer`` with what it still needs; the run's lag is the
        largest of those not behind."""
        acks = self.acks
        lags = [link.backlog_lag(pending, acks) for link in self.links if not acks.behind(link.location)]
        if self.several:
            for link in self.links:
                observer.spooled([e for e in pending if acks.wants(link.location, e)], link.location)
        else:
            observer.spooled(pending)
        return max(lags, default=0.0)

    def tend(self, shipper: Shipper) -> SyncResult:
        """After a sync: with several replicas the spool's cap; then the snapshots replicas back from behind
        resume at (what the shipper began for them). A run of one replica may find it behind too, when an
        earlier run shipped to several."""
        if self.several and shipper.out_of_room:
            self._release_failing(self._out_of_room)
        elif self.several and shipper.spool.pending_bytes() > self.config.spool_cap_bytes:
            cap = human_bytes(self.config.spool_cap_bytes)
            self._release_failing(f"its uploads failed while the spool {self.spool_dir} grew past {cap} (--spool-cap)")
        acks = self.acks
        if not shipper.snapshot_in_progress:
            for link in self.links:
                if acks.waits_for_bridge(link.location):
                    acks.bridge_failed(link.location, "the snapshot it was to resume at could not be spooled")
        wanting = [r for r in self.links if r.wants_bridge and not acks.bridge_spooled(r.location)]
        if not wanting or shipper.snapshot_in_progress:
            return SyncResult()

        def resume_there(position: WalPosition) -> None:
            for link in wanting:
                acks.expect_bridge(link.location, position)
                link.resuming_at(format_snapshot_key(position.generation, position.sequence))

        return shipper.take_snapshot(only_for=tuple(r.location for r in wanting), fixed=resume_there)

    def bridge_before_end(self, shipper: Shipper) -> SyncResult:
        """At the run's end: a replica behind that answers now gets its bridge snapshot begun, so that the final
        drain (after the shipper finished spooling it) resumes it, idle database or not. The uploaders stop
        first: from here on the run's steps drain, one replica after another."""
        self.close()
        spool = shipper.spool
        for link in self.links:
            if not link.connected and not self.acks.behind(link.location):
                # Never drained (nothing was pending): connected now, a replica new to the generation is found
                # behind here, in time for its snapshot.
                try:
                    self._connect(link, spool)
                except StorageError:
                    continue  # its finish names it
            if self.acks.behind(link.location) and not self.acks.bridge_spooled(link.location):
                try:
                    link.probe(spool, self.holder)
                except StorageError:
                    continue  # still down: the run ends naming it
                link.wants_bridge = True
        return self.tend(shipper)

    def make_room(self) -> list[str]:
        """Out of room where the run cannot wait (its final capture, a resync or a new generation's snapshot):
        each replica's drain is let run, which finds one that is down failing, then those failing stop holding
        the spool back.

        Unlike the window's ``tend``, this waits for the drains, so the answer
        does not depend on when each last tried. Returns the replicas whose
        drain did not end within ``_SETTLE_SECONDS`` (storage hangs): they
        still hold the spool.
        """
        if not self._uploaders:
            return []
        hanging = self._settle()
        if self._release_failing(self._out_of_room):
            hanging += self._settle()  # the released replicas' uploaders let them go, between two attempts
        return sorted(set(hanging))

    @property
    def _out_of_room(self) -> str:
        return f"its uploads failed until the spool ran out of room ({self.spool_dir})"

    def _settle(self) -> list[str]:
        deadline = time.monotonic() + _SETTLE_SECONDS
        return [uploader.link.location for uploader in self._uploaders if not uploader.settle(deadline)]

    def _release_failing(self, why: str) -> bool:
        """Past the spool's cap, or out of room before it, a replica whose uploads fail while another keeps up
        stops holding the spool; whether one was asked to."""
        acks = self.acks
        if not any(not link.failing and not acks.behind(link.location) for link in self.links):
            return False  # every one is failing: the spool exists for that, as with one replica
        released = False
        for link in self.links:
            if link.failing and not acks.behind(link.location):
                # Done by its own uploader, between two attempts: no upload of its is in flight meanwhile.
                link.behind_requested = f"{why}; the other replicas went on"
                released = True
        return released

    def finish(self, spool: Spool, cursor: WalPosition | None) -> None:
        """The final drain of each replica with the full retry policy, its position, and its lease let go.

        Every replica is finished before the run fails for one that could
        not be (down, or behind): the others' positions are recorded.
        ``cursor``: what a replica holds when nothing was left to upload.
        """
        self.close()
        failures: list[StorageError] = []
        for link in self.links:
            try:
                self._finish_one(link, spool, cursor)
                link.failing = False
            except link.tolerated as exc:
                # Whichever step failed (drain, position, lease): the caller may ask which replicas were not finished.
                link.failing = True
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise TransientStorageError("; ".join(str(failure) for failure in failures))

    def _finish_one(self, link: ReplicaLink, spool: Spool, cursor: WalPosition | None) -> None:
        row = link.report
        self._unless_behind(link)
        if not link.connected:
            try:
                self._connect(link, spool)
            except TransientStorageError as exc:
                row.pending_at_end = self._wanted(link, spool)
                if row.pending_at_end:
                    raise self._still_spooled(link) from exc
                raise
            self._unless_behind(link)  # new to the generation: it waits for a snapshot of its own
        if pending := spool.pending():
            try:
                drained = self.steps.drain(link.url, self.spool_dir, self.holder)
            except TransientStorageError as exc:
                self.acks.reload()
                row.pending_at_end = self._wanted(link, spool)
                raise self._still_spooled(link, exc) from exc
            link.counted(pending, drained, self.events(link))
        # The step drained through acknowledgements of its own, read from the spool: read what it stored.
        self.acks.reload()
        row.pending_at_end = self._wanted(link, spool)
        if row.position is not None:
            self.steps.record_position(link.url, row.position)
        if row.pending_at_end:
            raise self._still_spooled(link)
        if row.position is None:
            # Nothing uploaded and nothing left: the replica holds what the cursor does.
            row.position = cursor
        self.steps.release_lease(link.url, self.spool_dir)

    def _connect(self, link: ReplicaLink, spool: Spool) -> None:
        """Sealing checked and the lease taken by the run's step (``ReplicaLink.connect``)."""
        link.connect(
            lambda: self.steps.acquire_lease(link.url, self.spool_dir, self.holder), spool, self.acks, self.events(link)
        )

    def _unless_behind(self, link: ReplicaLink) -> None:
        if self.acks.behind(link.location) and not link.resume(self.acks, self.events(link)):
            raise TransientStorageError(
                f"replica {link.location} is behind ({self.acks.mark(link.location).behind_reason}): it resumes "
                "at a snapshot of its own once a run reaches it"
            )

    def _wanted(self, link: ReplicaLink, spool: Spool) -> int:
        return sum(1 for entry in spool.pending() if self.acks.wants(link.location, entry))

    def _still_spooled(self, link: ReplicaLink, cause: TransientStorageError | None = None) -> TransientStorageError:
        where = f" for {link.location}" if self.several else ""
        why = f" ({cause})" if cause is not None else ""
        return TransientStorageError(
            f"{link.report.pending_at_end} entries are still spooled in {self.spool_dir}{where}: storage is "
            f"unreachable{why}; they upload when the next run reaches it"
        )

    def close(self) -> None:
        """Stop the uploaders, each after the upload under way (storage's own timeouts bound it)."""
        uploaders, self._uploaders = self._uploaders, []
        for uploader in uploaders:
            uploader.stop()
