"""WAL shipping: capture committed frames into the spool (``Shipper``), and one run's window of it (``ShippingRun``)."""

from walship.ship._results import ShipConfig, SyncResult
from walship.ship._run import ShipObserver, ShippingRun, ShipReport, ShipSteps
from walship.ship._shipper import Shipper

__all__ = ["ShipConfig", "ShipObserver", "ShipReport", "ShipSteps", "Shipper", "ShippingRun", "SyncResult"]
