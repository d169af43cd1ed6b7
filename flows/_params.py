"""What the deployment form shows and what the server checks when a run is created.

Prefect titles a top-level parameter with its raw name and describes it
from the flow docstring's ``Args:`` section; a title given as
``json_schema_extra`` replaces the raw name. The server validates a run's
parameters against the JSON schema (409 on failure) but ignores ``format``,
so every string that must have a shape carries a ``pattern``. A timestamp's
schema has the pattern and no ``format``: where a validator does check
``date-time`` it wants RFC 3339 (seconds and an offset), stricter than what
the flow accepts, and one rule everywhere is easier to explain.

Optional values. The UI draws ``X | None`` as a type toggle ("Property is
type 'None'"), and fills a field whose schema has ``"default": null`` with a
null that it then refuses against a plain type (seen in the UI, so the form
could not be submitted at all). So an optional value's schema is its plain
type with no default: the field starts empty, an empty field is left out,
and the server accepts that or an explicit null. Prefect writes a parameter's
Python default into the schema unless it cannot be serialized, so the Python
default is ``UNSET``, which cannot; validation turns it (and an empty string)
into None before the flow body runs.
"""

import warnings
from typing import Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue, PydanticJsonSchemaWarning
from pydantic_core import CoreSchema, core_schema

__all__ = [
    "BLOCK_NAME",
    "DATABASE_ID",
    "GENERATION",
    "REPLICA",
    "SNAPSHOT_KEY",
    "TIMESTAMP",
    "UNSET",
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


class _Unset:
    """The Python default of an optional flow parameter: it keeps the default out of the form's schema."""

    def __repr__(self) -> str:
        return "<walship unset>"


UNSET: Any = _Unset()

# Pydantic says so each time a schema is built; leaving the default out is the point.
warnings.filterwarnings("ignore", message="Default value <walship unset>", category=PydanticJsonSchemaWarning)


def _none_if_unset(value: Any) -> Any:
    return None if value is UNSET or value == "" else value


def titled(title: str, schema: dict[str, Any] | None = None, **constraints: Any) -> Any:
    """Field metadata: the form's label, ``schema`` keywords only the server checks, and ``constraints``
    that pydantic and the schema both enforce. Defaults are validated too, which turns an optional
    parameter's ``UNSET`` into None.

    Shapes (patterns) are the server's alone: a flow called in-process (the CLI) gets the core's own
    message for a bad URL or an unknown generation, the same as without Prefect.
    """
    return Field(json_schema_extra={"title": title, **(schema or {})}, validate_default=True, **constraints)


class optional:  # noqa: N801 - used like pydantic's own lower-case annotations
    """An optional value's annotation, after ``titled``: UNSET or "" becomes None, and its schema is the plain
    type (``kind``) and the keywords the server checks, a pattern also allowing an empty string."""

    def __init__(self, kind: str, **schema: Any) -> None:
        if "pattern" in schema:
            schema["pattern"] = f"^(?:{schema['pattern'][1:-1]})?$"
        self.schema = {"type": kind, **schema}

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(_none_if_unset, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return dict(self.schema)
