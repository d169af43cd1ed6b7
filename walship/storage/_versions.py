"""Object versions: what a versioned (and Object Lock) bucket adds to the ``ObjectStore`` protocol.

A backend that keeps versions implements ``VersionedStore`` beside
``ObjectStore``; ``file://`` and ``memory://`` keep none. The writer's path
(snapshot, ship) never uses any of this, so a versioned bucket costs an
upload no request; retention deletes versions, status and verify read the
lock, and ``--versions-at`` reads the replica as it was.
"""

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "BucketProtection",
    "LockMode",
    "ObjectVersion",
    "VersionRefusal",
    "VersionedStore",
    "newest_before",
    "versions_of",
]

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


class BucketProtection(BaseModel):
    """How a bucket keeps what was written: versioning, and Object Lock's default retention."""

    model_config = ConfigDict(frozen=True)

    # None: the credential may not read it (the writer's need not).
    versioning: Literal["Enabled", "Suspended", "Off"] | None
    lock_mode: LockMode | None = None
    lock_days: int | None = None  # the default retention, years counted as 365 days
    lock_known: bool = True

    @property
    def versioned(self) -> bool:
        """Versions exist (a suspended bucket keeps those it made)."""
        return self.versioning in ("Enabled", "Suspended")

    def default_until(self, written: datetime) -> datetime | None:
        """When the default retention of a version written at ``written`` ends (None: no default)."""
        if self.lock_mode is None or self.lock_days is None:
            return None
        return written + timedelta(days=self.lock_days)

    def describe(self) -> str:
        if self.versioning is None:
            return "unknown (the credential may not read the bucket's versioning)"
        versioning = {"Enabled": "versioning on", "Suspended": "versioning suspended", "Off": "no versioning"}
        text = versioning[self.versioning]
        if not self.lock_known:
            return f"{text}; object lock unknown (the credential may not read it)"
        if self.lock_mode is None:
            return f"{text}; no default object lock"
        return f"{text}; object lock {self.lock_mode}, {self.lock_days} days by default"


class ObjectVersion(BaseModel):
    """One version of one key, or a delete marker."""

    model_config = ConfigDict(frozen=True)

    key: str
    version_id: str
    last_modified: datetime
    size: int = 0
    etag: str = ""
    delete_marker: bool = False


class VersionRefusal(BaseModel):
    """A version storage would not delete, and why (``AccessDenied``: held by a lock or a policy)."""

    model_config = ConfigDict(frozen=True)

    key: str
    version_id: str
    code: str
    message: str = ""


@runtime_checkable
class VersionedStore(Protocol):
    """What a store of a bucket that may keep versions offers beside ``ObjectStore``."""

    def protection(self) -> BucketProtection:
        """The bucket's versioning and default lock, as far as the credential may read them."""
        ...

    def versions(self, prefix: str = "") -> Iterator[Sequence[ObjectVersion]]:
        """Every key under ``prefix`` in key order, each as its versions and delete markers, newest first."""
        ...

    def delete_versions(self, versions: Sequence[ObjectVersion]) -> Sequence[VersionRefusal]:
        """Delete these versions for good; those storage refused come back."""
        ...

    def version_lock(self, key: str, version_id: str | None = None) -> tuple[LockMode | None, datetime | None]:
        """The lock mode and retain-until date of one version (None: the current one)."""
        ...


def versions_of(store: object) -> VersionedStore | None:
    """``store`` as a ``VersionedStore`` when its backend keeps versions at all."""
    return store if isinstance(store, VersionedStore) else None


def newest_before(versions: Sequence[ObjectVersion], at: datetime) -> ObjectVersion | None:
    """The version of one key current at ``at`` (newest first in ``versions``): None when none, or a delete marker.

    Storage records times to the second: a version written within ``at``'s
    second counts as written before it.
    """
    for version in versions:
        if version.last_modified <= at:
            return None if version.delete_marker else version
    return None
