"""In-process backend (``memory://name/prefix``), for tests: objects live in this process's memory.

Stores opened on one name share its objects for as long as the process
lives, as replicas in one bucket do. Large objects go through the multipart
driver, as on S3: a failure leaves nothing under the key and no pending
upload (``pending_uploads``).
"""

import contextlib
import hashlib
import io
import itertools
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from walship.codec import CHUNK_SIZE
from walship.errors import ConflictError, CorruptObjectError, NotFoundError, UsageError
from walship.models import ObjectInfo
from walship.storage._credentials import StorageCredentials
from walship.storage._multipart import part_size_for, upload
from walship.storage._protocol import ReadStream
from walship.storage._url import ReplicaURL

__all__ = ["MemoryStore", "MemoryURL"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class MemoryURL(ReplicaURL):
    """A named space of objects in this process (credentials do not apply)."""

    example = "memory://name/prefix (in-process, for tests)"

    space: str

    @classmethod
    def parse(cls, url: str) -> "MemoryURL":
        parts = urlsplit(url)
        prefix = parts.path.strip("/")
        if not _NAME.match(parts.netloc) or parts.query or "//" in prefix or ".." in prefix.split("/"):
            raise UsageError(f"replica URL {url!r} is not memory://name/prefix (lowercase name, plain path segments)")
        return cls(scheme="memory", space=parts.netloc, prefix=f"{prefix}/" if prefix else "")

    def open(self, credentials: StorageCredentials | None = None) -> "MemoryStore":
        return MemoryStore(self.space, self.prefix)

    def shared_root(self) -> "MemoryURL":
        return self.model_copy(update={"prefix": ""})

    def __str__(self) -> str:
        return f"memory://{self.space}/{self.prefix}"


@dataclass(frozen=True)
class _Object:
    data: bytes
    etag: str
    modified: datetime
    metadata: dict[str, str]


@dataclass
class _Upload:
    metadata: dict[str, str]
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Space:
    objects: dict[str, _Object] = field(default_factory=dict)  # by full key
    uploads: dict[str, _Upload] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SPACES: dict[str, _Space] = {}
_SPACES_LOCK = threading.Lock()
_UPLOAD_IDS = itertools.count(1)


class MemoryStore:
    """An ``ObjectStore`` over a named space of this process, and the ``PartSink`` of its multipart uploads."""

    def __init__(self, space: str, prefix: str = "") -> None:
        self.space, self.prefix = space, prefix
        with _SPACES_LOCK:
            self._space = _SPACES.setdefault(space, _Space())

    @property
    def location(self) -> str:
        return f"memory://{self.space}/{self.prefix}"

    def under(self, prefix: str) -> "MemoryStore":
        return MemoryStore(self.space, f"{self.prefix}{prefix}")

    def pending_uploads(self) -> list[str]:
        """Multipart uploads begun and neither completed nor aborted."""
        with self._space.lock:
            return sorted(self._space.uploads)

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        part = part_size_for(None)
        return upload(self, key, iter(lambda: stream.read(part), b""), metadata=dict(metadata or {}))

    def put_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, sha256: str | None = None
    ) -> ObjectInfo:
        with path.open("rb") as handle:
            chunks = iter(lambda: handle.read(CHUNK_SIZE), b"")
            return upload(self, key, chunks, metadata=dict(metadata or {}), sha256=sha256)

    def put_chunks(
        self, key: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str], size_hint: int | None = None
    ) -> ObjectInfo:
        return upload(self, key, chunks, metadata=metadata, size_hint=size_hint)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        with self._space.lock:
            current = self._space.objects.get(self.prefix + key)
            if if_none_match and current is not None:
                raise ConflictError(f"memory: put {self.location}{key}: object already exists")
            if if_match is not None and (current is None or current.etag != if_match):
                raise ConflictError(f"memory: put {self.location}{key}: not the object read (ETag {if_match})")
            return self._store(key, data, dict(metadata or {}))

    def get_bytes(self, key: str, *, max_size: int) -> tuple[bytes, ObjectInfo]:
        found = self._get(key)
        if len(found.data) > max_size:
            raise CorruptObjectError(f"memory: get {self.location}{key}: larger than {max_size} bytes")
        return found.data, self._info(key, found)

    @contextlib.contextmanager
    def open(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[ReadStream]:
        data = self._get(key).data
        yield io.BytesIO(data[start : None if length is None else start + length])

    def head(self, key: str) -> ObjectInfo:
        return self._info(key, self._get(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._space.lock:
            found = sorted((k, o) for k, o in self._space.objects.items() if k.startswith(self.prefix + prefix))
        for full, stored in found:  # as S3 lists: without metadata
            yield self._info(full[len(self.prefix) :], stored).model_copy(update={"metadata": {}})

    def delete(self, keys: Sequence[str]) -> None:
        with self._space.lock:
            for key in keys:
                self._space.objects.pop(self.prefix + key, None)

    # The PartSink of walship.storage._multipart.

    def put_whole(self, key: str, data: bytes | bytearray, *, metadata: dict[str, str], sha256: bytes) -> ObjectInfo:
        with self._space.lock:
            return self._store(key, bytes(data), metadata)

    def create_upload(self, key: str, *, metadata: dict[str, str]) -> str:
        upload_id = f"{self.prefix}{key}#{next(_UPLOAD_IDS)}"
        with self._space.lock:
            self._space.uploads[upload_id] = _Upload(dict(metadata))
        return upload_id

    def put_part(self, key: str, upload: str, number: int, data: bytearray, *, sha256: bytes) -> int:
        with self._space.lock:
            self._uploaded(key, upload).parts[number] = bytes(data)
        return number

    def complete_upload(self, key: str, upload: str, parts: Sequence[int]) -> None:
        with self._space.lock:
            sent = self._uploaded(key, upload)
            self._store(key, b"".join(sent.parts[n] for n in parts), sent.metadata)
            del self._space.uploads[upload]

    def abort_upload(self, key: str, upload: str) -> None:
        with self._space.lock:
            self._space.uploads.pop(upload, None)

    def _uploaded(self, key: str, upload: str) -> _Upload:
        if upload not in self._space.uploads:
            raise NotFoundError(f"memory: put {self.location}{key}: no such upload {upload}")
        return self._space.uploads[upload]

    def _store(self, key: str, data: bytes, metadata: dict[str, str]) -> ObjectInfo:
        """Called with the space's lock held."""
        stored = _Object(data, hashlib.md5(data, usedforsecurity=False).hexdigest(), datetime.now(UTC), metadata)
        self._space.objects[self.prefix + key] = stored
        return self._info(key, stored)

    def _info(self, key: str, stored: _Object) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=len(stored.data),
            etag=stored.etag,
            last_modified=stored.modified,
            metadata=dict(stored.metadata),
        )

    def _get(self, key: str) -> _Object:
        with self._space.lock:
            found = self._space.objects.get(self.prefix + key)
        if found is None:
            raise NotFoundError(f"memory: {self.location}{key}: no such object")
        return found
