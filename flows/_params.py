"""What the deployment form shows and what the server checks when a run is created.

Prefect titles a top-level parameter with its raw name and describes it
from the flow docstring's ``Args:`` section; a title given as
``json_schema_extra`` replaces the raw name. The server validates a run's
parameters against the JSON schema (409 on failure) but ignores ``format``,
so every string that must have a shape carries a ``pattern``. A timestamp's
schema has the pattern and no ``format``: where a validator does check
``date-time`` it wants RFC 3339 (seconds and an offset), stricter than what
the flow accepts, and one rule everywhere is easier to explain.

An optional value (``X | None``) would show as an "X | None" toggle: its
schema here is the plain type (``WithJsonSchema``), so the field is simply
left empty. Python still accepts None, and the deployments in prefect.yaml
never write a null for them (the server would refuse it against the plain
type).
"""

from typing import Any

from pydantic import Field, WithJsonSchema

__all__ = [
    "BLOCK_NAME",
    "DATABASE_ID",
    "GENERATION",
    "REPLICA",
    "SNAPSHOT_KEY",
    "TIMESTAMP",
    "optional",
    "titled",
]

# file:///dir or s3://bucket/prefix[?endpoint=...]; the core reports anything subtler.
REPLICA = r"^(file|s3)://\S+$"
# What walship names a database by: a file name, never a path.
DATABASE_ID = r"^[^/\s]{1,255}$"
# ISO 8601, date or date and time, optional seconds, fraction and offset (no offset: UTC).
TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
# A walship snapshot key, or one of the original layout's (docs/FORMAT.md).
SNAPSHOT_KEY = (
    r"^(generations/\d{8}T\d{6}Z-[0-9a-f]{8}/snapshots/\d{20}\.sqlite\.zst|snapshots/\d{8}_\d{6}\.sqlite\.zst)$"
)
GENERATION = r"^\d{8}T\d{6}Z-[0-9a-f]{8}$"
# Prefect's block document names; empty means "no block: the worker's environment".
BLOCK_NAME = r"^([a-z0-9][a-z0-9-]*)?$"


def titled(title: str, **constraints: Any) -> Any:
    """Field metadata: the form's label, and constraints pydantic and the schema both enforce."""
    return Field(json_schema_extra={"title": title}, **constraints)


def optional(kind: str, **schema: Any) -> WithJsonSchema:
    """The schema of an optional value: its plain type and constraints, no null branch."""
    return WithJsonSchema({"type": kind, **schema})
