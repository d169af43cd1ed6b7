"""WAL shipping, the local half: capture committed frames into the spool (``walship.upload`` drains it)."""

from walship.ship._results import ShipConfig, SyncResult
from walship.ship._shipper import Shipper

__all__ = ["ShipConfig", "Shipper", "SyncResult"]
