"""Which database and replica a run is about, read from its parameters.

Run names, artifact keys and event resources all come from here, so every
flow names them the same way: the database id (``database_id``, else the
database's file name, else the id its replica records, else the replica's
last folder) and the replica, told apart by a short digest of its URL (two
replicas of one database never share an artifact key or an event resource).
"""

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import PurePath
from typing import Any

from coolname.data import config as _coolname_config
from prefect.runtime import flow_run

from tasks._storage import open_replica
from walship.errors import UsageError, WalshipError
from walship.snapshot import recorded_database_id
from walship.storage import parse_replica_url

__all__ = ["database_of", "generated_name", "replica_of", "replica_tag", "run_name", "walship_name"]

# The UI's Run Name field comes filled with a Greek letter (and digits) and a
# star's constellation, e.g. "gamma5-minas-tensor".
_UI_NAME = re.compile(
    r"^(alpha|beta|gamma|delta|epsilon|zeta|eta|theta|iota|kappa|lambda|mu|nu|xi|omicron|pi|rho|sigma|tau"
    r"|upsilon|phi|chi|psi|omega)\d*-[a-z][a-z-]*$"
)
# The word lists Prefect's server draws run names from (prefect.utilities.names).
_slug_lists: dict[str, Any] = dict(_coolname_config)


def replica_tag(replica: str) -> str:
    """Eight hex digits of the replica URL's digest (its canonical form, when it parses)."""
    try:
        canonical = str(parse_replica_url(replica))
    except UsageError:
        canonical = replica
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def database_of(parameters: Mapping[str, Any], run_id: object = None) -> str:
    """The database id a run's parameters name (the same rule as the flows' defaults); ``run_id``: the
    run they belong to, when not the current one."""
    if parameters.get("database_id"):
        return str(parameters["database_id"])
    if parameters.get("database"):
        return PurePath(str(parameters["database"])).name
    if databases := parameters.get("databases"):
        names = [PurePath(str(d)).name for d in databases]
        return names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "")
    replica = str(parameters.get("replica", ""))
    block = str(parameters.get("credentials_block") or "")
    run = str(run_id or flow_run.get_id() or "")
    return _recorded_id(replica, block, run) or _last_folder(replica) or "unknown"


@cache
def _recorded_id(replica: str, credentials_block: str, run: str) -> str | None:
    """The id ``replica`` records, read once per run (its name, artifacts and failure event then agree);
    None when it records none or cannot be read (the run itself says why)."""
    try:
        return recorded_database_id(open_replica(replica, credentials_block or None))
    except WalshipError:
        return None


def replica_of(parameters: Mapping[str, Any]) -> str:
    return str(parameters.get("replica", ""))


def _last_folder(replica: str) -> str:
    try:
        url = parse_replica_url(replica)
    except UsageError:
        return replica.rstrip("/").rsplit("/", 1)[-1]
    return url.name


def generated_name(name: str) -> bool:
    """Whether ``name`` is one Prefect or its UI made up, rather than one an operator typed.

    The server names a run with a slug from coolname's two-word lists (an
    adjective, an animal); "nightly-drill" has the same shape but is no such
    slug, so only the words themselves tell.
    """
    return bool(_UI_NAME.match(name)) or _in_slug_list("2", name)


def _in_slug_list(list_name: str, name: str) -> bool:
    entry = _slug_lists[list_name]
    if entry["type"] == "nested":
        return any(_in_slug_list(child, name) for child in entry["lists"])
    if entry["type"] == "cartesian":
        return _in_product(entry["lists"], name)
    return name in _words(list_name)


def _in_product(lists: list[str], name: str) -> bool:
    """Whether ``name`` is one word of each list in turn, joined by dashes (a word may hold dashes itself)."""
    if len(lists) == 1:
        return _in_slug_list(lists[0], name)
    parts = name.split("-")
    return any(
        _in_slug_list(lists[0], "-".join(parts[:cut])) and _in_product(lists[1:], "-".join(parts[cut:]))
        for cut in range(1, len(parts))
    )


@cache
def _words(list_name: str) -> frozenset[str]:
    entry = _slug_lists[list_name]
    if entry["type"] == "const":
        return frozenset([entry["value"]])
    words = entry.get("words") or ["-".join(p) if isinstance(p, list | tuple) else p for p in entry.get("phrases", [])]
    return frozenset(str(word).replace(" ", "-") for word in words)


def run_name() -> str:
    """``<flow>-<database id>-<UTC minute>-<run>`` for every flow; a name the operator typed is kept.

    Prefect calls this when the run starts, and would overwrite whatever name
    the run was created with; a name Prefect did not make up was chosen by
    someone, so it stays. The run's own digits end the name: runs of one
    minute would share it otherwise (a run id starts with its creation time).
    """
    current = flow_run.get_name()
    if current and not generated_name(current):
        return str(current)
    return walship_name(str(flow_run.get_flow_name()), flow_run.get_parameters(), flow_run.get_id())


def walship_name(flow_name: str, parameters: Mapping[str, Any], run_id: object) -> str:
    """The name ``run_name`` gives a run (the failure hook names a run refused before it started)."""
    run = str(run_id or "").replace("-", "")
    return f"{flow_name}-{database_of(parameters, run_id)}-{datetime.now(UTC):%Y%m%dT%H%M}-{run[-6:]}"
