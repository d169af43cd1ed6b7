"""What every flow does when it fails or crashes: one event, one artifact that says so, one log line.

``on_failure`` is each flow's Prefect failure hook. It emits
``walship.<flow>.failed`` about the run's database and replica, with the
reason, and publishes a FAILED artifact under the run's key, unless the flow
published its own report of the failure before raising (a failed drill lists
every check; retention and fan-outs, what failed and what did not). Prefect logs a failed task or
flow with the exception's traceback; for walship's own errors (storage
unreachable, access denied, bad input...) the message already says what is
wrong and what to do, and a page of boto frames only buries it, so a log
filter drops the traceback of those: bugs keep theirs.

``on_crashed`` is each flow's crash hook: the worker runs it in a process of
its own once the run's process has died (killed, out of memory). It emits
``walship.<flow>.crashed`` about the run. Prefect's own Crashed event of a
run the scheduler created waits in the server's event ordering for its whole
lookback (Prefect's PRECEDING_EVENT_LOOKBACK: the event follows a Scheduled
event that is never emitted); this one follows nothing, so the crash alert
does not wait.
"""

import logging
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State

from flows._events import emit, emit_about_run
from flows._report import publish
from flows._subject import database_of, generated_name, replica_of, walship_name
from walship.errors import (
    IncompleteError,
    PermanentStorageError,
    TransientStorageError,
    VerificationFailedError,
    WalshipError,
)

__all__ = ["event_kind", "on_crashed", "on_failure"]

# Raised by flows after publishing a report that says what failed: a second artifact would hide it.
_REPORTED = (IncompleteError, VerificationFailedError)

# Flow name -> the event's middle word (walship.<kind>.failed).
_KINDS = {"wal-ship": "ship", "wal-ship-fleet": "ship-fleet"}


def event_kind(flow_name: str) -> str:
    return _KINDS.get(flow_name, flow_name)


def on_failure(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Failure hook: emit ``walship.<flow>.failed`` and leave a FAILED artifact."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception as exc:  # the result could not be read back: the state's message still says why
        error = exc
    reason = _one_line(str(error) if isinstance(error, BaseException) else (state.message or state.name or "failed"))
    parameters = flow_run.parameters
    if generated_name(flow_run.name):
        # Refused before it started (bad parameters): Prefect never applied the flow's run name.
        flow_run.name = walship_name(flow.name, parameters, flow_run.id)
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(flow_run.id, flow_run.name)
    database, replica = database_of(parameters, flow_run.id), replica_of(parameters)
    kind = event_kind(flow.name)
    payload: dict[str, Any] = {
        "reason": reason,
        "error": type(error).__name__ if isinstance(error, BaseException) else "unknown",
        "flow_run": flow_run.name,
        "failed": _failed_checks(error, reason),
    }
    # Named explicitly: a run refused at parameter validation calls its hooks with no run context.
    run = {"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.role": "flow-run"}
    emit(f"walship.{kind}.failed", database, replica, payload, related=[run])
    if not isinstance(error, _REPORTED):
        publish(
            kind,
            f"{flow.name} of {database}: FAILED",
            [("result", "**FAILED**"), ("reason", reason.replace("|", "/")), ("replica", f"`{replica}`")],
            parameters=parameters,
            flow_run_id=flow_run.id,
        )


def on_crashed(flow: Flow[Any, Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Crash hook: emit ``walship.<flow>.crashed`` about the run, with the reason Prefect recorded."""
    # The worker's copy of the run predates the name the flow gave it.
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run.id)
    parameters = flow_run.parameters
    payload = {"reason": _one_line(state.message or "the run's process died"), "flow_run": flow_run.name}
    database, replica = database_of(parameters, flow_run.id), replica_of(parameters)
    emit_about_run(
        f"walship.{event_kind(flow.name)}.crashed",
        flow_run.id,
        flow_run.name,
        flow_run.tags,
        database,
        replica,
        payload,
    )


def _failed_checks(error: object, reason: str) -> list[dict[str, str]]:
    """The failed checks of a drill; otherwise one entry naming what failed (storage, or the run)."""
    if isinstance(error, VerificationFailedError):
        return [{"name": check.name, "detail": check.detail} for check in error.report.failed]
    storage = isinstance(error, TransientStorageError | PermanentStorageError)
    return [{"name": "storage" if storage else "run", "detail": reason}]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]


class _KnownFailureFilter(logging.Filter):
    """Drops the traceback from a run logger's record when the exception is one of walship's own."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, WalshipError):
            record.exc_info, record.exc_text = None, None
        return True


_FILTER = _KnownFailureFilter()
for _name in ("prefect.flow_runs", "prefect.task_runs"):
    if _FILTER not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_FILTER)
