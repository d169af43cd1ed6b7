"""Markdown artifacts shared by the flows, keyed by database and replica."""

import inspect
import re
import warnings
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from prefect.artifacts import MarkdownArtifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.runtime import flow_run

from flows._subject import database_of, replica_of, replica_tag, run_name
from walship.units import human_bytes

__all__ = ["artifact_key", "human_bytes", "publish", "republish", "run_name"]


def artifact_key(kind: str, database: str, replica: str) -> str:
    """``walship-<kind>-<database>-<replica digest>``: artifact keys allow lowercase letters, digits and
    dashes only, and the digest keeps two replicas of one database (a drill of a copy) apart."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", database.lower()).strip("-")
    return f"walship-{kind}-{cleaned[:60]}-{replica_tag(replica)}"


def publish(
    kind: str,
    title: str,
    rows: list[tuple[str, str]],
    details: str = "",
    *,
    parameters: Mapping[str, Any] | None = None,
    flow_run_id: UUID | None = None,
) -> UUID:
    """A summary table, then optional ``details`` markdown, under the run's database and replica key; its id.

    Inside a run, the run's own parameters and id; the failure hook passes the
    ones of the run it was handed: a run refused at parameter validation calls
    its hooks with no run context.
    """
    if parameters is None:
        parameters = flow_run.get_parameters()
    key = artifact_key(kind, database_of(parameters, flow_run_id), replica_of(parameters))
    artifact = MarkdownArtifact(
        markdown=_markdown(title, rows, details), key=key, description=title, flow_run_id=flow_run_id
    )
    with warnings.catch_warnings():
        # Prefect warns about artifacts made outside a run context; this one names its run explicitly.
        warnings.simplefilter("ignore", FutureWarning)
        created = artifact.create()
    assert not inspect.isawaitable(created)  # the sync variant: the flows are sync
    return created.id


def republish(artifact_id: UUID, title: str, rows: list[tuple[str, str]], details: str = "") -> None:
    """Replace a published table in place: one artifact per run, current while the run goes on."""
    with get_client(sync_client=True) as client:
        client.update_artifact(artifact_id, ArtifactUpdate(data=_markdown(title, rows, details), description=title))


def _markdown(title: str, rows: list[tuple[str, str]], details: str) -> str:
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"# {title}\n\n| | |\n|---|---|\n{table}\n" + (f"\n{details}" if details else "")
