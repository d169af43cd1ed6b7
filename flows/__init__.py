"""walship's Prefect flows: each reads like its pipeline.

No module here uses ``from __future__ import annotations``: ``flow.serve()``
cannot resolve pydantic parameter types declared that way.
"""

from flows.fanout import ship_many_flow, snapshot_many_flow
from flows.restore import restore_flow
from flows.retention import retention_flow
from flows.ship import wal_ship_flow
from flows.snapshot import snapshot_flow
from flows.verify import verify_flow

__all__ = [
    "restore_flow",
    "retention_flow",
    "ship_many_flow",
    "snapshot_flow",
    "snapshot_many_flow",
    "verify_flow",
    "wal_ship_flow",
]
