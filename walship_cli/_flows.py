"""Each command as a Prefect flow run, for when an API keeps the run history.

Same signatures as ``_direct``; the flows are imported here, on first use,
because importing Prefect costs over a second that the direct mode, bad
input and ``status`` need not pay.

What that import builds (Prefect's modules, pydantic models and settings:
over 120,000 objects) lives until the process ends, so ``_imported()``
freezes it (``gc.freeze``): the collector no longer walks it in every full
collection during the run, nor in the interpreter's teardown at exit, which
took 0.46 s of every command (median of 5; 0.05 s frozen).
"""

import gc
import logging
import os
from datetime import datetime
from pathlib import Path

from walship.fleet import FleetMember, FleetReport
from walship.models import RestoreResult, SnapshotInfo
from walship.original import OriginalRestoreResult
from walship.retention import RetentionPolicy, RetentionReport
from walship.ship import ShipConfig, ShipReport
from walship.standby import CaughtUp, FollowReport
from walship.verify import VerifyReport

__all__ = [
    "follow",
    "quiet_prefect",
    "restore",
    "restore_delta",
    "retention",
    "ship",
    "ship_many",
    "snapshot_database",
    "verify",
]


def _imported() -> None:
    """Called right after a flow module's import: what the import built is frozen, out of the collector's way."""
    gc.freeze()


def quiet_prefect(verbose: bool) -> None:
    """Keep Prefect's console logs out of an operator's terminal unless asked.

    Runs still log to the API (dashboards keep everything); only the console
    handler is silenced, so errors stay one or two lines.
    """
    defaults = {
        "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if not verbose:
        defaults["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "CRITICAL"
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if verbose:
        # Prefect's root logger passes WARNING and up; --verbose shows the core's INFO lines too, as in direct mode.
        logging.getLogger("walship").setLevel(logging.INFO)


def snapshot_database(
    database: Path,
    replica: str,
    *,
    level: int,
    database_id: str | None,
    workdir: Path | None,
    recipients: tuple[str, ...] = (),
) -> SnapshotInfo:
    from flows.snapshot import snapshot_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    return snapshot_flow(
        database=database,
        replica=replica,
        level=level,
        database_id=database_id,
        workdir=workdir,
        age_recipients=list(recipients),
    )


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
    from flows.restore import restore_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    result = restore_flow(
        replica=replica,
        output=output,
        timestamp=timestamp,
        snapshot_key=snapshot_key,
        sequence=sequence,
        generation=generation,
        force=force,
        database_id=database_id,
        age_identity_file=identity_file,
    )
    assert not isinstance(result, CaughtUp)  # only with delta
    return result


def restore_delta(
    replica: str,
    output: Path,
    *,
    timestamp: datetime | None,
    sequence: int | None,
    generation: str | None,
    identity_file: Path | None = None,
) -> CaughtUp:
    from flows.restore import restore_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    result = restore_flow(
        replica=replica,
        output=output,
        timestamp=timestamp,
        sequence=sequence,
        generation=generation,
        delta=True,
        age_identity_file=identity_file,
    )
    assert isinstance(result, CaughtUp)  # the copy exists: the CLI sends only those here
    return result


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
    """Each update's line goes to the run's logs (``--verbose`` shows them), the window's summary to the caller."""
    from flows.standby import standby_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    return standby_flow(
        replica=replica,
        output=output,
        interval=interval,
        duration=duration,
        once=once,
        handover_wait=handover_wait,
        age_identity_file=identity_file,
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
    from flows.verify import verify_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    return verify_flow(
        replica=replica,
        database_id=database_id,
        older=older,
        workdir=workdir,
        age_identity_file=identity_file,
        require_lock_days=require_lock_days,
    )


def retention(replica: str, policy: RetentionPolicy, *, dry_run: bool) -> RetentionReport:
    from flows.retention import retention_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    return retention_flow(replica=replica, policy=policy, dry_run=dry_run)


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
    from flows.ship import wal_ship_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    return wal_ship_flow(
        database=database,
        replica=replicas[0],
        more_replicas=replicas[1:],
        duration=duration,
        interval=interval,
        once=once,
        spool_dir=spool_dir,
        database_id=config.database_id,
        level=config.level,
        snapshot_interval=config.snapshot_seconds,
        handover_wait=handover_wait,
        progress_interval=config.progress_seconds,
        coalesce=config.coalesce_seconds,
        spool_cap_mib=config.spool_cap_bytes / (1 << 20),
        age_recipients=list(config.recipients),
    )


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
    from flows.fleet import ship_fleet_flow  # noqa: PLC0415 - Prefect only when a flow runs

    _imported()

    # The flow plans again from the patterns (as a deployment's runs do); ``members`` was the CLI's check.
    return ship_fleet_flow(
        databases=patterns,
        replica=replicas[0],
        more_replicas=replicas[1:],
        duration=duration,
        interval=interval,
        once=once,
        level=level,
        snapshot_interval=snapshot_interval,
        handover_wait=handover_wait,
        park_after=park_after,
        coalesce=coalesce,
        age_recipients=list(recipients),
    )
