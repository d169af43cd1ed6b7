"""Prefect events about a database, for automations (alerts on lag, failed drills).

Every event names the database as its resource, so one automation can match
``walship.verify.failed`` for any database or for one.
"""

from typing import Any

from prefect.events import emit_event

__all__ = ["database_resource", "emit"]


def database_resource(database_id: str, replica: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"walship.database.{database_id}",
        "prefect.resource.name": database_id,
        "walship.replica": replica,
    }


def emit(event: str, database_id: str, replica: str, payload: dict[str, Any]) -> None:
    """Emit ``event`` (e.g. ``walship.snapshot.completed``) about ``database_id``."""
    emit_event(event=event, resource=database_resource(database_id, replica), payload=payload)
