"""Each command run on the core directly, with the flows' retry policy.

Every operation is composed once in the core (``run_snapshot``,
``run_restore``, ``run_verify``, ``run_retention``, ``ShippingRun``,
``ship_fleet``); the flows hand it task runs, this module hands it the
core's own steps on a store opened once for the run, so a command gives the
same result, checks and exit status either way; only the Prefect side (run
history, artifacts, events) is missing.
"""

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType

from walship.codec import Progress
from walship.envelope import Keyring
from walship.fleet import FleetMember, FleetReport, RetryingSteps, SharedStores, ship_fleet
from walship.memory import one_arena
from walship.models import RestoreResult, RetryPolicy, SnapshotInfo
from walship.original import OriginalRestoreResult
from walship.restore import StoreRestoreSteps, run_restore
from walship.retention import RetentionPolicy, RetentionReport, StoreRetentionSteps, run_retention
from walship.ship import LoggingObserver, ShipConfig, ShippingRun, ShipReport
from walship.snapshot import StoreSnapshotSteps, run_snapshot
from walship.standby import CaughtUp, FollowerIdentity, FollowReport, catch_up_alone, follow_window
from walship.storage import open_store
from walship.verify import StoreSteps, VerifyReport, run_verify
from walship_cli._standby import show_update

__all__ = [
    "follow",
    "restore",
    "restore_delta",
    "retention",
    "retry_policy",
    "ship",
    "ship_many",
    "snapshot_database",
    "verify",
]

# The flows' default policy. For tests only, WALSHIP_TEST_RETRY_BACKOFF (seconds) replaces its first delay:
# a test whose storage stays down until the process exits otherwise waits out the whole policy (some 30 s) to
# reach the failure the first try already decided. Nothing else sets it.
_TEST_BACKOFF = os.environ.get("WALSHIP_TEST_RETRY_BACKOFF")
_POLICY = RetryPolicy(backoff_seconds=float(_TEST_BACKOFF)) if _TEST_BACKOFF else RetryPolicy()
log = logging.getLogger("walship")


def retry_policy() -> RetryPolicy:
    """The policy each storage step of a direct run is retried by (``walship query`` uses it in both modes)."""
    return _POLICY


def show_logs(verbose: bool) -> None:
    """With ``--verbose``, what the run logs goes to stderr as it happens, as Prefect's console shows it."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s - %(message)s")
    else:
        # Errors reach the operator as the command's one or two lines; the rest is for --verbose.
        logging.basicConfig(level=logging.ERROR)


class _TerminalProgress:
    """A percentage on stderr when it is a terminal, redrawn at most ten times a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.shown and now - self._last >= 0.1:
            self._last = now
            print(f"\r{self.label} {100 * done / max(total, 1):5.1f} %", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _terminal_progress(label: str) -> Iterator[Progress]:
    progress = _TerminalProgress(label)
    try:
        yield progress
    finally:
        progress.clear()


def snapshot_database(
    database: Path,
    replica: str,
    *,
    level: int,
    database_id: str | None,
    workdir: Path | None,
    recipients: tuple[str, ...] = (),
) -> SnapshotInfo:
    steps = StoreSnapshotSteps(open_store(replica), _POLICY, _terminal_progress)
    report = run_snapshot(steps, database, level=level, database_id=database_id, workdir=workdir, recipients=recipients)
    return report.info


def restore(
    replica: str,
    output: Path,
    *,
    timestamp: datetime | None,
    snapshot_key: str | None,
    sequence: int | None,
    generation: str | None,
    force: bool,
    database_id: str | None,
    identity_file: Path | None = None,
) -> RestoreResult | OriginalRestoreResult:
    store = open_store(replica)
    keys = _keys(identity_file)
    return run_restore(
        StoreRestoreSteps(store, keys, _POLICY, _terminal_progress),
        output,
        timestamp=timestamp,
        snapshot_key=snapshot_key,
        sequence=sequence,
        generation=generation,
        force=force,
        database_id=database_id,
    )


def verify(
    replica: str,
    *,
    database_id: str | None,
    older: bool,
    workdir: Path | None,
    identity_file: Path | None = None,
    require_lock_days: int | None = None,
) -> VerifyReport:
    keys = _keys(identity_file)
    steps = StoreSteps(open_store(replica), keys, policy=_POLICY)
    return run_verify(steps, database_id=database_id, older=older, workdir=workdir, require_lock_days=require_lock_days)


def retention(replica: str, policy: RetentionPolicy, *, dry_run: bool) -> RetentionReport:
    return run_retention(StoreRetentionSteps(open_store(replica), _POLICY), policy, dry_run=dry_run)


def ship(
    database: Path,
    replicas: list[str],
    config: ShipConfig,
    *,
    spool_dir: Path | None,
    duration: float,
    interval: float,
    once: bool,
    handover_wait: float,
) -> ShipReport:
    one_arena()
    run = ShippingRun(
        database, replicas, config, spool_dir=spool_dir, steps=RetryingSteps(_POLICY), observer=LoggingObserver(log)
    )
    with _stopping(run.stop):
        return run.run(duration=duration, interval=interval, once=once, handover_wait=handover_wait)


def ship_many(
    members: list[FleetMember],
    replicas: list[str],
    *,
    patterns: list[str],
    duration: float,
    interval: float,
    once: bool,
    level: int,
    snapshot_interval: float,
    handover_wait: float,
    park_after: float,
    coalesce: float = 0.0,
    recipients: tuple[str, ...] = (),
) -> FleetReport:
    one_arena()
    stores = SharedStores()
    return ship_fleet(
        members,
        RetryingSteps(_POLICY, stores),
        stores=stores,
        duration=duration,
        interval=interval,
        once=once,
        level=level,
        snapshot_interval=snapshot_interval,
        handover_wait=handover_wait,
        park_after=park_after,
        coalesce=coalesce,
        recipients=recipients,
        notify=lambda event: log.warning("%s: %s: %s", event.database, event.kind, event.detail),
        stopping=_stopping,
    )


def restore_delta(
    replica: str,
    output: Path,
    *,
    timestamp: datetime | None,
    sequence: int | None,
    generation: str | None,
    identity_file: Path | None = None,
) -> CaughtUp:
    return catch_up_alone(
        open_store(replica),
        output,
        FollowerIdentity.this_process("restore --delta", replica),
        timestamp=timestamp,
        sequence=sequence,
        generation=generation,
        keys=_keys(identity_file),
    )


def follow(
    replica: str,
    output: Path,
    *,
    interval: float,
    duration: float,
    once: bool,
    handover_wait: float,
    identity_file: Path | None = None,
) -> FollowReport:
    """Each update's line as it is applied (the flow logs them to its run instead)."""
    stop = threading.Event()
    with _stopping(stop.set, "sealing the standby"):
        return follow_window(
            open_store(replica),
            output,
            FollowerIdentity.this_process("follow", replica),
            interval=interval,
            stop=stop,
            duration=duration,
            once=once,
            handover_wait=handover_wait,
            keys=_keys(identity_file),
            report=lambda _window, update: show_update(update),
        )


@contextlib.contextmanager
def _stopping(stop: Callable[[], None], doing: str = "finishing the window") -> Iterator[None]:
    """SIGTERM (systemd, a supervisor) or Ctrl-C ends the window the way its time would: the final capture and
    upload still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"walship: {signal.Signals(signum).name}: {doing}", file=sys.stderr)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _keys(identity_file: Path | None) -> Keyring | None:
    """The identities that open encrypted objects, read from the file the CLI checked; None without one."""
    return Keyring.from_file(identity_file) if identity_file is not None else None
