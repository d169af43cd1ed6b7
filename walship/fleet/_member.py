"""One database of a fleet: its run while held, its row, and the record its spool keeps when it is left caught up."""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from walship.fleet._activity import Activity, Signature
from walship.fleet._plan import FleetMember
from walship.fleet._rows import FleetRow
from walship.fleet._stores import SharedStores
from walship.ship import ShippingRun, ShipReport, SyncResult
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
    "read_caught_up",
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


def caught_up_record(seen: Signature, position: object) -> bytes:
    return json.dumps({"signature": seen, "position": None if position is None else str(position)}).encode()


def forget_caught_up(database: Path) -> None:
    (default_spool_dir(database) / CAUGHT_UP).unlink(missing_ok=True)


def read_caught_up(database: Path) -> tuple[Signature, str | None] | None:
    """The signature and position a run recorded when it ended caught up; None when none is recorded (or damaged)."""
    try:
        raw = json.loads((default_spool_dir(database) / CAUGHT_UP).read_bytes())
        seen = Activity.parse(raw["signature"])
        position = raw.get("position")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if seen is None else (seen, position if isinstance(position, str) else None)


class MemberRun(ShippingRun):
    """A database's run whose uploads go through the fleet's shared storage clients."""

    stores: SharedStores

    def _open_store(self, url: str) -> ObjectStore:
        return self.stores.open(url)


class RowObserver:
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

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None:
        self.row.pending = len(pending)

    def replica_behind(self, replica: str, reason: str) -> None:
        self._event("replica-behind", f"{replica}: {reason}")

    def replica_caught_up(self, replica: str, detail: str) -> None:
        self._event("replica-caught-up", f"{replica}: {detail}")

    def handover(self, message: str) -> None:
        log.info("%s", message)

    def progress(self, database_id: str, report: ShipReport) -> None:
        pass  # the fleet's table holds every database's row; a line per database would bury it

    def close(self) -> None:
        pass
