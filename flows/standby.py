"""Standby flow: keep a readable copy of a replica at its newest point, for one run window.

Meant to be scheduled with overlapping windows, as ``wal-ship`` is: the
next run waits (``handover_wait``) for this one to seal the copy and let go
of its lock (``walship.standby``), then follows on from the copy's
recorded point, so readers see it move all day. The run keeps its table
artifact current in place (position, lag, segments applied, bytes
downloaded) and emits ``walship.standby.lagging`` when an update's lag
crosses ``lag_threshold_seconds``, ``walship.standby.recovered`` when it is
back under it, and ``walship.standby.completed`` at the end of the window.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows._events import emit
from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, DATABASE_ID, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import human_bytes, publish, republish, run_name
from flows._ship_events import LagWatch
from flows._stopping import sigterm_ends_window
from flows._subject import database_of
from tasks import catch_up_copy, with_retry_policy
from tasks._keys import load_keys
from tasks._storage import open_replica
from walship.models import RetryPolicy, utcnow
from walship.standby import CaughtUp, FollowerIdentity, FollowReport, follow_window

__all__ = ["FollowReport", "standby_flow"]


@plain_refusals
@flow(
    name="standby",
    description="Keep a readable copy of a replica at its newest point, applying each shipped segment atomically.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def standby_flow(
    replica: Annotated[str, titled("Replica URL", schema={"pattern": REPLICA})],
    output: Annotated[Path, titled("Standby file")],
    duration: Annotated[float, titled("Run duration (s)", ge=0)] = 600.0,
    interval: Annotated[float, titled("Poll interval (s)", gt=0, le=3600)] = 1.0,
    once: Annotated[bool, titled("Catch up once")] = False,
    handover_wait: Annotated[float, titled("Hand-over wait (s)", ge=0)] = 0.0,
    lag_threshold_seconds: Annotated[float, titled("Lag alert threshold (s)", gt=0)] = 60.0,
    progress_interval: Annotated[float, titled("Progress interval (s)", gt=0)] = 60.0,
    database_id: Annotated[str | None, titled("Database id"), optional("string", pattern=DATABASE_ID)] = UNSET,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_block: Annotated[
        str | None, titled("age identity Secret block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    age_identity_file: Annotated[Path | None, titled("age identity file"), optional("string")] = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> FollowReport:
    """Keep the copy at ``output`` at ``replica``'s newest point for ``duration`` seconds (or catch up ``once``).

    Args:
        replica: The replica to follow: file:///absolute/dir or s3://bucket/prefix[?endpoint=URL].
        output: Path of the standby on the worker's host (restored first when missing); readers open it read-only.
        duration: Seconds the run follows, counted from its start; 0: until the run is cancelled (SIGTERM).
        interval: Seconds between two looks at the replica for new segments.
        once: Catch up once (segments after the copy's point, or the pages that differ), then end.
        handover_wait: Seconds to wait for a running follower of the copy to seal it and end; 0: refuse at once.
        lag_threshold_seconds: Lag above which walship.standby.lagging is emitted (once per crossing).
        progress_interval: Seconds between two progress lines in the run's logs and updates of its table.
        database_id: Name of the database in the replica; a replica of another database is refused. Empty: any.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        age_identity_block: Name of a Secret block holding the age identity that opens encrypted objects.
        age_identity_file: Path of an age identity file on the worker's host (when no block is named).
        retry: How the one-shot catch-up (once) retries transient storage errors; a window retries them every interval.

    The lag of an update is the time from the capture of the newest commit it
    applied to that commit being readable in the copy."""
    logger = get_run_logger()
    events = _Events(database_of(flow_run.get_parameters()), replica, output, lag_threshold_seconds)
    table = _Table(output, progress_interval, logger)
    window = FollowReport(output=output)
    try:
        if once:
            update = with_retry_policy(catch_up_copy, retry)(
                replica, output, None, None, None, credentials_block, age_identity_block, age_identity_file
            )
            window.add(update)
            window.sealed = update.settled
            events.update(update)
        else:
            stop = threading.Event()
            with sigterm_ends_window(stop.set), _interrupt_ends_window(stop):
                window = follow_window(
                    open_replica(replica, credentials_block),
                    output,
                    FollowerIdentity.this_process(str(flow_run.get_id()), replica),
                    interval=interval,
                    stop=stop,
                    duration=duration,
                    handover_wait=handover_wait,
                    database_id=database_id,
                    keys=load_keys(age_identity_block, age_identity_file),
                    report=lambda so_far, update: _seen(events, table, so_far, update),
                    unreached=events.unreached,
                    told=logger.info,
                )
    finally:
        table.show(window, ended=True)
    logger.info(
        "standby %s holds %s: %d updates, %d segments applied, %s downloaded",
        output,
        window.position,
        window.updates,
        window.segments_applied,
        human_bytes(window.downloaded),
    )
    events.completed(window)
    return window


@contextlib.contextmanager
def _interrupt_ends_window(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C of ``walship follow`` (the flow run in its process) seals the copy, as SIGTERM does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _seen(events: "_Events", table: "_Table", window: FollowReport, update: CaughtUp) -> None:
    events.update(update)
    table.show(window)


class _Events:
    """The run's events about the replica it follows: lag crossings both ways, and the window's end."""

    def __init__(self, database_id: str, replica: str, output: Path, threshold: float) -> None:
        self.database_id, self.replica, self.output = database_id, replica, output
        self.lag = LagWatch(threshold)
        # A follower that cannot read the replica applies nothing, so no update says it falls behind: this does.
        self.unreachable = LagWatch(threshold)

    def unreached(self, seconds: float, why: str) -> None:
        was_above = self.unreachable.above
        payload = {
            "unreached_seconds": round(seconds, 3),
            "threshold_seconds": self.unreachable.threshold,
            "output": str(self.output),
            "reason": why or "the replica is read again",
        }
        if self.unreachable.observe(seconds):
            self._emit("walship.standby.lagging", payload)
        elif was_above and not self.unreachable.above:
            self._emit("walship.standby.recovered", payload)

    def update(self, update: CaughtUp) -> None:
        if update.rebuilt_because is not None:
            get_run_logger().warning("standby %s rebuilt by comparing pages: %s", self.output, update.rebuilt_because)
        if update.lag_seconds is None:
            return
        was_above = self.lag.above
        payload = {
            "lag_seconds": round(update.lag_seconds, 3),
            "threshold_seconds": self.lag.threshold,
            "position": update.record.position,
            "output": str(self.output),
        }
        if self.lag.observe(update.lag_seconds):
            self._emit("walship.standby.lagging", payload)
        elif was_above and not self.lag.above:
            self._emit("walship.standby.recovered", payload)

    def completed(self, window: FollowReport) -> None:
        self._emit(
            "walship.standby.completed",
            {
                "position": window.position,
                "output": str(self.output),
                "segments_applied": window.segments_applied,
                "downloaded": window.downloaded,
                "max_lag_seconds": window.max_lag_seconds,
                "sealed": window.sealed,
            },
        )

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        emit(event, self.database_id, self.replica, payload)


class _Table:
    """The run's table artifact: published as the run starts, replaced in place as it follows and when it ends."""

    def __init__(self, output: Path, every: float, logger: Any) -> None:
        self.title, self.every, self.logger = f"Standby {output}", every, logger
        self._shown = 0.0
        self.artifact_id = publish("standby", self.title, _rows(FollowReport(output=output), "starting"))

    def show(self, window: FollowReport, *, ended: bool = False) -> None:
        now = utcnow().timestamp()
        if not ended and now - self._shown < self.every:
            return
        self._shown = now
        state = "ended" if ended else f"following; as of {utcnow():%H:%M:%S} UTC, refreshed every {self.every:g} s"
        if not ended:
            self.logger.info(
                "standby at %s, lag %s, %d segments applied",
                window.position,
                _lag(window.lag_seconds),
                window.segments_applied,
            )
        try:
            republish(self.artifact_id, self.title, _rows(window, state))
        except Exception as exc:  # a table is never worth stopping a standby for
            self.logger.warning("the run's table artifact was not updated: %s", exc)


def _rows(window: FollowReport, state: str) -> list[tuple[str, str]]:
    rebuilds = "; ".join(window.rebuilds).replace("|", "/") or "none"
    return [
        ("window", state),
        ("position", window.position),
        ("lag at the last update (capture to readable)", _lag(window.lag_seconds)),
        ("max lag", _lag(window.max_lag_seconds)),
        ("updates", str(window.updates)),
        ("segments applied", str(window.segments_applied)),
        ("rebuilt by comparing pages", f"{rebuilds} ({window.pages_rewritten} pages rewritten)"),
        ("bytes downloaded", human_bytes(window.downloaded)),
        (
            "took over after",
            "-" if window.handover_waited_seconds is None else f"{window.handover_waited_seconds:.1f} s",
        ),
        ("sealed (checkpointed, integrity ok)", "yes" if window.sealed else "not yet"),
    ]


def _lag(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"
