"""A fleet: many databases of one host shipped by one process, each into a replica of its own per template.

``plan_fleet`` turns patterns into databases and replicas; ``FleetShipping``
runs one ``walship.ship.ShippingRun`` per database (its own spool, lock,
lease and generations, hand-over included) and schedules their syncs from
one thread, so that an idle database costs a file ``stat`` now and then
rather than a thread polling its WAL index. ``ship_fleet`` is a window of it
with its verdict, as both the CLI and the flow run it.
"""

from walship.fleet._activity import Activity
from walship.fleet._member import FleetEvent
from walship.fleet._plan import NAME_PLACEHOLDER, FleetMember, plan_fleet, replica_for
from walship.fleet._rows import FleetReport, FleetRow, RowState
from walship.fleet._run import PARK_AFTER, FleetShipping
from walship.fleet._ship import ship_fleet
from walship.fleet._steps import RetryingSteps
from walship.fleet._stores import SharedStores

__all__ = [
    "NAME_PLACEHOLDER",
    "PARK_AFTER",
    "Activity",
    "FleetEvent",
    "FleetMember",
    "FleetReport",
    "FleetRow",
    "FleetShipping",
    "RetryingSteps",
    "RowState",
    "SharedStores",
    "plan_fleet",
    "replica_for",
    "ship_fleet",
]
