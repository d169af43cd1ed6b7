"""A shipping run's storage steps and log lines, once, for whoever runs it.

The flow runs each step as a task (with retries) and the CLI calls it with
``walship.retry.retrying``: both call these. ``LoggingObserver`` writes the
lines an operator should see of a run, to the logger it is given (the flow
run's logger, or ``walship``'s on a terminal).
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from walship import lease, upload
from walship.errors import StorageError
from walship.ship._replicas import ReplicaReport
from walship.ship._results import ResyncSummary, SyncResult, generation_log_level
from walship.spool import PendingEntry, Spool
from walship.storage import ObjectStore
from walship.units import human_bytes

if TYPE_CHECKING:
    from walship.ship._run import ShipReport

__all__ = [
    "LoggingObserver",
    "describe_progress",
    "describe_replica",
    "describe_resync",
    "drain_spool",
    "let_lease_go",
    "take_lease",
]


def take_lease(store: ObjectStore, spool_dir: Path, holder: str) -> None:
    """Take the replica's lease for this run and remember it in the spool (the run's lock holder has it open)."""
    Spool(spool_dir, lock=False).save_lease(store.location, lease.acquire_lease(store, holder))


def drain_spool(store: ObjectStore, spool_dir: Path, holder: str) -> upload.UploadResult:
    """Upload what the spool holds, in order (the run's final drain)."""
    return upload.upload_pending(store, Spool(spool_dir, lock=False), holder=holder)


def describe_resync(resync: ResyncSummary) -> str:
    """One line on a resync: why, and what it shipped against the whole database."""
    return (
        f"resync {resync.key}: {resync.pages} of {resync.page_count} pages changed "
        f"({human_bytes(resync.stored_bytes)} stored) instead of a full snapshot; {resync.reason}"
    )


def describe_progress(database_id: str, report: "ShipReport") -> str:
    """One line on a window so far: what it captured and uploaded (and whose), what waits, the lag, the position."""
    uploaded = f"{report.segments_uploaded} uploaded"
    if report.segments_left_by_earlier_run:
        uploaded += (
            f" ({report.segments_uploaded_of_this_run} captured by this run, "
            f"{report.segments_uploaded_of_earlier_run} left by an earlier run)"
        )
    line = (
        f"progress of {database_id}: {report.segments_captured} segments captured "
        f"({report.commits_captured} commits), {uploaded}, {report.segments_spooled} still spooled; "
        f"lag {report.lag_seconds:.1f} s; position {report.position or '-'}"
    )
    if len(report.replicas) > 1:
        lags = (f"{r.replica} {'behind' if r.behind_since else f'{r.lag_seconds:.1f} s'}" for r in report.replicas)
        line += f"; lag by replica: {', '.join(lags)}"
    return line


def describe_replica(row: ReplicaReport) -> str:
    """One line on what one of a run's replicas received, and whether it is behind."""
    line = (
        f"replica {row.replica}: {row.segments_uploaded} segments ({row.commits_uploaded} commits) uploaded; "
        f"position {row.position or '-'}; lag {row.lag_seconds:.1f} s (max {row.max_lag_seconds:.1f} s)"
    )
    if row.upload_failures:
        line += f"; {row.upload_failures} failed uploads"
    if row.behind_since is not None:
        line += f"; behind since {row.behind_since:%Y-%m-%d %H:%M:%S}Z"
    if row.resumed_at:
        line += f"; resumed at {', '.join(row.resumed_at)}"
    return line


def let_lease_go(store: ObjectStore, spool_dir: Path) -> None:
    """Release the lease this spool last took, so a successor need not wait for it to expire."""
    held = Spool(spool_dir, lock=False).load_lease(store.location)
    if held is not None:
        lease.release_lease(store, held)


class LoggingObserver:
    """A ``ShipObserver`` that logs what an operator should see: new generations, snapshots, failed uploads."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self.logger = logger

    def synced(self, result: SyncResult) -> None:
        if result.new_generation:
            level = generation_log_level(result.reason or "")
            self.logger.log(level, "new generation %s: %s", result.new_generation, result.reason)
        if result.snapshot:
            self.logger.info("snapshot %s taken within the generation", result.snapshot)
        if result.resync:
            self.logger.warning("%s", describe_resync(result.resync))

    def uploaded(self, pending: list[PendingEntry], uploaded: upload.UploadResult) -> None:
        pass

    def upload_failed(self, still_spooled: int, error: StorageError) -> None:
        self.logger.warning("upload failed, %d entries stay spooled: %s", still_spooled, error)

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None:
        pass

    def replica_behind(self, replica: str, reason: str) -> None:
        self.logger.warning(
            "replica %s is behind: %s; it resumes at a snapshot of its own when it answers", replica, reason
        )

    def replica_caught_up(self, replica: str, detail: str) -> None:
        self.logger.info("replica %s caught up: %s", replica, detail)

    def handover(self, message: str) -> None:
        # Overlapping windows hand over every time: routine, not a warning.
        self.logger.info("%s", message)

    def progress(self, database_id: str, report: "ShipReport") -> None:
        self.logger.info("%s", describe_progress(database_id, report))

    def close(self) -> None:
        pass
