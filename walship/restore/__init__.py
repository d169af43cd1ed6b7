"""Restore: a replica's snapshot and WAL verified and placed whole, the start chosen once for both runners."""

from walship.restore._apply import MISSING_MARGIN_SECONDS, point_in_time, restore_snapshot
from walship.restore._run import RestoreSteps, StoreRestoreSteps, run_restore

__all__ = [
    "MISSING_MARGIN_SECONDS",
    "RestoreSteps",
    "StoreRestoreSteps",
    "point_in_time",
    "restore_snapshot",
    "run_restore",
]
