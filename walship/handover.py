"""Taking hold of a database to ship it: alone at once, or after the running shipper's run ends.

A scheduled deployment overlaps its runs so that no moment of the WAL goes
unwatched: the next run pins the WAL (``WalCapture``) *before* the running one
lets go, waits for the database's shipper lock, then continues the same
generation from the spool's cursor. While it waits it moves its pin forward
with the running shipper's cursor (read from that shipper's spool), so the
application's checkpoints are not held back by the waiting run either; a pin
that lets the WAL restart is taken only at a point the running shipper has
captured. If every pin it held was of that kind, the new run is *guarded*: any
WAL restart since then lost nothing (see ``walship.sqlite`` lineage rules).
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from walship.dblock import DatabaseLock, ShipperIdentity, who
from walship.errors import HandoverTimedOutError
from walship.spool import read_cursor
from walship.sqlite import Covers, WalCapture, WalIndexState, covered_by

__all__ = ["HeldDatabase", "Told", "hold_database"]

log = logging.getLogger(__name__)

# Where a waiting run says what it waits for and when it took over: a run's own log.
Told = Callable[[str], None]

_POLL = 0.05


@dataclass
class HeldDatabase:
    """A database this run may ship: its pin, its lock, and whether the WAL stayed guarded since a predecessor."""

    capture: WalCapture
    lock: DatabaseLock
    guarded: bool = False
    predecessor: ShipperIdentity | None = None
    waited_seconds: float = 0.0

    def release(self) -> None:
        self.capture.close()
        self.lock.release()


def hold_database(
    database: Path, spool_dir: Path, identity: ShipperIdentity, *, wait: float = 0.0, told: Told = log.info
) -> HeldDatabase:
    """Pin the database's WAL and take its shipper lock, waiting up to ``wait`` seconds for a running shipper.

    A hand-over is the normal course of overlapping windows, nothing to act
    on: ``told`` hears that the run waits and when it took over.

    Raises ``ShipperRunningError`` (exit 2) when another shipper holds it and
    ``wait`` is 0, and ``HandoverTimedOutError`` when it still runs after ``wait``.
    """
    capture = WalCapture(database)
    lock = DatabaseLock(database)
    try:
        if lock.try_acquire(identity):
            capture.pin_now(covered_by(read_cursor(spool_dir)))
            return HeldDatabase(capture, lock)
        if wait <= 0:
            raise lock.refusal()
        return _take_over(capture, lock, identity, spool_dir, wait, told)
    except BaseException:
        capture.close()
        lock.release()
        raise


def _take_over(
    capture: WalCapture, lock: DatabaseLock, identity: ShipperIdentity, spool_dir: Path, wait: float, told: Told
) -> HeldDatabase:
    predecessor = lock.holder()
    spool = predecessor.spool if predecessor is not None else spool_dir
    told(
        f"database {capture.database} is shipped by {who(predecessor)}: "
        f"holding its WAL and waiting up to {wait:.0f} s to take over"
    )
    started = time.monotonic()
    guarded = capture.pin_now(_following(spool)) and spool == spool_dir.resolve()
    while not lock.try_acquire(identity):
        if time.monotonic() - started > wait:
            raise HandoverTimedOutError(
                f"database {capture.database} is still shipped by {who(predecessor)} after {wait:.0f} s: "
                "wait for its run to end, or stop it"
            )
        if capture.wal_index() != capture.pin:
            capture.move_pin(_following(spool))
        time.sleep(_POLL)
    waited = time.monotonic() - started
    told(f"took over database {capture.database} after {waited:.1f} s")
    return HeldDatabase(capture, lock, guarded=guarded, predecessor=predecessor, waited_seconds=waited)


def _following(spool: Path) -> Covers:
    """``Covers`` by the running shipper's cursor as it is at each call (it moves while we wait)."""

    def covers(state: WalIndexState) -> bool:
        return covered_by(read_cursor(spool))(state)

    return covers
