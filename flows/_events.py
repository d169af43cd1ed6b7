"""Prefect events about a database's replica, for automations (alerts on lag, failures).

Every event's resource is one replica of one database:
``walship.database.<id>.replica.<digest>``, so ``walship.database.*`` matches
them all, ``walship.database.app.db.*`` every replica of app.db, and a drill
of a copy never stands for the main replica. The one exception is about a
flow run: a crash, which Prefect reports about the run as well, so that one
alert can take whichever of the two arrives first.
"""

from typing import Any

from prefect.events import emit_event

from flows._subject import replica_tag

__all__ = ["database_resource", "emit", "emit_about_run", "resource_id"]


def resource_id(database_id: str, replica: str) -> str:
    return f"walship.database.{database_id}.replica.{replica_tag(replica)}"


def database_resource(database_id: str, replica: str) -> dict[str, str]:
    return {
        "prefect.resource.id": resource_id(database_id, replica),
        "prefect.resource.name": database_id,
        "walship.database": database_id,
        "walship.replica": replica,
    }


def emit(
    event: str, database_id: str, replica: str, payload: dict[str, Any], related: list[dict[str, str]] | None = None
) -> None:
    """Emit ``event`` (e.g. ``walship.snapshot.completed``) about ``database_id``'s ``replica``; Prefect adds
    the run's flow run, flow and deployment as related resources, ``related`` adds others."""
    emit_event(event=event, resource=database_resource(database_id, replica), payload=payload, related=related)


def emit_about_run(
    event: str, run_id: object, run_name: str, tags: list[str], database_id: str, replica: str, payload: dict[str, Any]
) -> None:
    """Emit ``event`` about flow run ``run_id`` (resource ``prefect.flow-run.<id>``, as Prefect's own state
    events), with its database's replica and its tags as related resources, the database id and replica
    also as labels of the run."""
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{run_id}",
        "prefect.resource.name": run_name,
        "walship.database": database_id,
        "walship.replica": replica,
    }
    related = [{**database_resource(database_id, replica), "prefect.resource.role": "walship-replica"}]
    related += [{"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"} for tag in tags]
    emit_event(event=event, resource=resource, payload=payload, related=related)
