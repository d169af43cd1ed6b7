"""WAL-ship flow: capture committed frames every interval, upload them, for one run window.

Meant to be scheduled with overlapping windows: the next run pins the WAL
before this one ends and takes over when it does (``handover_wait``), so one
generation runs for days. Capture is local and costs no request. Uploads
inside the window are direct calls (a failed one is simply tried again next
interval), so a day of shipping adds a handful of task runs per window, not
one per second: the run's progress is in its events and artifact.
"""

import os
import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows._failure import on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, optional, titled
from flows._report import human_bytes, publish, run_name
from flows._ship_events import ShipEvents
from tasks import acquire_lease, record_position, release_lease, upload_spool, with_retry_policy
from tasks._storage import open_replica
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.dblock import ShipperIdentity
from walship.errors import TransientStorageError
from walship.handover import hold_database
from walship.lease import holder_for
from walship.models import RetryPolicy, WalPosition
from walship.ship import ShipConfig, Shipper, SyncResult
from walship.spool import Spool, default_spool_dir
from walship.storage import ObjectStore
from walship.upload import UploadResult, upload_pending


class ShipReport(BaseModel):
    """What one shipping run did."""

    syncs: int = 0
    segments_captured: int = 0
    commits_captured: int = 0
    bytes_captured: int = 0
    segments_uploaded: int = 0
    bytes_uploaded: int = 0
    snapshots_uploaded: list[str] = Field(default_factory=list)
    checkpoints: int = 0
    generations_started: list[str] = Field(default_factory=list)
    generation_reasons: list[str] = Field(default_factory=list)
    max_lag_seconds: float = 0.0
    handover_waited_seconds: float | None = None
    upload_failures: int = 0
    pending_at_end: int = 0
    position: WalPosition | None = None


