"""Which files a fleet is, and where each one's replicas are.

A deployment names databases as paths or glob patterns and one replica URL
or several (templates). Each database gets a replica of its own per
template (a replica prefix holds one database): ``{name}`` in the URL is
replaced by the database's file name, and a URL without it is a base under
which each database goes as ``<base>/<file name>``. Two databases with one
file name would share a replica, so they are refused, as is any replica that
two templates name for one database or for two; so is a ``file://`` replica
that would be the database file itself (a base that is the databases' own
directory).
"""

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field

from walship.errors import UsageError
from walship.storage import ReplicaURL, parse_replica_url

__all__ = ["NAME_PLACEHOLDER", "FleetMember", "plan_fleet", "replica_for"]

NAME_PLACEHOLDER = "{name}"
# SQLite's companion files and walship's spool directories sit beside the
# databases, and a pattern such as ``*`` or ``*.db*`` matches them too.
_NOT_DATABASES = ("-wal", "-shm", "-journal", "-walship", "-walship.lock")
# A file name goes into a URL path: keep to characters that need no quoting.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._+-]+$")


class FleetMember(BaseModel):
    """One database of a fan-out and the replicas it is backed up to, one per template, in their order."""

    database: Path
    replicas: list[str] = Field(min_length=1)

    @property
    def replica(self) -> str:
        """Its first replica: the only one with one template."""
        return self.replicas[0]


def replica_for(replica: str, database: Path) -> str:
    """The replica URL of ``database`` under ``replica`` (a base, or a ``{name}`` template)."""
    name = database.name
    if not _SAFE_NAME.match(name):
        raise UsageError(
            f"database file name {name!r} cannot go into a replica URL: "
            "rename it to letters, digits, '.', '_', '+' or '-', or give it a deployment of its own"
        )
    if NAME_PLACEHOLDER in replica:
        url = replica.replace(NAME_PLACEHOLDER, name)
    else:
        parts = urlsplit(replica)
        url = urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{name}"))
    _check_apart(parse_replica_url(url), database)  # a bad base fails here, naming the URL
    return url


def _check_apart(url: ReplicaURL, database: Path) -> None:
    """A replica that is a directory (``file://``): the database file itself, or a path under it, can never be one."""
    if url.directory is None:
        return
    root, file = Path(os.path.realpath(url.directory)), Path(os.path.realpath(database))
    if root == file or file in root.parents:
        raise UsageError(
            f"replica {url} of {database} cannot be the database file{'' if root == file else ' or under it'}: "
            "use a replica directory apart from the databases, e.g. file:///backups/{name}"
        )


def plan_fleet(patterns: Sequence[str], replicas: str | Sequence[str]) -> tuple[list[FleetMember], list[str]]:
    """The databases ``patterns`` name (sorted, each once) with their replicas (one per template of
    ``replicas``), and the glob patterns that matched nothing. A plain path is kept even if it does not
    exist: its run then fails and says so, like a single database's would."""
    templates = [replicas] if isinstance(replicas, str) else list(replicas)
    members: dict[Path, FleetMember] = {}
    unmatched: list[str] = []
    for pattern in patterns:
        paths = _expand(pattern)
        if not paths:
            unmatched.append(pattern)
        for path in paths:
            if path.absolute() not in members:
                urls = [replica_for(template, path) for template in templates]
                members[path.absolute()] = FleetMember(database=path, replicas=urls)
    by_name: dict[str, Path] = {}
    for member in members.values():
        other = by_name.setdefault(member.database.name, member.database)
        if other != member.database:
            raise UsageError(
                f"databases {other} and {member.database} have the same file name, so they would share a replica: "
                "give them distinct names or separate deployments"
            )
    if len(templates) > 1:  # one template gives distinct names distinct replicas
        _check_each_replica_once(list(members.values()))
    return list(members.values()), unmatched


def _check_each_replica_once(members: list[FleetMember]) -> None:
    """One place named twice by the templates: for one database (its run would refuse it), or for two (e.g.
    ``{name}`` beside ``{name}-copy`` and databases named ``a.db`` and ``a.db-copy``)."""
    owners: dict[str, Path] = {}
    for member in members:
        for url in member.replicas:
            place = str(parse_replica_url(url))  # canonical: file:///r and file:///r/ are one place
            if place not in owners:
                owners[place] = member.database
                continue
            if owners[place] == member.database:
                raise UsageError(
                    f"replica {url} of {member.database} is named by two --replica templates: name each place once"
                )
            raise UsageError(
                f"databases {owners[place]} and {member.database} would share replica {url}: "
                "give each template a place of its own, e.g. {name} under distinct bases"
            )


def _expand(pattern: str) -> list[Path]:
    if not any(c in pattern for c in "*?["):
        return [Path(pattern)]
    matches = (Path(p) for p in sorted(glob.glob(pattern)))
    return [p for p in matches if p.is_file() and not p.name.endswith(_NOT_DATABASES)]
