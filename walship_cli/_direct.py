"""Each command's pipeline run on the core directly, with the flows' retry policy.

The steps are the ones the flows' tasks call, in the same order, so a
command gives the same result, checks and exit status either way; only the
Prefect side (run history, artifacts, events) is missing.
"""

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType

from walship import index, snapshot
from walship.catalog import read_snapshot_info
from walship.envelope import Keyring
from walship.fleet import FleetMember, FleetReport, RetryingSteps, SharedStores, ship_fleet
from walship.generations import choose_start, describe_replica
from walship.layout import parse_snapshot_key
from walship.memory import one_arena
from walship.models import RestoreResult, RetryPolicy, SnapshotInfo, WalPosition, utcnow
from walship.original import OriginalRestoreResult, restore_original
from walship.restore import restore_snapshot
from walship.retention import RetentionPolicy, RetentionReport, apply_retention, plan_replica
from walship.retry import retrying
from walship.ship import LoggingObserver, ShipConfig, ShippingRun, ShipReport, drain_spool, let_lease_go, take_lease
from walship.storage import open_store
from walship.upload import UploadResult
from walship.verify import StoreSteps, VerifyReport, run_verify

__all__ = ["restore", "retention", "ship", "ship_many", "snapshot_database", "verify"]

_POLICY = RetryPolicy()
log = logging.getLogger("walship")


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


def snapshot_database(
    database: Path,
    replica: str,
    *,
    level: int,
    database_id: str | None,
    workdir: Path | None,
    recipients: tuple[str, ...] = (),
) -> SnapshotInfo:
    store = open_store(replica)
    database_id = database_id or database.name
    snapshot.check_database_id(store, database_id)
    snapshot.check_not_shipped(store)
    progress = _TerminalProgress(f"snapshot of {database_id}")
    try:
        info = retrying(
            _POLICY,
            lambda: snapshot.stream_snapshot(
                store,
                database,
                database_id=database_id,
                level=level,
                workdir=workdir,
                progress=progress,
                recipients=recipients,
            ),
        )
    finally:
        progress.clear()
    retrying(_POLICY, lambda: index.add_snapshot(store, info))
    return info


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
    keys = Keyring.from_file(identity_file) if identity_file is not None else None
    until_sequence = sequence
    if snapshot_key is not None and parse_snapshot_key(snapshot_key) is not None:
        # Described from its own object: nothing else the prefix holds can stand in the way.
        chosen = retrying(_POLICY, lambda: read_snapshot_info(store, snapshot_key))
    else:
        generations = retrying(_POLICY, lambda: describe_replica(store))
        if not generations.generations and sequence is None and generation is None:
            # No walship data: the prefix may hold the original design's layout (docs/FORMAT.md).
            return retrying(
                _POLICY,
                lambda: restore_original(
                    store, output, force=force, before=timestamp, key=snapshot_key, expected_database_id=database_id
                ),
            )
        chosen, until_sequence = choose_start(
            generations, snapshot_key=snapshot_key, before=timestamp, generation=generation, sequence=sequence
        )
    progress = _TerminalProgress(f"restore of {chosen.database_id}")
    try:
        return retrying(
            _POLICY,
            lambda: restore_snapshot(
                store,
                chosen,
                output,
                force=force,
                expected_database_id=database_id,
                segments=snapshot_key is None,
                until_sequence=until_sequence,
                until_time=timestamp,
                progress=progress,
                keys=keys,
            ),
        )
    finally:
        progress.clear()


def verify(
    replica: str, *, database_id: str | None, older: bool, workdir: Path | None, identity_file: Path | None = None
) -> VerifyReport:
    keys = Keyring.from_file(identity_file) if identity_file is not None else None
    steps = StoreSteps(open_store(replica), keys, policy=_POLICY)
    return run_verify(steps, database_id=database_id, older=older, workdir=workdir)


def retention(replica: str, policy: RetentionPolicy, *, dry_run: bool) -> RetentionReport:
    store = open_store(replica)
    plan = retrying(_POLICY, lambda: plan_replica(store, policy, utcnow()))
    result = retrying(_POLICY, lambda: apply_retention(store, plan, dry_run=dry_run))
    return RetentionReport(plan=plan, result=result)


def ship(
    database: Path,
    replica: str,
    config: ShipConfig,
    *,
    spool_dir: Path | None,
    duration: float,
    interval: float,
    once: bool,
    handover_wait: float,
) -> ShipReport:
    one_arena()
    run = ShippingRun(database, replica, config, spool_dir=spool_dir, steps=_CoreSteps(), observer=LoggingObserver(log))
    with _stopping(run.stop):
        return run.run(duration=duration, interval=interval, once=once, handover_wait=handover_wait)


def ship_many(
    members: list[FleetMember],
    replica: str,
    *,
    patterns: list[str],
    duration: float,
    interval: float,
    once: bool,
    level: int,
    snapshot_interval: float,
    handover_wait: float,
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
        recipients=recipients,
        notify=lambda event: log.warning("%s: %s: %s", event.database, event.kind, event.detail),
        stopping=_stopping,
    )


@contextlib.contextmanager
def _stopping(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM (systemd, a supervisor) or Ctrl-C ends the window the way its time would: the final capture and
    upload still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"walship: {signal.Signals(signum).name}: finishing the window", file=sys.stderr)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _CoreSteps:
    """The run's storage steps on the core, with the flows' retry policy."""

    def acquire_lease(self, replica: str, spool_dir: Path, holder: str) -> None:
        retrying(_POLICY, lambda: take_lease(open_store(replica), spool_dir, holder))

    def drain(self, replica: str, spool_dir: Path, holder: str) -> UploadResult:
        return retrying(_POLICY, lambda: drain_spool(open_store(replica), spool_dir, holder))

    def record_position(self, replica: str, position: WalPosition) -> None:
        retrying(_POLICY, lambda: index.record_wal_position(open_store(replica), position))

    def release_lease(self, replica: str, spool_dir: Path) -> None:
        retrying(_POLICY, lambda: let_lease_go(open_store(replica), spool_dir))
