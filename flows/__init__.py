"""walship's Prefect flows: each reads like its pipeline.

No module here uses ``from __future__ import annotations``: ``flow.serve()``
cannot resolve pydantic parameter types declared that way.
"""

from flows.restore import restore_flow
from flows.ship import wal_ship_flow
from flows.snapshot import snapshot_flow

__all__ = ["restore_flow", "snapshot_flow", "wal_ship_flow"]
