"""Standalone snapshots: the streamed snapshot and its checks, and a snapshot run composed once for both runners."""

from walship.snapshot._run import SnapshotReport, SnapshotSteps, StoreSnapshotSteps, run_snapshot
from walship.snapshot._stream import (
    check_database_id,
    check_not_shipped,
    describe_new_snapshot,
    recorded_database_id,
    stream_snapshot,
    upload_snapshot,
)

__all__ = [
    "SnapshotReport",
    "SnapshotSteps",
    "StoreSnapshotSteps",
    "check_database_id",
    "check_not_shipped",
    "describe_new_snapshot",
    "recorded_database_id",
    "run_snapshot",
    "stream_snapshot",
    "upload_snapshot",
]
