"""Reading back what flows told the Prefect API: events, artifacts, flow runs.

For tests under the ``prefect_api`` fixture. Events travel from the client
through a background worker and the server's event persister, which writes
them in batches (every 5 s by default), so ``read_events`` drains the client
first and then polls until the events it waits for are stored.
"""

import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentTaskRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun, Log, State
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.events.worker import EventsWorker

from flows._events import resource_id

__all__ = [
    "artifacts",
    "child_flow_runs",
    "database_resource_id",
    "flow_run",
    "flow_runs_of",
    "read_events",
    "run_id",
    "run_logs",
]

# The API refuses larger pages (its limit is 50; the client's default of 100 is rejected).
_PAGE = 50


def run_id(state: State[Any]) -> UUID:
    """The flow run a returned state belongs to."""
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id


def database_resource_id(database_id: str, replica: str) -> str:
    """The resource id walship's events name a database by (flows/_events.py)."""
    return resource_id(database_id, replica)


def read_events(
    name: str,
    *,
    flow_run_id: UUID | None = None,
    resource_id: str | None = None,
    at_least: int = 1,
    timeout: float = 60.0,
) -> list[ReceivedEvent]:
    """Events called ``name``, oldest first: those related to ``flow_run_id`` (the run
    that emitted them) and/or about ``resource_id``.

    Waits until ``at_least`` are stored, or ``timeout`` seconds, and returns what
    is there (the caller's assertions then say what is missing).
    """
    EventsWorker.drain_all()
    deadline = time.monotonic() + timeout
    while True:
        events = _read(name, flow_run_id, resource_id)
        if len(events) >= at_least or time.monotonic() >= deadline:
            return events
        time.sleep(0.5)


def _read(name: str, flow_run_id: UUID | None, resource_id: str | None) -> list[ReceivedEvent]:
    # Built afresh on every poll: the filter's default window ends when it is made.
    event_filter = EventFilter(
        event=EventNameFilter(name=[name]),
        resource=EventResourceFilter(id=[resource_id]) if resource_id else None,
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]) if flow_run_id else None,
    )
    with get_client(sync_client=True) as client:
        page = client.read_events(event_filter, limit=_PAGE)
        events = list(page.events)
        while page.next_page is not None:
            page = client.read_events_page(str(page.next_page))
            events += page.events
    return sorted(events, key=lambda e: e.occurred)


def artifacts(flow_run_id: UUID, kind: str | None = None) -> list[Artifact]:
    """The artifacts a flow run published; ``kind`` is 'markdown', 'progress', 'table'..."""
    artifact_filter = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
        type=ArtifactFilterType(any_=[kind]) if kind else None,
    )
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=artifact_filter)


def flow_run(flow_run_id: UUID) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def child_flow_runs(parent_flow_run_id: UUID) -> list[FlowRun]:
    """The flow runs started from a flow run's tasks (a fan-out's children)."""
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent_flow_run_id])))
        if not task_runs:
            return []
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in task_runs])
            )
        )


def flow_runs_of(database_id: str) -> list[FlowRun]:
    """The flow runs whose ``database_id`` parameter is ``database_id``, oldest first."""
    with get_client(sync_client=True) as client:
        runs = [r for r in client.read_flow_runs() if r.parameters.get("database_id") == database_id]
    return sorted(runs, key=lambda r: r.created or r.expected_start_time)


def run_logs(flow_run_id: UUID) -> list[Log]:
    """Everything a flow run and its tasks logged to the API, oldest first (what its run page shows)."""
    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    logs: list[Log] = []
    with get_client(sync_client=True) as client:
        while page := client.read_logs(log_filter, limit=_PAGE, offset=len(logs)):
            logs += page
    return sorted(logs, key=lambda log: log.timestamp)
