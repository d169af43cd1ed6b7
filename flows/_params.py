"""What the deployment form shows and what the server checks when a run is created.

Prefect titles a top-level parameter with its raw name and describes it
from the flow docstring's ``Args:`` section; a title given as
``json_schema_extra`` replaces the raw name. The server validates a run's
parameters against the JSON schema (409 on failure) but ignores ``format``,
so every string that must have a shape carries a ``pattern``. A timestamp's
schema has the pattern and no ``format``: where a validator does check
``date-time`` it wants RFC 3339 (seconds and an offset), stricter than what
the flow accepts, and one rule everywhere is easier to explain. Its pattern
admits real dates and times only (month lengths, leap years), so the 409
names the field; a run that gets a bad one anyway (created without the
schema enforced) fails with one line from ``real_time``.

Optional values. The UI draws ``X | None`` as a type toggle ("Property is
type 'None'"), and fills a field whose schema has ``"default": null`` with a
null that it then refuses against a plain type (seen in the UI, so the form
could not be submitted at all). So an optional value's schema is its plain
type with no default: the field starts empty, an empty field is left out,
and the server accepts that or an explicit null. Prefect writes a parameter's
Python default into the schema unless it cannot be serialized, so the Python
default is ``UNSET``, which cannot; validation turns it (and an empty string)
into None before the flow body runs.

A bad value that reaches a run all the same (the Python API, a deployment
whose schema is not enforced) fails it with one line naming each field and
what it should be (``plain_refusals``), not Prefect's list of errors, a dump
of every parameter and, on a worker, a traceback.
"""

import logging
import re
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from prefect.exceptions import ParameterTypeError
from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue, PydanticJsonSchemaWarning
from pydantic_core import CoreSchema, core_schema

from walship.errors import UsageError
from walship.storage import schemes

__all__ = [
    "BLOCK_NAME",
    "DATABASE_ID",
    "GENERATION",
    "REPLICA",
    "SNAPSHOT_KEY",
    "TIMESTAMP",
    "UNSET",
    "optional",
    "plain_refusals",
    "real_time",
    "titled",
]

# A URL of any registered storage backend (file:///dir, s3://bucket/prefix...); the core reports anything subtler.
REPLICA = rf"^({'|'.join(map(re.escape, schemes()))})://\S+$"
# What walship names a database by: a file name, never a path.
DATABASE_ID = r"^[^/\s]{1,255}$"
# ISO 8601, date or date and time, optional seconds, fraction and offset (no offset: UTC); only real
# dates: months of 30 and 31 days, February 29 in leap years (every 4th, centuries only every 400th).
_DAY = (
    r"\d{4}-(0[13578]|1[02])-(0[1-9]|[12]\d|3[01])"
    r"|\d{4}-(0[469]|11)-(0[1-9]|[12]\d|30)"
    r"|\d{4}-02-(0[1-9]|1\d|2[0-8])"
    r"|(\d{2}(0[48]|[2468][048]|[13579][26])|([02468][048]|[13579][26])00)-02-29"
)
_TIME = r"[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)?"
TIMESTAMP = rf"^({_DAY})({_TIME})?$"
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


class real_time:  # noqa: N801 - used like pydantic's own lower-case annotations
    """A timestamp's annotation, after ``optional``: text is read as ISO 8601 before pydantic sees it.

    The server's pattern refuses what is no real date; a run that gets one
    anyway (created without the schema enforced) fails with walship's own
    one-line error naming the field, not pydantic's list of errors.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self._parse, handler(source))

    def _parse(self, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            # Not a ValueError of its own: pydantic would fold it into its multi-line report.
            raise UsageError(
                f"{self.name} {value!r} is not a real date and time ({exc}): use ISO 8601, e.g. 2026-11-29T14:16:00Z"
            ) from None


F = TypeVar("F")


def plain_refusals(flow: F) -> F:
    """``flow`` (a Prefect flow), whose run fails with one line when its parameters do not validate."""
    validate: Callable[[dict[str, Any]], dict[str, Any]] = flow.validate_parameters  # type: ignore[attr-defined]
    name = flow.name  # type: ignore[attr-defined]

    def validate_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return validate(parameters)
        except ParameterTypeError as exc:
            # Not a ParameterTypeError: its message would stay the list, and walship's own errors lose their
            # traceback in the run's log (flows/_failure.py).
            raise UsageError(refusal(name, str(exc))) from None

    flow.validate_parameters = validate_parameters  # type: ignore[attr-defined]
    return flow


def refusal(flow_name: str, listed: str) -> str:
    """Prefect's list (``- field: Input should be ...`` lines) as one line: each field and what it should be."""
    found = re.findall(r"^ - ([^:]+): (.+)$", listed, re.MULTILINE)
    problems = "; ".join(f"{field} {_should(text)}" for field, text in found) or " ".join(listed.split())
    return f"{flow_name} refused its parameters: {problems}. Correct them and run it again"


def _should(text: str) -> str:
    return text.removeprefix("Input ") if text.startswith("Input should") else f"is refused: {text}"


class _ValidationDump(logging.Filter):
    """Drops Prefect's dump of every parameter on a validation failure: the run's one line says what is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Parameter validation failed for flow")


if not any(isinstance(f, _ValidationDump) for f in logging.getLogger("prefect.flows").filters):
    logging.getLogger("prefect.flows").addFilter(_ValidationDump())
