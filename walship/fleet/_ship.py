"""A fleet's window, composed once for both runners: ship, report, then the verdict.

The CLI's direct mode and the Prefect flow differ only in what surrounds the
window (how a signal ends it, where events and the report go): they hand
``ship_fleet`` those, so the rows, the summary and the failure are the same
in both and neither can return a failed database as a success.
"""

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

from walship.errors import FleetFailedError
from walship.fleet._member import Notify
from walship.fleet._plan import FleetMember
from walship.fleet._rows import FleetReport
from walship.fleet._run import PARK_AFTER, FleetShipping
from walship.fleet._stores import SharedStores
from walship.ship import ShipConfig, ShipSteps

__all__ = ["ship_fleet"]

# Given the fleet's ``stop``: a context the window runs in (e.g. one that calls it on SIGTERM).
Stopping = Callable[[Callable[[], None]], AbstractContextManager[object]]


def _no_signals(stop: Callable[[], None]) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


def ship_fleet(
    members: list[FleetMember],
    steps: ShipSteps,
    *,
    stores: SharedStores,
    duration: float,
    interval: float,
    once: bool,
    level: int,
    snapshot_interval: float,
    handover_wait: float,
    park_after: float = PARK_AFTER,
    coalesce: float = 0.0,
    recipients: tuple[str, ...] = (),
    notify: Notify | None = None,
    stopping: Stopping = _no_signals,
    publish: Callable[[FleetReport], None] | None = None,
) -> FleetReport:
    """Ship ``members`` for one window, each under its file name as database id; a failed database raises.

    ``publish`` sees the whole report once the window is over, failed or not.
    Raises ``FleetFailedError`` (holding the report) when any database failed,
    only after every database finished.
    """
    fleet = FleetShipping(
        members,
        lambda m: ShipConfig(
            database_id=m.database.name,
            level=level,
            snapshot_seconds=snapshot_interval,
            recipients=recipients,
            backfill_seconds=interval,
        ),
        steps,
        stores=stores,
        interval=interval,
        coalesce=coalesce,
        handover_wait=handover_wait,
        park_after=park_after,
        notify=notify,
    )
    with stopping(fleet.stop):
        report = fleet.run(duration=duration, once=once)
    if publish is not None:
        publish(report)
    if report.failed:
        raise FleetFailedError(report)
    return report
