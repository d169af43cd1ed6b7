"""One database of a fleet: its run while held, its row, and the record its spool keeps when it is left caught up."""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from walship.errors import StorageError
from walship.fleet._activity import Activity, Signature
from walship.fleet._plan import FleetMember
from walship.fleet._rows import FleetRow
from walship.fleet._stores import SharedStores
from walship.ship import ReplicaEvents, ReplicaLink, ShippingRun, ShipReport, SyncResult
from walship.spool import CAUGHT_UP, PendingEntry, default_spool_dir
from walship.storage import ObjectStore
from walship.upload import UploadResult

__all__ = [
    "FleetEvent",
    "Member",
    "MemberRun",
    "Notify",
    "RowObserver",
    "Totals",
    "caught_up_record",
    "forget_caught_up",
    "holding_on",
    "read_caught_up",
    "unfinished_replicas",
]

log = logging.getLogger(__name__)


class FleetEvent(BaseModel):
    """A change or a failure worth telling (not every sync): new generation, upload failing or back, a stop."""

    kind: str  # generation | resynced | upload-failed | upload-recovered | failed | removed
    database: str
    replica: str
    detail: str = ""


Notify = Callable[[FleetEvent], None]


@dataclass
class Totals:
    """What a database's earlier runs of this window did (a parked database's run ended)."""

    segments_uploaded: int = 0
    syncs: int = 0
    upload_failures: int = 0
    generations: list[str] = field(default_factory=list)
    max_lag_seconds: float = 0.0


@dataclass(eq=False)
class Member:
    spec: FleetMember
    row: FleetRow
    activity: Activity
    run: ShippingRun | None = None  # None while parked
    hot_until: float = 0.0
    idle_delay: float = 0.0
    watched: bool = False  # the kernel tells of changes to its files (``ChangeWatch``)
    due: float = 0.0  # when the scheduler looks next
    last_step: float = field(default_factory=time.monotonic)
    last_change: float = field(default_factory=time.monotonic)
    busy: bool = False
    done: bool = False
    park_again: bool = False  # its last end changed the files: parked again soon if nothing else does
    begun: bool = False  # a run of it began in this window (the first one waits for a hand-over)
    totals: Totals = field(default_factory=Totals)

    @classmethod
    def of(cls, spec: FleetMember) -> "Member":
        row = FleetRow(database=str(spec.database), replica=spec.replica, more_replicas=spec.replicas[1:])
        return cls(spec, row, Activity(spec.database.absolute()))


def caught_up_record(seen: Signature, position: object, replicas: list[str]) -> bytes:
    record = {"signature": seen, "position": None if position is None else str(position), "replicas": replicas}
    return json.dumps(record).encode()


def forget_caught_up(database: Path) -> None:
    (default_spool_dir(database) / CAUGHT_UP).unlink(missing_ok=True)


def read_caught_up(database: Path, replicas: list[str]) -> tuple[Signature, str | None] | None:
    """The signature and position a run recorded when it ended caught up to ``replicas``; None when none is
    recorded (or damaged), or when it was for other replicas (a template added: the new one has nothing yet)."""
    try:
        raw = json.loads((default_spool_dir(database) / CAUGHT_UP).read_bytes())
        seen = Activity.parse(raw["signature"])
        position = raw.get("position")
        # A record written before a fleet could have several replicas is of its one replica.
        recorded = sorted(raw.get("replicas") or replicas[:1])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if seen is None or recorded != sorted(replicas):
        return None
    return seen, position if isinstance(position, str) else None


def holding_on(run: ShippingRun | None) -> bool:
    """Whether a run of several replicas has one that is not keeping up (down, never reached, or behind).

    Parking ends the run, and an end with a replica down fails the database
    for the rest of the window, the others' shipping with it: held, the run
    keeps shipping to the others and tries that one again at each idle sync.
    """
    if run is None or len(run.links) < 2:
        return False
    acks = run.replica_set.acks
    return any(link.failing or not link.connected or acks.behind(link.location) for link in run.links)


