"""Snapshots of many databases from one deployment, each into a replica of its own.

``databases`` lists paths or glob patterns; ``replica`` is a base URL under
which each database goes as ``<base>/<file name>``, or a template with
``{name}`` (walship.fleet). Every database runs as its own child flow run
(``snapshot-app.db-20261124T0100``, with its own artifact and events), from a
task that never raises: one failing database does not stop the others, and
the parent fails only once all of them have finished.

Snapshots run at most ``max_concurrency`` at a time, so memory and disk stay
bounded by that many snapshots in flight. Shipping many databases is
``flows/fleet.py``: one flow run ships the whole fleet from its own process,
so the Prefect server's load does not grow with the fleet's size.
"""

from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

from prefect import Task, flow
from prefect.client.schemas.objects import State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows._failure import on_crashed, on_failure
from flows._params import BLOCK_NAME, REPLICA, UNSET, optional, plain_refusals, titled
from flows._report import human_bytes, publish, run_name
from flows.snapshot import snapshot_flow
from tasks._retry import walship_task
from walship.codec import DEFAULT_LEVEL, MAX_LEVEL, MIN_LEVEL
from walship.errors import IncompleteError
from walship.fleet import FleetMember, plan_fleet
from walship.models import RetryPolicy, SnapshotInfo

__all__ = ["DatabaseOutcome", "snapshot_many_flow"]


class DatabaseOutcome(BaseModel):
    """How one database of a fan-out fared."""

    database: Path
    replica: str
    ok: bool
    summary: str
    flow_run_id: UUID | None = None


# Paths or glob patterns of databases; each a non-empty string.
_Databases = Annotated[list[Annotated[str, Field(min_length=1)]], titled("Databases", min_length=1)]
_Replica = Annotated[str, titled("Replica URL or template", schema={"pattern": REPLICA})]
_Block = Annotated[str | None, titled("Credentials block"), optional("string", pattern=BLOCK_NAME)]


@plain_refusals
@flow(
    name="snapshot-many",
    description="Snapshots of every database the patterns match, a few at a time, each into its own replica.",
    flow_run_name=run_name,
    on_failure=[on_failure],
    on_crashed=[on_crashed],
    log_prints=True,
)
def snapshot_many_flow(
    databases: _Databases,
    replica: _Replica,
    max_concurrency: Annotated[int, titled("Snapshots at a time", ge=1, le=64)] = 4,
    level: Annotated[int, titled("Compression level", ge=MIN_LEVEL, le=MAX_LEVEL)] = DEFAULT_LEVEL,
    workdir: Annotated[Path | None, titled("Work directory"), optional("string")] = UNSET,
    credentials_block: _Block = UNSET,
    retry: Annotated[RetryPolicy, titled("Retries")] = RetryPolicy(),  # noqa: B008 - frozen model, safe as a default
) -> list[DatabaseOutcome]:
    """Snapshot every database ``databases`` names, each into its own replica under ``replica``.

    Args:
        databases: Paths or glob patterns of the databases on the worker's host.
        replica: Base URL (each database under <base>/<file name>) or a template with {name}.
        max_concurrency: How many snapshots run at once.
        level: zstd compression level, 1 (fastest) to 22 (smallest).
        workdir: Directory for the temporary copies; empty: the system's temporary directory.
        credentials_block: Name of a prefect-aws AWS Credentials block; empty: the worker's environment.
        retry: How storage tasks retry transient errors (attempts, backoff, jitter).

    Fails after all finished if any failed."""
    members, unmatched = plan_fleet(databases, replica)
    parameters = [
        {"member": m, "level": level, "workdir": workdir, "retry": retry, "credentials_block": credentials_block}
        for m in members
    ]
    outcomes = _fan_out(_snapshot_one, parameters, max_concurrency) + _unmatched(unmatched)
    return _report("snapshot-many", databases, f"Snapshots of {len(outcomes)} databases", outcomes)


@walship_task
def _snapshot_one(
    member: FleetMember, level: int, workdir: Path | None, retry: RetryPolicy, credentials_block: str | None
) -> DatabaseOutcome:
    """One database's snapshot as a child flow run; its failure is an outcome, not an exception."""
    state = snapshot_flow(
        database=member.database,
        replica=member.replica,
        level=level,
        workdir=workdir,
        credentials_block=credentials_block,
        retry=retry,
        return_state=True,
    )
    return _outcome(member, state)


def _fan_out(task: Task[..., DatabaseOutcome], parameters: list[dict[str, Any]], limit: int) -> list[DatabaseOutcome]:
    # A task runner of our own: its thread pool is the bound, and it waits for
    # every database before the flow reports (a failure never cuts others short).
    runner: ThreadPoolTaskRunner[DatabaseOutcome] = ThreadPoolTaskRunner(max_workers=limit)
    with runner:
        named = task.with_options(task_run_name="{member.database.name}")
        futures = [runner.submit(named, p) for p in parameters]
        return [future.result() for future in futures]


def _outcome(member: FleetMember, state: State[SnapshotInfo]) -> DatabaseOutcome:
    where, run_id = {"database": member.database, "replica": member.replica}, state.state_details.flow_run_id
    if state.is_completed():
        return DatabaseOutcome(**where, ok=True, summary=_describe(state.result()), flow_run_id=run_id)
    error = state.result(raise_on_failure=False)
    message = str(error) if isinstance(error, BaseException) else (state.message or state.name)
    return DatabaseOutcome(**where, ok=False, summary=message, flow_run_id=run_id)


def _unmatched(patterns: list[str]) -> list[DatabaseOutcome]:
    return [
        DatabaseOutcome(database=Path(p), replica="-", ok=False, summary="the pattern matched no database file")
        for p in patterns
    ]


def _describe(info: SnapshotInfo) -> str:
    return f"`{info.key}`, {human_bytes(info.raw_size)} -> {human_bytes(info.compressed_size)}"


def _report(kind: str, databases: list[str], title: str, outcomes: list[DatabaseOutcome]) -> list[DatabaseOutcome]:
    failed = [o for o in outcomes if not o.ok]
    # One table row per database; a message's newlines and pipes would break the table.
    rows = [(f"`{o.database}` -> `{o.replica}`", _cell(o)) for o in outcomes]
    rows.append(("result", f"{len(outcomes) - len(failed)} ok, {len(failed)} failed"))
    publish(kind, title, rows)
    if failed:
        names = ", ".join(str(o.database) for o in failed)
        raise IncompleteError(f"{len(failed)} of {len(outcomes)} databases failed: {names}; see each one's flow run")
    return outcomes


def _cell(outcome: DatabaseOutcome) -> str:
    text = " ".join(outcome.summary.split("\n")).replace("|", "/")
    return f"ok: {text}" if outcome.ok else f"**FAILED**: {text}"