@flow(
    name="wal-ship",
    description="Capture committed WAL of a live SQLite database every interval and ship it as segments.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    log_prints=True,
)
def wal_ship_flow(
    database: Annotated[Path, titled("Database file")],
    replica: Annotated[str, titled("Replica URL", pattern=REPLICA)],
    duration: Annotated[float, titled("Run duration (s)", ge=0)] = 600.0,
    interval: Annotated[float, titled("Sync interval (s)", gt=0, le=3600)] = 1.0,
    once: Annotated[bool, titled("One sync only")] = False,
    spool_dir: Annotated[Path | None, titled("Spool directory"), optional("string")] = None,
    database_id: Annotated[
        str | None, titled("Database id", pattern=DATABASE_ID), optional("string", pattern=DATABASE_ID)
    ] = None,
    level: Annotated[int, titled("Compression level", ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    lag_threshold_seconds: Annotated[float, titled("Lag alert threshold (s)", gt=0)] = 60.0,
    snapshot_interval: Annotated[float, titled("Snapshot interval (s)", ge=0)] = 3600.0,
    handover_wait: Annotated[float, titled("Hand-over wait (s)", ge=0)] = 0.0,
    credentials_block: Annotated[
        str | None, titled("Credentials block", pattern=BLOCK_NAME), optional("string", pattern=BLOCK_NAME)
    ] = None,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> ShipReport:
    """Ship ``database``'s WAL to ``replica`` for ``duration`` seconds (or one sync with ``once``).

    Args:
        database: Path of the live SQLite database on the worker's host.
        replica: Where segments go: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        duration: Seconds the run ships, counted from its start.
        interval: Seconds between two syncs (captures and uploads).
        once: Capture and upload once, then end.
        spool_dir: Local spool directory; empty: beside the database.
        database_id: Name of the database in the replica; empty: the database's file name.
        level: zstd compression level, 1 (fastest) to 22 (smallest).
        lag_threshold_seconds: Lag above which walship.lag.exceeded is emitted (once per crossing).
        snapshot_interval: Seconds between snapshots of a changed generation; 0: never.
        handover_wait: Seconds to wait for a running shipper of the database to end; 0: refuse at once.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    The lag is the capture-to-storage lag or the age of the oldest spooled
    entry. A run that finds another shipper of the database running (an
    overlapping window) holds the WAL, waits up to ``handover_wait`` for it to
    end, and continues its generation."""
    logger = get_run_logger()
    # The window counts from the run's start, whatever it waited for: a run
    # that took over late must still end in time to hand over to the next.
    deadline = time.monotonic() + duration
    spool_dir = (spool_dir or default_spool_dir(database)).resolve()
    run = f"{os.getpid()}-{secrets.token_hex(3)}"
    holder = holder_for(database, run)
    # Pin the WAL and take the database's lock first: a second shipper is
    # refused before it touches any spool or replica.
    held = hold_database(database, spool_dir, ShipperIdentity.this_process(run, spool_dir, replica), wait=handover_wait)
    report = ShipReport(handover_waited_seconds=held.waited_seconds if held.predecessor else None)
    try:
        spool = Spool(spool_dir)
    except BaseException:
        held.release()
        raise
    shipper = Shipper(
        database,
        spool,
        ShipConfig(database_id=database_id or database.name, level=level, snapshot_seconds=snapshot_interval),
        capture=held.capture,
        guarded=held.guarded,
    )
    drain = with_retry_policy(upload_spool, retry)
    events = ShipEvents(database_id or database.name, replica, lag_threshold_seconds)
    try:
        with_retry_policy(acquire_lease, retry)(replica, spool_dir, holder, credentials_block)
        _note(report, events.synced(shipper.open()), logger)
        window = _Window(shipper, open_replica(replica, credentials_block), holder, level, events, report, logger)
        window.run(deadline=deadline, interval=interval, once=once)
        _note(report, events.synced(shipper.finish()), logger)
        if pending := spool.pending():
            drained = drain(replica, spool_dir, holder, level, credentials_block)
            _count_upload(report, drained)
            events.uploaded(pending, drained)
        report.pending_at_end = len(spool.pending())
        if report.position is not None:
            with_retry_policy(record_position, retry)(replica, report.position, credentials_block)
        if report.pending_at_end:
            raise TransientStorageError(
                f"{report.pending_at_end} entries are still spooled in {spool_dir}: storage is unreachable; "
                "they upload when the next run reaches it"
            )
        with_retry_policy(release_lease, retry)(replica, spool_dir, credentials_block)
        # Every successful run, idle or busy: what "no successful shipping for N minutes" watches.
        events.completed(report.segments_uploaded, str(report.position or ""))
    finally:
        shipper.close()
        spool.close()
        held.release()
        events.close()
        _publish(database, report)
    return report


class _Window:
    """The run's window: sync, upload, wait; the pin is tended beside it all along."""

    def __init__(
        self,
        shipper: Shipper,
        store: ObjectStore,
        holder: str,
        level: int,
        events: ShipEvents,
        report: ShipReport,
        logger: Any,
    ) -> None:
        self.shipper, self.store, self.holder, self.level = shipper, store, holder, level
        self.events, self.report, self.logger = events, report, logger

    def run(self, *, deadline: float, interval: float, once: bool) -> None:
        self.shipper.start_tending()
        try:
            while True:
                started = time.monotonic()
                _note(self.report, self.events.synced(self.shipper.sync()), self.logger)
                self.upload()
                self.events.check_lag(self.shipper.spool.pending())
                if once or time.monotonic() >= deadline:
                    break
                self.shipper.wait_for_commits(interval - (time.monotonic() - started), deadline)
        finally:
            # Before the final capture: nothing is spooled behind the final drain.
            self.shipper.stop_tending()

    def upload(self) -> None:
        """Upload what is spooled; a failure leaves it spooled for the next interval (no backoff inside)."""
        spool = self.shipper.spool
        if not (pending := spool.pending()):
            return
        try:
            uploaded = upload_pending(self.store, spool, holder=self.holder, level=self.level)
        except TransientStorageError as exc:
            # Storage is down: keep capturing into the durable spool and try again next interval.
            self.report.upload_failures += 1
            self.logger.warning("upload failed, %d entries stay spooled: %s", len(spool.pending()), exc)
        else:
            _count_upload(self.report, uploaded)
            self.events.uploaded(pending, uploaded)


def _count_upload(report: ShipReport, uploaded: UploadResult) -> None:
    report.segments_uploaded += uploaded.segments
    report.bytes_uploaded += uploaded.bytes
    report.snapshots_uploaded += uploaded.snapshots
    report.max_lag_seconds = max(report.max_lag_seconds, uploaded.oldest_captured_at_lag_seconds or 0)
    report.position = uploaded.last_position or report.position


def _note(report: ShipReport, result: SyncResult, logger: Any) -> None:
    report.syncs += 1
    report.segments_captured += result.segments
    report.commits_captured += result.commits
    report.bytes_captured += result.bytes
    report.checkpoints += int(result.checkpointed)
    if result.new_generation:
        report.generations_started.append(result.new_generation)
        report.generation_reasons.append(result.reason or "")
        logger.warning("new generation %s: %s", result.new_generation, result.reason)
    if result.snapshot:
        logger.info("snapshot %s taken within the generation", result.snapshot)


def _publish(database: Path, report: ShipReport) -> None:
    started = zip(report.generations_started, report.generation_reasons, strict=True)
    generations = ", ".join(f"`{g}` ({why})" for g, why in started) or "none (continued)"
    publish(
        "ship",
        f"WAL shipping of {database.name}",
        [
            ("syncs", str(report.syncs)),
            ("segments captured / uploaded", f"{report.segments_captured} / {report.segments_uploaded}"),
            ("commits captured", str(report.commits_captured)),
            ("bytes", f"{human_bytes(report.bytes_captured)} captured, {human_bytes(report.bytes_uploaded)} uploaded"),
            ("checkpoints", str(report.checkpoints)),
            ("generations started", generations),
            ("snapshots uploaded", ", ".join(f"`{k}`" for k in report.snapshots_uploaded) or "none"),
            ("max lag (capture to storage)", f"{report.max_lag_seconds:.2f} s"),
            ("took over after", _seconds(report.handover_waited_seconds)),
            ("upload failures (retried next interval)", str(report.upload_failures)),
            ("still spooled at end", str(report.pending_at_end)),
            ("position", str(report.position or "-")),
        ],
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
