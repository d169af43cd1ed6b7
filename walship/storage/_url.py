"""Replica URLs and the registry of backends, by URL scheme.

A backend registers its scheme with its ``ReplicaURL`` subclass, which
parses its URLs and opens its stores. Parsing must stay cheap (a backend's SDK is
imported by ``open``, not by ``parse``): run names, parameter checks and
fleet plans parse URLs that the process may never open.
"""

import abc
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict

from walship.errors import UsageError

if TYPE_CHECKING:
    from walship.storage._credentials import StorageCredentials
    from walship.storage._protocol import ObjectStore

__all__ = ["ReplicaURL", "parse_replica_url", "register", "schemes"]


class ReplicaURL(BaseModel, abc.ABC):
    """A parsed replica location; each backend's subclass adds its own fields and its canonical ``str``."""

    model_config = ConfigDict(frozen=True)

    # How the backend's URLs look, for messages that list the accepted forms.
    example: ClassVar[str]

    scheme: str
    # The replica's keys within what one client reaches ("" or ending in "/"), for ``ObjectStore.under``.
    prefix: str = ""

    @classmethod
    @abc.abstractmethod
    def parse(cls, url: str) -> "ReplicaURL":
        """``url`` (of this backend's scheme) parsed, or ``UsageError`` saying what is wrong and the fix."""

    @abc.abstractmethod
    def open(self, credentials: "StorageCredentials | None" = None) -> "ObjectStore":
        """A store for this replica; ``credentials`` replace the backend's own defaults where it reads them."""

    def at(self, when: datetime) -> "ReplicaURL":
        """This replica as it was at ``when``, read from object versions (a read-only URL)."""
        raise UsageError(
            f"--versions-at reads object versions, which a {self.scheme}:// replica does not keep: "
            "use it on an s3:// replica in a versioned bucket"
        )

    @property
    def read_only(self) -> bool:
        """The URL names a past state of the replica, which nothing may write."""
        return False

    def shared_root(self) -> "ReplicaURL | None":
        """The URL of what one client serves for many replicas (a bucket), or None when a store costs nothing."""
        return None

    @property
    def directory(self) -> Path | None:
        """The directory the replica is, when it is one on this machine's file system."""
        return None

    @property
    def name(self) -> str:
        """The replica's last folder: a name for it when nothing better is known."""
        return self.prefix.rstrip("/").rsplit("/", 1)[-1]


_BACKENDS: dict[str, type[ReplicaURL]] = {}


def register(scheme: str, url_type: type[ReplicaURL]) -> None:
    """Make ``scheme://`` URLs replica URLs, parsed (and so opened) by ``url_type``."""
    _BACKENDS[scheme] = url_type


def schemes() -> tuple[str, ...]:
    """The URL schemes of every registered backend, in registration order."""
    return tuple(_BACKENDS)


def parse_replica_url(url: str) -> ReplicaURL:
    """Parse ``url`` or raise ``UsageError`` saying what is wrong and the fix."""
    url_type = _BACKENDS.get(urlsplit(url).scheme)
    if url_type is None:
        examples = " or ".join(backend.example for backend in _BACKENDS.values())
        raise UsageError(f"replica URL {url!r} has no supported scheme: use {examples}")
    return url_type.parse(url)
