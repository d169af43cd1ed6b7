"""Object storage: the ``ObjectStore`` protocol and its backends, registered by URL scheme.

A backend is its ``ReplicaURL`` subclass (parses the URL, opens the store)
and its store; registering the subclass for its scheme is all the rest of
walship needs (flow parameters accept every registered scheme). The S3
backend's store is imported when one opens: botocore takes about 0.3 s to
import, which a file:// replica (a restore drill, the demo, a Prefect run's
process) need not pay.
"""

from typing import TYPE_CHECKING, Any

from walship.storage._credentials import StorageCredentials
from walship.storage._local import FileURL, Leftover, LocalStore
from walship.storage._memory import MemoryStore, MemoryURL
from walship.storage._multipart import PartSink
from walship.storage._protocol import DELETE_BATCH_LIMIT, ObjectStore, ReadStream
from walship.storage._s3_url import S3URL
from walship.storage._url import ReplicaURL, parse_replica_url, register, schemes
from walship.storage._versions import (
    BucketProtection,
    LockMode,
    ObjectVersion,
    VersionedStore,
    VersionRefusal,
    newest_before,
    versions_of,
)

if TYPE_CHECKING:
    from walship.storage._s3 import S3Store

__all__ = [
    "DELETE_BATCH_LIMIT",
    "BucketProtection",
    "Leftover",
    "LocalStore",
    "LockMode",
    "MemoryStore",
    "ObjectStore",
    "ObjectVersion",
    "PartSink",
    "ReadStream",
    "ReplicaURL",
    "S3Store",
    "StorageCredentials",
    "VersionRefusal",
    "VersionedStore",
    "leftovers_of",
    "newest_before",
    "open_store",
    "parse_replica_url",
    "register",
    "schemes",
    "versions_of",
]

register("file", FileURL)
register("s3", S3URL)
register("memory", MemoryURL)


def open_store(url: str | ReplicaURL, credentials: StorageCredentials | None = None) -> ObjectStore:
    """Open the backend a replica URL names; ``credentials`` replace the backend's defaults where they are set."""
    replica = parse_replica_url(url) if isinstance(url, str) else url
    return replica.open(credentials)


def leftovers_of(store: ObjectStore) -> tuple[Leftover, ...]:
    """What interrupted uploads left behind in ``store`` (``file://`` only)."""
    return store.leftovers() if isinstance(store, LocalStore) else ()


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from walship.storage._s3 import S3Store  # noqa: PLC0415 - see the module docstring

        return S3Store
    raise AttributeError(f"module 'walship.storage' has no attribute {name!r}")
