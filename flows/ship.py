"""WAL-ship flow: capture committed frames every interval, upload them, for one run window.

Meant to be scheduled with overlapping windows: the next run pins the WAL
before this one ends and takes over when it does (``handover_wait``), so one
generation runs for days. Capture is local and costs no request. Uploads
inside the window are direct calls (a failed one is simply tried again next
interval), so a day of shipping adds a handful of task runs per window, not
one per second. While it ships, the run logs a progress line every
``progress_interval`` and keeps its table artifact current in place (one
artifact per run); hand-overs are in its logs too.
"""

from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger

from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import human_bytes, publish, republish, run_name
from flows._ship_events import ShipEvents
from flows._stopping import sigterm_ends_window
from tasks import acquire_lease, record_position, release_lease, upload_spool, with_retry_policy
from tasks._storage import block_credentials
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.layout import parse_segment_key, parse_snapshot_key
from walship.models import RetryPolicy, WalPosition, utcnow
from walship.ship import (
    COALESCE_SECONDS,
    LoggingObserver,
    ReplicaReport,
    ShipConfig,
    ShippingRun,
    ShipReport,
    SyncResult,
)
from walship.spool import PendingEntry
from walship.upload import UploadResult

__all__ = ["ShipReport", "wal_ship_flow"]


