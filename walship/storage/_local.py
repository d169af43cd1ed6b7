"""Local-directory backend (``file://``): the embedded default.

Every write goes to a temporary file in the same file system, is fsynced,
then renamed into place, so a reader never sees half an object. User
metadata lives in a sidecar under ``.meta/`` and the ETag is the MD5 of the
content, as S3 computes it for single-part objects.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from walship._fs import fsync_dir
from walship.codec import CHUNK_SIZE
from walship.errors import ConflictError, CorruptObjectError, NotFoundError, PermanentStorageError
from walship.models import ObjectInfo
from walship.storage._local_errors import local_error
from walship.storage._protocol import ReadStream

__all__ = ["LocalStore"]

_META_DIR = ".meta"
_TMP_DIR = ".tmp"
_LOCK_FILE = ".lock"


class LocalStore:
    """An ``ObjectStore`` over a directory tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return f"file://{self.root}"

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, _chunks_of(stream), metadata)

    def put_file(self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        with path.open("rb") as stream:
            return self._write(key, _chunks_of(stream), metadata)

    def put_chunks(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: Mapping[str, str],
        size_hint: int | None = None,
    ) -> ObjectInfo:
        return self._write(key, chunks, metadata)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        if if_match is None and not if_none_match:
            return self._write(key, [data], metadata)
        # The lock makes compare-and-rename atomic against other walship
        # processes writing to the same directory.
        with self._locked(f"put {key}"):
            current = self._etag_or_none(key)
            if if_none_match and current is not None:
                raise ConflictError(f"file: put {key}: object already exists")
            if if_match is not None and current != if_match:
                raise ConflictError(f"file: put {key}: ETag is {current}, expected {if_match}")
            return self._write(key, [data], metadata)

    def get_bytes(self, key: str, *, max_size: int) -> tuple[bytes, ObjectInfo]:
        with self._refusals(f"get {key}"):
            if not self.root.is_dir():
                raise NotFoundError(f"file: get {key}: replica directory {self.root} does not exist")
            if not self._path(key).is_file():
                # Before the lock, whose file would be left in a directory that may hold no replica at all.
                raise NotFoundError(f"file: get {key}: no such object in {self.location}")
        # Conditional writes hold the same lock: content and ETag come from one write.
        with self._locked(f"get {key}"), self._refusals(f"get {key}"):
            info = self.head(key)
            if info.size > max_size:
                raise CorruptObjectError(f"file: get {key}: larger than {max_size} bytes")
            return self._path(key).read_bytes(), info

    @contextlib.contextmanager
    def open(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[ReadStream]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"file: open {key}: no such object in {self.location}") from None
        except OSError as exc:
            raise local_error(exc, self.root, f"open {key}") from exc
        with handle:
            handle.seek(start)
            yield handle if length is None else _LimitedReader(handle, length)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            stat = path.stat()
            sidecar = json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"file: head {key}: no such object in {self.location}") from None
        except OSError as exc:
            raise local_error(exc, self.root, f"head {key}") from exc
        return ObjectInfo(key=key, size=stat.st_size, etag=sidecar["etag"], metadata=sidecar["metadata"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        with self._refusals(f"list {prefix or '/'}"):
            for path in sorted(self._walk(self.root)):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield ObjectInfo(key=key, size=path.stat().st_size)

    def delete(self, keys: Sequence[str]) -> None:
        failed: list[str] = []
        for key in keys:
            try:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()
                with contextlib.suppress(FileNotFoundError):
                    self._meta_path(key).unlink()
            except OSError as exc:
                failed.append(f"{key}: {exc.strerror}")
        if failed:
            raise PermanentStorageError(f"file: delete: {len(failed)} of {len(keys)} not deleted (first {failed[0]})")

    def _walk(self, directory: Path) -> Iterator[Path]:
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                if directory == self.root and entry.name in (_META_DIR, _TMP_DIR):
                    continue
                yield from self._walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and not (directory == self.root and entry.name == _LOCK_FILE):
                yield Path(entry.path)

    def _write(self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None) -> ObjectInfo:
        target = self._path(key)
        tmp_dir = self.root / _TMP_DIR
        with self._refusals(f"put {key}"):
            tmp_dir.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._meta_path(key).parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            etag = digest.hexdigest()
            described = dict(metadata or {})
            # Sidecar first: a data file is never visible without its metadata.
            _atomic_write_text(self._meta_path(key), json.dumps({"etag": etag, "metadata": described}), tmp_dir)
            os.replace(tmp_name, target)
            fsync_dir(target.parent)
        except BaseException as exc:
            # Whatever failed (the disk, or the producer of the chunks), nothing stays behind.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            if not isinstance(exc, OSError):
                raise
            raise local_error(exc, self.root, f"put {key}") from exc
        return ObjectInfo(key=key, size=size, etag=etag, metadata=described)

    def _etag_or_none(self, key: str) -> str | None:
        try:
            return self.head(key).etag
        except NotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self, doing: str) -> Iterator[None]:
        with self._refusals(doing):
            self.root.mkdir(parents=True, exist_ok=True)
            lock = (self.root / _LOCK_FILE).open("a")
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _refusals(self, doing: str) -> Iterator[None]:
        """The operating system's refusals within, as walship's errors (what the caller does is its own)."""
        try:
            yield
        except OSError as exc:
            raise local_error(exc, self.root, doing) from exc

    def _path(self, key: str) -> Path:
        _check_key(key)
        return self.root / key

    def _meta_path(self, key: str) -> Path:
        _check_key(key)
        return self.root / _META_DIR / f"{key}.json"


def _chunks_of(stream: ReadStream) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_SIZE):
        yield chunk


class _LimitedReader:
    def __init__(self, raw: BinaryIO, length: int) -> None:
        self._raw = raw
        self._left = length

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        chunk = self._raw.read(size)
        self._left -= len(chunk)
        return chunk


def _check_key(key: str) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] in (_META_DIR, _TMP_DIR):
        raise ValueError(f"invalid object key: {key!r}")


def _atomic_write_text(path: Path, text: str, tmp_dir: Path) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="meta-")
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp_name, path)
