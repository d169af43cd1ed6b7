"""Fleet shipping: one flow run ships every database the patterns match, for one window.

The databases are shipped by the core (``walship.fleet.ship_fleet``) in
the flow's own process, from its body: no child flow run, no task run per
database or per upload. So a thousand databases cost one flow run and one
table artifact per window, and shipping needs nothing from the Prefect API:
if the API is down or answers 5xx mid-window, capture and upload go on.
Events (new generations, failing or recovered uploads, a database stopped
or removed) are sent when the API answers, and kept until it does; the run
waits for it at the end (``api_wait``) to publish its table and end with a
clear state.
"""

import collections
import threading
import time
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from flows._events import emit
from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import artifact_key, run_name
from flows._stopping import sigterm_ends_window
from tasks._storage import block_credentials
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.fleet import (
    PARK_AFTER,
    FleetEvent,
    FleetReport,
    RetryingSteps,
    RowState,
    SharedStores,
    plan_fleet,
    ship_fleet,
)
from walship.models import RetryPolicy

__all__ = ["ship_fleet_flow"]

# Seconds between two checks of whether the API answers (events wait while it does not).
_API_RECHECK = 5.0


@plain_refusals
@flow(
    name="wal-ship-fleet",
    description="WAL shipping of every database the patterns match, from one process, each into its own replica.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def ship_fleet_flow(
    databases: Annotated[list[str], titled("Databases", min_length=1)],
    replica: Annotated[str, titled("Replica URL or template", schema={"pattern": REPLICA})],
    more_replicas: Annotated[
        list[str],
        titled("More replica URLs or templates", schema={"items": {"type": "string", "pattern": REPLICA}}),
    ] = [],  # noqa: B006 - never mutated
    duration: Annotated[float, titled("Run duration (s)", ge=0)] = 600.0,
    interval: Annotated[float, titled("Sync interval (s)", gt=0, le=3600)] = 1.0,
    coalesce: Annotated[float, titled("Coalescing window (s)", ge=0, le=3600)] = 0.0,
    once: Annotated[bool, titled("One sync only")] = False,
    level: Annotated[int, titled("Compression level", ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    snapshot_interval: Annotated[float, titled("Snapshot interval (s)", ge=0)] = 3600.0,
    handover_wait: Annotated[float, titled("Hand-over wait (s)", ge=0)] = 0.0,
    park_after: Annotated[float, titled("Close an idle database after (s)", ge=0)] = PARK_AFTER,
    age_recipients: Annotated[list[str], titled("age recipients")] = [],  # noqa: B006 - never mutated
    api_wait: Annotated[float, titled("Wait for the Prefect API at the end (s)", ge=0)] = 600.0,
    credentials_block: Annotated[
        str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)
    ] = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> FleetReport:
    """Ship every database ``databases`` names for ``duration`` seconds, each into its own replica (one per
    template: ``replica`` and ``more_replicas``, from one capture).

    Args:
        databases: Paths or glob patterns of the databases on the worker's host (matched anew each run).
        replica: Base URL (each database under <base>/<file name>) or a template with {name}.
        more_replicas: Other bases or templates: each database goes to one replica per template too (one capture).
        duration: Seconds the window lasts.
        interval: Seconds between two syncs of an active database.
        coalesce: A written database syncs this long after its previous sync began; 0: interval less an upload.
        once: One sync and upload of each database, then end.
        level: zstd compression level, 1 (fastest) to 22 (smallest).
        snapshot_interval: Seconds between snapshots of a changed generation; 0: never.
        handover_wait: Seconds each database waits for the previous window's shipper of it to end; 0: refuse.
        park_after: Seconds without a change before a database is closed until it changes again.
        age_recipients: age public keys (age1...) to encrypt objects for; empty: not encrypted.
        api_wait: How long the run waits, at its end, for a Prefect API that is down.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        retry: How storage steps retry transient errors (attempts, backoff, jitter).

    Fails (``FleetFailedError``, with the report), after every database finished, if any failed."""
    logger = get_run_logger()
    members, unmatched = plan_fleet(databases, [replica, *more_replicas])
    for pattern in unmatched:
        logger.warning("%r matched no database file", pattern)
    events = _Events(str(flow_run.get_id() or ""))
    stores = SharedStores(block_credentials(credentials_block))

    def publish(report: FleetReport) -> None:
        # Shipping is done whatever the API did; what is left needs the API.
        if not events.close(api_wait):
            logger.error("the Prefect API did not answer within %.0f s: %d events are lost", api_wait, events.backlog)
        _publish(replica, report)
        # Once per window, busy or idle: what a "fleet shipping stopped" automation watches (docs/AUTOMATIONS.md).
        counts = {state.value: sum(r.state == state for r in report.rows) for state in RowState}
        emit("walship.fleet.completed", "fleet", replica, {"databases": len(report.rows), **counts})
        logger.info("%s", report.summary())

    return ship_fleet(
        members,
        RetryingSteps(retry, stores),
        stores=stores,
        duration=duration,
        interval=interval,
        once=once,
        level=level,
        snapshot_interval=snapshot_interval,
        handover_wait=handover_wait,
        park_after=park_after,
        coalesce=coalesce,
        recipients=tuple(age_recipients),
        notify=events.notify,
        stopping=sigterm_ends_window,
        publish=publish,
    )


class _Events:
    """Sends fleet events from a thread of its own, when the API answers; keeps them, in order, while it does not.

    The fleet's workers only queue: a health check or an emit against an API
    that answers 5xx can take a minute of the client's retries, and shipping
    must not wait for it.
    """

    def __init__(self, flow_run_id: str) -> None:
        self._related = [
            {"prefect.resource.id": f"prefect.flow-run.{flow_run_id}", "prefect.resource.role": "flow-run"}
        ]
        self._pending: collections.deque[FleetEvent] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="walship-fleet-events", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def notify(self, event: FleetEvent) -> None:
        """Called from the fleet's workers: queues, never waits."""
        self._pending.append(event)
        self._wake.set()

    def close(self, timeout: float) -> bool:
        """Stop the sender, then wait up to ``timeout`` for the API to take what is left; True once all went."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        deadline = time.monotonic() + timeout
        while not (_api_up() and self._send()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(_API_RECHECK)
        return True

    def _loop(self) -> None:
        while not self._closing:
            # One health check per few seconds at most, not per event: a new fleet's first
            # window starts a generation for each of a thousand databases at once.
            self._wake.wait(_API_RECHECK)
            self._wake.clear()
            if self._pending and not self._closing and _api_up():
                self._send()

    def _send(self) -> bool:
        """Send what is queued, in order; False if the API went away meanwhile (the rest waits)."""
        while self._pending:
            event = self._pending[0]
            try:
                emit(
                    f"walship.fleet.{event.kind}",
                    event.database.rsplit("/", 1)[-1],
                    event.replica,
                    {"database": event.database, "detail": event.detail},
                    related=self._related,
                )
            except Exception:
                return False
            self._pending.popleft()
        return True


def _api_up() -> bool:
    try:
        with get_client(sync_client=True) as client:
            return client.api_healthcheck() is None
    except Exception:
        return False


def _publish(replica: str, report: FleetReport) -> None:
    table: list[dict[str, str]] = []
    for d, state, position, lag, error, replicas in report.table():
        # "none", not "-": the UI renders a cell as markdown, where a lone "-" is a list bullet.
        row = {"database": d, "state": state, "position": position, "max lag": lag, "last error": error or "none"}
        if replicas:  # last: a long cell is cut at the table's edge; with one template it only repeats it
            row["replicas"] = ", ".join(replicas)
        table.append(row)
    create_table_artifact(
        table=table,
        key=artifact_key("ship-fleet", "fleet", replica),
        description=f"WAL shipping of a fleet: {report.summary()}",
    )
