"""WAL-ship flow: capture committed frames every interval, upload them, for one run window.

Meant to be scheduled so a new run starts as the old one ends (concurrency
limit 1); each run proves that the WAL continues what the previous one
captured, or starts a new generation with a snapshot. Capture is local and
costs no request; the upload task runs only when the spool holds something.
"""

import time
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows._report import human_bytes, publish, run_name
from flows._ship_events import ShipEvents
from tasks import acquire_lease, record_position, release_lease, upload_spool, with_retry_policy
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.errors import TransientStorageError
from walship.models import RetryPolicy, WalPosition
from walship.ship import ShipConfig, Shipper, SyncResult
from walship.spool import Spool, default_spool_dir
from walship.upload import UploadResult


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
    upload_failures: int = 0
    pending_at_end: int = 0
    position: WalPosition | None = None


@flow(name="wal-ship", flow_run_name=lambda: run_name("ship", "database"), log_prints=True)
def wal_ship_flow(
    database: Path,
    replica: str,
    duration: Annotated[float, Field(ge=0)] = 600.0,
    interval: Annotated[float, Field(gt=0, le=3600)] = 1.0,
    once: bool = False,
    spool_dir: Path | None = None,
    database_id: str | None = None,
    level: Annotated[int, Field(ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    lag_threshold_seconds: Annotated[float, Field(gt=0)] = 60.0,
    snapshot_interval: Annotated[float, Field(ge=0)] = 3600.0,
    retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> ShipReport:
    """Ship ``database``'s WAL to ``replica`` for ``duration`` seconds (or one sync with ``once``).

    ``walship.lag.exceeded`` is emitted when the capture-to-storage lag or the
    age of the oldest spooled entry rises above ``lag_threshold_seconds``.
    Every ``snapshot_interval`` seconds (0: never) a changed generation gets a
    new snapshot, so restores start from a recent one."""
    logger = get_run_logger()
    spool_dir = spool_dir or default_spool_dir(database)
    spool = Spool(spool_dir)
    shipper = Shipper(
        database,
        spool,
        ShipConfig(database_id=database_id or database.name, level=level, snapshot_seconds=snapshot_interval),
    )
    # Inside the loop the next interval is the retry: a failed upload must
    # not stop capture for the length of a backoff. The final drain and the
    # other tasks use the full policy.
    upload = with_retry_policy(upload_spool, retry.model_copy(update={"attempts": 0}))
    drain = with_retry_policy(upload_spool, retry)
    report = ShipReport()
    events = ShipEvents(database_id or database.name, replica, lag_threshold_seconds)
    try:
        with_retry_policy(acquire_lease, retry)(replica, spool_dir, database)
        _note(report, events.synced(shipper.open()), logger)
        deadline = time.monotonic() + duration
        while True:
            started = time.monotonic()
            _note(report, events.synced(shipper.sync()), logger)
            if pending := spool.pending():
                try:
                    uploaded = upload(replica, spool_dir, database, level)
                except TransientStorageError as exc:
                    # Storage is down: keep capturing into the durable spool
                    # and try again next interval.
                    report.upload_failures += 1
                    logger.warning("upload failed, %d entries stay spooled: %s", len(spool.pending()), exc)
                else:
                    _count_upload(report, uploaded)
                    events.uploaded(pending, uploaded)
            events.check_lag(spool.pending())
            if once or time.monotonic() >= deadline:
                break
            shipper.wait_for_commits(interval - (time.monotonic() - started), deadline)
        _note(report, events.synced(shipper.finish()), logger)
        if pending := spool.pending():
            drained = drain(replica, spool_dir, database, level)
            _count_upload(report, drained)
            events.uploaded(pending, drained)
        report.pending_at_end = len(spool.pending())
        if report.position is not None:
            with_retry_policy(record_position, retry)(replica, report.position)
        if report.pending_at_end:
            raise TransientStorageError(
                f"{report.pending_at_end} entries are still spooled in {spool_dir}: storage is unreachable; "
                "they upload when the next run reaches it"
            )
        with_retry_policy(release_lease, retry)(replica, spool_dir)
    finally:
        shipper.close()
        spool.close()
        events.close()
        _publish(database, report)
    return report


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
        database.name,
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
            ("upload failures (retried next interval)", str(report.upload_failures)),
            ("still spooled at end", str(report.pending_at_end)),
            ("position", str(report.position or "-")),
        ],
    )
