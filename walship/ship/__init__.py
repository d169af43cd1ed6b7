"""WAL shipping: capture committed frames into the spool (``Shipper``), and one run's window of it (``ShippingRun``)."""

from walship.ship._replicas import ReplicaEvents, ReplicaLink, ReplicaReport
from walship.ship._results import COALESCE_SECONDS, ResyncSummary, ShipConfig, SyncResult
from walship.ship._run import ShipObserver, ShippingRun, ShipReport, ShipSteps
from walship.ship._shipper import Shipper
from walship.ship._steps import (
    LoggingObserver,
    describe_progress,
    describe_replica,
    describe_resync,
    drain_spool,
    let_lease_go,
    take_lease,
)
from walship.ship._watch import budget_window, sync_due

__all__ = [
    "COALESCE_SECONDS",
    "LoggingObserver",
    "ReplicaEvents",
    "ReplicaLink",
    "ReplicaReport",
    "ResyncSummary",
    "ShipConfig",
    "ShipObserver",
    "ShipReport",
    "ShipSteps",
    "Shipper",
    "ShippingRun",
    "SyncResult",
    "budget_window",
    "describe_progress",
    "describe_replica",
    "describe_resync",
    "drain_spool",
    "let_lease_go",
    "sync_due",
    "take_lease",
]
