"""Which database and replica a run is about, read from its parameters.

Run names, artifact keys and event resources all come from here, so every
flow names them the same way: the database id (``database_id``, else the
database's file name, else the replica's last folder) and the replica, told
apart by a short digest of its URL (two replicas of one database never share
an artifact key or an event resource).
"""

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any

from prefect.runtime import flow_run

from walship.errors import UsageError
from walship.storage import parse_replica_url

__all__ = ["database_of", "generated_name", "replica_of", "replica_tag", "run_name"]

# Names nobody chose. The server (API, CLI, schedules) names a run with two
# random lowercase words; the UI's Run Name field comes filled with a Greek
# letter (and digits) and a star's constellation, e.g. "gamma5-minas-tensor".
_GENERATED_NAMES = (
    re.compile(r"^[a-z]+-[a-z]+$"),
    re.compile(
        r"^(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|omicron|pi|rho|sigma|tau"
        r"|upsilon|phi|chi|psi|omega)\d*-[a-z][a-z-]*$"
    ),
)


def replica_tag(replica: str) -> str:
    """Eight hex digits of the replica URL's digest (its canonical form, when it parses)."""
    try:
        canonical = str(parse_replica_url(replica))
    except UsageError:
        canonical = replica
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def database_of(parameters: Mapping[str, Any]) -> str:
    """The database id a run's parameters name (the same rule as the flows' defaults)."""
    if parameters.get("database_id"):
        return str(parameters["database_id"])
    if parameters.get("database"):
        return PurePath(str(parameters["database"])).name
    if databases := parameters.get("databases"):
        names = [PurePath(str(d)).name for d in databases]
        return names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "")
    return _last_folder(str(parameters.get("replica", ""))) or "unknown"


def replica_of(parameters: Mapping[str, Any]) -> str:
    return str(parameters.get("replica", ""))


def _last_folder(replica: str) -> str:
    try:
        url = parse_replica_url(replica)
    except UsageError:
        return replica.rstrip("/").rsplit("/", 1)[-1]
    if url.path is not None:
        return url.path.name
    return url.prefix.rstrip("/").rsplit("/", 1)[-1] or str(url.bucket)


def generated_name(name: str) -> bool:
    """Whether ``name`` is one Prefect or its UI made up, rather than one an operator typed."""
    return any(pattern.match(name) for pattern in _GENERATED_NAMES)


def run_name() -> str:
    """``<flow>-<database id>-<UTC minute>`` for every flow; a name the operator typed is kept.

    Prefect calls this when the run starts, and would overwrite whatever name
    the run was created with; a name Prefect did not make up was chosen by
    someone, so it stays.
    """
    current = flow_run.get_name()
    if current and not generated_name(current):
        return str(current)
    return f"{flow_run.get_flow_name()}-{database_of(flow_run.get_parameters())}-{datetime.now(UTC):%Y%m%dT%H%M}"
