"""The ``ObjectStore`` protocol: everything walship needs from a backend.

Backends are deliberately small; shared logic (snapshot, restore, retention)
is plain functions over this protocol, so every backend gets it for free and
one test suite (tests/test_storage.py) runs against all of them. A backend is
a ``ReplicaURL`` subclass (walship.storage._url) registered for its scheme,
and the store it opens.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

from walship.models import ObjectInfo

__all__ = ["DELETE_BATCH_LIMIT", "ObjectStore", "ReadStream"]

# S3 DeleteObjects accepts at most 1,000 keys per request (S3 API reference,
# DeleteObjects); the local backend honours the same batch size.
DELETE_BATCH_LIMIT = 1000


class ReadStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ObjectStore(Protocol):
    """A flat key space under one replica prefix. Keys never start with '/'.

    Errors are walship's typed errors: ``NotFoundError`` for a missing object
    or bucket, ``ConflictError`` when a conditional write loses,
    ``PermanentStorageError`` for refusals retrying cannot fix, and
    ``TransientStorageError`` for everything worth retrying.
    """

    @property
    def location(self) -> str:
        """The replica URL, for messages (never contains credentials)."""
        ...

    def under(self, prefix: str) -> "ObjectStore":
        """This store's client, for the keys under ``prefix`` ("" or ending in "/"): one client, many replicas."""
        ...

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        """Write a new object from a stream; multipart where the backend has it."""
        ...

    def put_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, sha256: str | None = None
    ) -> ObjectInfo:
        """Write a new object from a local file (lets S3 read parts lazily, in parallel).

        With ``sha256`` (hex), the bytes the store received must hash to it,
        not only the file as it was once read: the file may change while it
        is read, or between botocore's attempts. When they differ,
        ``ChecksumMismatchError``, and nothing is stored under ``key``.
        """
        ...

    def put_chunks(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: Mapping[str, str],
        size_hint: int | None = None,
    ) -> ObjectInfo:
        """Write a new object from chunks produced while it is written (a streamed snapshot).

        ``metadata`` goes with the object from its start (S3 takes a
        multipart upload's metadata when it is created). The object appears
        under ``key`` whole, with that metadata, or not at all: a failure (of
        the store or of the producer, which may raise after its last chunk to
        refuse the object) leaves nothing there, and no pending multipart
        upload. ``size_hint`` (an upper bound of the object's size) lets S3
        choose a part size within its 10,000-part limit.
        """
        ...

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        """Write a small object, optionally only if its ETag is ``if_match`` or it does not exist."""
        ...

    def get_bytes(self, key: str, *, max_size: int) -> tuple[bytes, ObjectInfo]:
        """A small object and its ETag in one request; larger than ``max_size`` is an error."""
        ...

    def open(self, key: str, *, start: int = 0, length: int | None = None) -> AbstractContextManager[ReadStream]:
        """Stream an object, or ``length`` bytes of it from ``start``."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Size, ETag and user metadata of one object."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, in key order, paging as needed."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete keys (missing ones are fine), in batches of ``DELETE_BATCH_LIMIT``."""
        ...
