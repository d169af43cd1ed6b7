"""Object storage: the ``ObjectStore`` protocol and its backends.

The S3 backend is imported when first used: boto3 takes about 0.3 s to import,
which a file:// replica (a restore drill, the demo, a Prefect run's process)
need not pay.
"""

from typing import TYPE_CHECKING, Any

from walship.storage._credentials import StorageCredentials
from walship.storage._local import Leftover, LocalStore
from walship.storage._protocol import DELETE_BATCH_LIMIT, ObjectStore, ReadStream
from walship.storage._url import ReplicaURL, parse_replica_url

if TYPE_CHECKING:
    from walship.storage._s3 import S3Store

__all__ = [
    "DELETE_BATCH_LIMIT",
    "Leftover",
    "LocalStore",
    "ObjectStore",
    "ReadStream",
    "ReplicaURL",
    "S3Store",
    "StorageCredentials",
    "leftovers_of",
    "open_store",
    "parse_replica_url",
]


def open_store(url: str | ReplicaURL, credentials: StorageCredentials | None = None) -> ObjectStore:
    """Open the backend a replica URL names; ``credentials`` (S3 only) replace boto3's chain where they are set."""
    replica = parse_replica_url(url) if isinstance(url, str) else url
    if replica.scheme == "file":
        assert replica.path is not None
        return LocalStore(replica.path)
    assert replica.bucket is not None
    from walship.storage._s3 import S3Store  # noqa: PLC0415 - see the module docstring

    return S3Store(replica.bucket, replica.prefix, endpoint=replica.endpoint, credentials=credentials)


def leftovers_of(store: ObjectStore) -> tuple[Leftover, ...]:
    """What interrupted uploads left behind in ``store`` (``file://`` only)."""
    return store.leftovers() if isinstance(store, LocalStore) else ()


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from walship.storage._s3 import S3Store  # noqa: PLC0415 - see the module docstring

        return S3Store
    raise AttributeError(f"module 'walship.storage' has no attribute {name!r}")