def unfinished_replicas(run: ShippingRun) -> list[str]:
    """After a run of several replicas failed at its end: the replicas it could not finish (down, or behind), for
    the fleet's failure to name."""
    return [link.location for link in run.links if link.failing] if len(run.links) > 1 else []


class MemberRun(ShippingRun):
    """A database's run whose uploads go through the fleet's shared storage clients."""

    stores: SharedStores

    def _open_store(self, url: str) -> ObjectStore:
        return self.stores.open(url)

    def _events(self, link: ReplicaLink) -> ReplicaEvents:
        """With several replicas, what each one does is told to the row with its URL: the run's observer hears
        uploads and failures without saying whose, and behind or caught up by location."""
        events = super()._events(link)
        if len(self.links) < 2:
            return events
        row, told_uploaded, told_failed = self.observer, events.uploaded, events.failed
        assert isinstance(row, RowObserver)

        def uploaded(pending: list[PendingEntry], result: UploadResult) -> None:
            told_uploaded(pending, result)
            row.replica_uploaded(link.url, result)

        def failed(still_spooled: int, error: StorageError) -> None:
            told_failed(still_spooled, error)
            row.replica_failed(link.url, still_spooled, error)

        def behind(location: str, reason: str) -> None:
            row.replica_behind(link.url, reason)

        def caught_up(location: str, detail: str) -> None:
            row.replica_caught_up(link.url, detail)

        return ReplicaEvents(uploaded, failed, behind, caught_up)


class RowObserver:
    """A database's ``ShipObserver``: keeps its row current and tells the fleet of changes and failures only.

    With several replicas the run's uploaders tell it from their own threads,
    each naming its replica (``MemberRun._events``).
    """

    def __init__(self, row: FleetRow, notify: Notify) -> None:
        self.row, self.notify = row, notify
        self._several = bool(row.more_replicas)
        self._failing: dict[str, str] = {}  # replica ("": the only one) -> its last error
        self._pending: dict[str, int] = {}
        self._lock = threading.Lock()

    def _event(self, kind: str, detail: str, replica: str = "") -> None:
        replica = replica or self.row.replica
        self.notify(FleetEvent(kind=kind, database=self.row.database, replica=replica, detail=detail))

    def synced(self, result: SyncResult) -> None:
        if result.new_generation:
            self._event("generation", f"{result.new_generation}: {result.reason}")
        if result.resync:
            resync = result.resync
            self._event("resynced", f"{resync.key}: {resync.pages} of {resync.page_count} pages ({resync.reason})")

    def uploaded(self, pending: list[PendingEntry], uploaded: UploadResult) -> None:
        if not self._several:
            self.replica_uploaded("", uploaded)

    def upload_failed(self, still_spooled: int, error: Exception) -> None:
        if not self._several:
            self.replica_failed("", still_spooled, error)

    def replica_uploaded(self, replica: str, uploaded: UploadResult) -> None:
        with self._lock:
            if self._failing.pop(replica, None) is None:
                return
            self.row.last_error = next(iter(self._failing.values()), None)
        self._event("upload-recovered", f"{uploaded.segments} segments uploaded", replica)

    def replica_failed(self, replica: str, still_spooled: int, error: Exception) -> None:
        with self._lock:
            first = replica not in self._failing
            self._failing[replica] = f"replica {replica}: {error}" if replica else str(error)
            self.row.last_error, self.row.pending = self._failing[replica], still_spooled
        if first:
            self._event("upload-failed", f"{still_spooled} entries stay spooled: {error}", replica)

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None:
        with self._lock:
            # With several replicas, what the one furthest behind still needs.
            self._pending[replica] = len(pending)
            self.row.pending = max(self._pending.values())

    def replica_behind(self, replica: str, reason: str) -> None:
        self._event("replica-behind", f"{replica}: {reason}", replica)

    def replica_caught_up(self, replica: str, detail: str) -> None:
        self._event("replica-caught-up", f"{replica}: {detail}", replica)

    def handover(self, message: str) -> None:
        log.info("%s", message)

    def progress(self, database_id: str, report: ShipReport) -> None:
        pass  # the fleet's table holds every database's row; a line per database would bury it

    def close(self) -> None:
        pass