@plain_refusals
@flow(
    name="wal-ship",
    description="Capture committed WAL of a live SQLite database every interval and ship it as segments.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def wal_ship_flow(
    database: Annotated[Path, titled("Database file")],
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    more_replicas: Annotated[
        list[str], titled("More replica URLs", schema={"items": {"type": "string", "pattern": REPLICA}})
    ] = [],  # noqa: B006 - never mutated
    duration: Annotated[float, titled("Run duration (s)", ge=0)] = 600.0,
    interval: Annotated[float, titled("Sync interval (s)", gt=0, le=3600)] = 1.0,
    coalesce: Annotated[float, titled("Coalescing window (s)", gt=0, le=3600)] = COALESCE_SECONDS,
    once: Annotated[bool, titled("One sync only")] = False,
    spool_dir: Annotated[Path | None, titled("Spool directory"), optional("string")] = UNSET,
    database_id: Annotated[str | None, titled("Database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    level: Annotated[int, titled("Compression level", ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    lag_threshold_seconds: Annotated[float, titled("Lag alert threshold (s)", gt=0)] = 60.0,
    snapshot_interval: Annotated[float, titled("Snapshot interval (s)", ge=0)] = 3600.0,
    handover_wait: Annotated[float, titled("Hand-over wait (s)", ge=0)] = 0.0,
    progress_interval: Annotated[float, titled("Progress interval (s)", gt=0)] = 60.0,
    spool_cap_mib: Annotated[float, titled("Spool cap (MiB)", gt=0)] = 1024.0,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_recipients: Annotated[list[str], titled("age recipients")] = [],  # noqa: B006 - never mutated
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> ShipReport:
    """Ship ``database``'s WAL to ``replica`` for ``duration`` seconds (or one sync with ``once``).

    Args:
        database: Path of the live SQLite database on the worker's host.
        replica: Where segments go: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        more_replicas: Other replicas that get every segment too, each at its own pace (one capture).
        duration: Seconds the run ships, counted from its start.
        interval: The longest between two syncs (captures and uploads); new commits sync sooner.
        coalesce: New commits sync this long after the previous sync began, sharing one upload (at most interval).
        once: Capture and upload once, then end.
        spool_dir: Local spool directory; empty: beside the database.
        database_id: Name of the database in the replica; empty: the database's file name.
        level: zstd compression level, 1 (fastest) to 22 (smallest).
        lag_threshold_seconds: Lag above which walship.lag.exceeded is emitted (once per crossing).
        snapshot_interval: Seconds between snapshots of a changed generation; 0: never.
        handover_wait: Seconds to wait for a running shipper of the database to end; 0: refuse at once.
        progress_interval: Seconds between two progress lines in the run's logs and updates of its table.
        spool_cap_mib: Warn past this; with several replicas, one down stops holding the spool back past it.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        age_recipients: age public keys (age1...) to encrypt objects for; empty: not encrypted.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    The lag is the capture-to-storage lag or the age of the oldest spooled
    entry. A run that finds another shipper of the database running (an
    overlapping window) holds the WAL, waits up to ``handover_wait`` for it to
    end, and continues its generation."""
    database_id = database_id or database.name
    logger = get_run_logger()
    table = _Table(database, progress_interval, logger)
    run = ShippingRun(
        database,
        [replica, *more_replicas],
        ShipConfig(
            database_id=database_id,
            level=level,
            snapshot_seconds=snapshot_interval,
            recipients=tuple(age_recipients),
            progress_seconds=progress_interval,
            coalesce_seconds=coalesce,
            backfill_seconds=interval,
            spool_cap_bytes=int(spool_cap_mib * (1 << 20)),
        ),
        spool_dir=spool_dir,
        steps=_TaskSteps(retry, credentials_block),
        observer=(observer := _Observer(logger, table)),
        credentials=block_credentials(credentials_block),
    )
    # Each replica is a resource of its own: its shipped batches, lag alarms and completions.
    observer.events = {link.location: ShipEvents(database_id, link.url, lag_threshold_seconds) for link in run.links}
    try:
        with sigterm_ends_window(run.stop):
            report = run.run(duration=duration, interval=interval, once=once, handover_wait=handover_wait)
    finally:
        table.show(run.report, ended=True)
    # Every successful run, idle or busy: what "no successful shipping for N minutes" watches.
    for row in report.replicas:
        observer.events[row.replica].completed(row.segments_uploaded, str(row.position or ""))
    return report


class _TaskSteps:
    """The run's storage steps as task runs with the flow's retry policy (a handful per window)."""

    def __init__(self, retry: RetryPolicy, credentials_block: str | None) -> None:
        self.retry, self.block = retry, credentials_block

    def acquire_lease(self, replica: str, spool_dir: Path, holder: str) -> None:
        with_retry_policy(acquire_lease, self.retry)(replica, spool_dir, holder, self.block)

    def drain(self, replica: str, spool_dir: Path, holder: str) -> UploadResult:
        return with_retry_policy(upload_spool, self.retry)(replica, spool_dir, holder, self.block)

    def record_position(self, replica: str, position: WalPosition) -> None:
        with_retry_policy(record_position, self.retry)(replica, position, self.block)

    def release_lease(self, replica: str, spool_dir: Path) -> None:
        with_retry_policy(release_lease, self.retry)(replica, spool_dir, self.block)


class _Observer(LoggingObserver):
    """The run's log lines (in the flow run's logger), its events by replica location, and its table kept
    current."""

    def __init__(self, logger: Any, table: "_Table") -> None:
        super().__init__(logger)
        self.table = table
        self.events: dict[str, ShipEvents] = {}

    @property
    def first(self) -> ShipEvents:
        return next(iter(self.events.values()))

    def progress(self, database_id: str, report: ShipReport) -> None:
        super().progress(database_id, report)
        self.table.show(report)

    def synced(self, result: SyncResult) -> None:
        self.first.synced(result)
        super().synced(result)

    def uploaded(self, pending: list[PendingEntry], uploaded: UploadResult) -> None:
        self.events[uploaded.replica].uploaded(pending, uploaded)

    def spooled(self, pending: list[PendingEntry], replica: str = "") -> None:
        (self.events[replica] if replica else self.first).check_lag(pending)

    def replica_behind(self, replica: str, reason: str) -> None:
        super().replica_behind(replica, reason)
        self.events[replica].replica_behind(reason)

    def replica_caught_up(self, replica: str, detail: str) -> None:
        super().replica_caught_up(replica, detail)
        self.events[replica].replica_caught_up(detail)

    def close(self) -> None:
        for events in self.events.values():
            events.close()


class _Table:
    """The run's table artifact: published as the run starts, replaced in place as it ships and when it ends."""

    def __init__(self, database: Path, every: float, logger: Any) -> None:
        self.title, self.every, self.logger = f"WAL shipping of {database.name}", every, logger
        self.artifact_id = publish(
            "ship", self.title, _rows(ShipReport(), "starting (a running shipper is waited for)")
        )

    def show(self, report: ShipReport, *, ended: bool = False) -> None:
        window = "ended" if ended else f"shipping; as of {utcnow():%H:%M:%S} UTC, refreshed every {self.every:g} s"
        try:
            republish(self.artifact_id, self.title, _rows(report, window))
        except Exception as exc:  # a table is never worth failing a backup for
            self.logger.warning("the run's table artifact was not updated: %s", exc)


def _rows(report: ShipReport, window: str) -> list[tuple[str, str]]:
    """The table's rows; the segment rows add up: captured + left by an earlier run = uploaded + still spooled."""
    started = zip(report.generations_started, report.generation_reasons, strict=True)
    generations = ", ".join(f"`{g}` ({why})" for g, why in started) or "none (continued)"
    own_commits = report.commits_uploaded - report.commits_uploaded_of_earlier_run
    return [
        ("window", window),
        ("syncs", str(report.syncs)),
        ("segments captured by this run", str(report.segments_captured)),
        ("segments left spooled by an earlier run", str(report.segments_left_by_earlier_run)),
        (
            "segments uploaded",
            f"{report.segments_uploaded} ({report.segments_uploaded_of_this_run} captured by this run, "
            f"{report.segments_uploaded_of_earlier_run} left by an earlier run)",
        ),
        ("segments still spooled", str(report.segments_spooled)),
        ("commits captured by this run", str(report.commits_captured)),
        (
            "commits uploaded",
            f"{report.commits_uploaded} ({own_commits} captured by this run, "
            f"{report.commits_uploaded_of_earlier_run} left by an earlier run)",
        ),
        ("bytes", f"{human_bytes(report.bytes_captured)} captured, {human_bytes(report.bytes_uploaded)} uploaded"),
        ("checkpoints", str(report.checkpoints)),
        ("generations started", generations),
        ("resyncs (pages shipped instead of a full snapshot)", _resyncs(report)),
        ("snapshots uploaded", ", ".join(f"`{k}`" for k in report.snapshots_uploaded) or "none"),
        ("lag at the last sync (capture to storage, or the oldest spooled)", f"{report.lag_seconds:.2f} s"),
        ("max lag (capture to storage)", f"{report.max_lag_seconds:.2f} s"),
        ("took over after", _seconds(report.handover_waited_seconds)),
        ("upload failures (retried next interval)", str(report.upload_failures)),
        ("entries still spooled at end (segments and snapshots)", str(report.pending_at_end)),
        ("position", str(report.position or "none")),
        *(_replica_row(row) for row in report.replicas if len(report.replicas) > 1),
    ]


def _replica_row(row: ReplicaReport) -> tuple[str, str]:
    """State first, then counts: a long cell is cut at the table's edge."""
    state = f"behind since {row.behind_since:%H:%M:%S} UTC" if row.behind_since is not None else "keeping up"
    resumed = [parsed.sequence for key in row.resumed_at if (parsed := parse_snapshot_key(key)) is not None]
    if resumed:
        state += f", resumed at its snapshot {', '.join(map(str, resumed))}"
    position = row.position.sequence if row.position is not None else "-"
    return (
        f"replica `{row.replica}`",
        f"{state}; at sequence {position}; lag {row.lag_seconds:.2f} s (max {row.max_lag_seconds:.2f} s); "
        f"{row.segments_uploaded} segments ({human_bytes(row.bytes_uploaded)}); {row.upload_failures} failed uploads",
    )


def _resyncs(report: ShipReport) -> str:
    # The numbers first and the sequence, not the key: a long key in a table cell hides what follows it.
    return (
        "; ".join(
            f"{r.pages:,} of {r.page_count:,} pages, {human_bytes(r.stored_bytes)}, "
            f"as sequence {_sequence(r.key)} ({r.reason})"
            for r in report.resyncs
        )
        or "none"
    )


def _sequence(key: str) -> str:
    parsed = parse_segment_key(key)
    return str(parsed.sequence) if parsed is not None else key


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
