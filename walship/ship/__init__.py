"""WAL shipping: capture committed frames into the spool (``Shipper``), and one run's window of it (``ShippingRun``)."""

from walship.ship._results import ShipConfig, SyncResult
from walship.ship._run import ShipObserver, ShippingRun, ShipReport, ShipSteps
from walship.ship._shipper import Shipper
from walship.ship._steps import LoggingObserver, drain_spool, let_lease_go, take_lease

__all__ = [
    "LoggingObserver",
    "ShipConfig",
    "ShipObserver",
    "ShipReport",
    "ShipSteps",
    "Shipper",
    "ShippingRun",
    "SyncResult",
    "drain_spool",
    "let_lease_go",
    "take_lease",
]
