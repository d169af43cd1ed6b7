"""Local-directory backend (``file://``): the embedded default.

Every write goes to a temporary file in the same file system, is fsynced,
then renamed into place, so a reader never sees half an object. User
metadata lives in a sidecar under ``.meta/`` and the ETag is the MD5 of the
content, as S3 computes it for single-part objects. A file without a sidecar
is an object without metadata, as S3 would hold it.

A writer holds an flock on its temporary file while it writes, so the file
of an upload that was killed (``leftovers``) can be told from one a live
upload still writes, and only the former is ever removed.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from pydantic import BaseModel

from walship._fs import fsync_dir
from walship.codec import CHUNK_SIZE
from walship.errors import (
    ChecksumMismatchError,
    ConflictError,
    CorruptObjectError,
    NotFoundError,
    PermanentStorageError,
    UsageError,
)
from walship.models import ObjectInfo
from walship.storage._credentials import StorageCredentials
from walship.storage._local_errors import local_error
from walship.storage._protocol import ReadStream
from walship.storage._url import ReplicaURL

__all__ = ["FileURL", "Leftover", "LocalStore"]

_META_DIR = ".meta"
_TMP_DIR = ".tmp"
_LOCK_FILE = ".lock"


class FileURL(ReplicaURL):
    """``file:///absolute/dir``: a directory on this machine (credentials do not apply)."""

    example = "file:///absolute/dir"

    path: Path

    @classmethod
    def parse(cls, url: str) -> "FileURL":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise UsageError(
                f"replica URL {url!r} is not an absolute directory: use file:///absolute/dir (three slashes)"
            )
        if parts.query:
            raise UsageError(f"replica URL {url!r}: file:// URLs take no query parameters")
        return cls(scheme="file", path=Path(parts.path))

    def open(self, credentials: StorageCredentials | None = None) -> "LocalStore":
        return LocalStore(self.path)

    @property
    def directory(self) -> Path:
        return self.path

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return f"file://{self.path}"


class Leftover(BaseModel):
    """A temporary file in ``.tmp`` that no rename will ever turn into an object, unless a live upload holds it."""

    key: str  # ".tmp/<name>"
    size: int
    modified: datetime
    in_use: bool  # a live upload holds it (its flock)


class LocalStore:
    """An ``ObjectStore`` over a directory tree, or the part of it under ``prefix`` ("" or ending in "/")."""

    def __init__(self, root: Path, prefix: str = "") -> None:
        self.root, self.prefix = root, prefix

    @property
    def location(self) -> str:
        return f"file://{self.root / self.prefix}"

    def under(self, prefix: str) -> "LocalStore":
        # One directory's sidecars and temporary files, not one per prefix: a prefix's lists stay its objects.
        return LocalStore(self.root, f"{self.prefix}{prefix}")

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        return self._write(key, _chunks_of(stream), metadata)

    def put_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, sha256: str | None = None
    ) -> ObjectInfo:
        with path.open("rb") as stream:
            return self._write(key, _chunks_of(stream), metadata, sha256)

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
        except FileNotFoundError:
            raise NotFoundError(f"file: head {key}: no such object in {self.location}") from None
        except OSError as exc:
            raise local_error(exc, self.root, f"head {key}") from exc
        try:
            sidecar = json.loads(self._meta_path(key).read_text())
        except FileNotFoundError:
            # A file walship did not write (or whose sidecar was deleted) is what
            # S3 shows for an object put without metadata: listed, so it exists.
            # Its ETag changes whenever a write changes it, without reading it.
            return ObjectInfo(key=key, size=stat.st_size, etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}")
        except OSError as exc:
            raise local_error(exc, self.root, f"head {key}") from exc
        return ObjectInfo(key=key, size=stat.st_size, etag=sidecar["etag"], metadata=sidecar["metadata"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            return
        with self._refusals(f"list {prefix or '/'}"):
            start = self._listing_start(prefix)
            for path in sorted(self._walk(start)) if start is not None else ():
                key = path.relative_to(self.root).as_posix()
                if key.startswith(self.prefix + prefix):
                    yield ObjectInfo(key=key[len(self.prefix) :], size=path.stat().st_size)

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

    def leftovers(self) -> tuple[Leftover, ...]:
        """The files in ``.tmp``: those not ``in_use`` were left by uploads that were killed."""
        found = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / _TMP_DIR):
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat(follow_symlinks=False)
                    found.append(
                        Leftover(
                            key=f"{_TMP_DIR}/{entry.name}",
                            size=stat.st_size,
                            modified=datetime.fromtimestamp(stat.st_mtime, UTC),
                            in_use=_in_use(Path(entry.path)),
                        )
                    )
        return tuple(sorted(found, key=lambda leftover: leftover.key))

    def remove_leftovers(self, keys: Sequence[str]) -> tuple[str, ...]:
        """Remove the named ``.tmp`` files that no live upload holds; the keys removed."""
        removed = []
        for key in keys:
            name = key.removeprefix(f"{_TMP_DIR}/")
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"not a leftover: {key!r}")
            path = self.root / _TMP_DIR / name
            try:
                with path.open("rb") as held:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    path.unlink()
            except FileNotFoundError:
                pass
            except BlockingIOError:
                continue  # a live upload writes it
            except OSError as exc:
                raise PermanentStorageError(f"file: remove leftover {key}: {exc}") from exc
            removed.append(key)
        return tuple(removed)

    def _listing_start(self, prefix: str) -> Path | None:
        """The directory a listing of ``prefix`` walks: only the one the prefix names can hold its keys, so a
        narrow prefix costs that directory's walk, not the replica's (None: no such directory, no keys)."""
        directory = (self.prefix + prefix).rpartition("/")[0]
        parts = directory.split("/") if directory else []
        if any(p in ("", ".", "..") for p in parts) or (parts and parts[0] in (_META_DIR, _TMP_DIR)):
            return self.root  # not a key's directory: the whole walk, filtered, as for any prefix
        start = self.root
        for part in parts:
            start = start / part
            if start.is_symlink() or not start.is_dir():  # the walk never follows a link either
                return None
        return start

    def _walk(self, directory: Path) -> Iterator[Path]:
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                if directory == self.root and entry.name in (_META_DIR, _TMP_DIR):
                    continue
                yield from self._walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and not (directory == self.root and entry.name == _LOCK_FILE):
                yield Path(entry.path)

    def _write(
        self, key: str, chunks: Iterable[bytes], metadata: Mapping[str, str] | None, sha256: str | None = None
    ) -> ObjectInfo:
        """Write the object through a temporary file; with ``sha256``, only if what was written hashes to it."""
        target = self._path(key)
        tmp_dir = self.root / _TMP_DIR
        with self._refusals(f"put {key}"):
            tmp_dir.mkdir(parents=True, exist_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            self._meta_path(key).parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        digest = hashlib.md5(usedforsecurity=False)
        written = hashlib.sha256() if sha256 is not None else None
        size = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when it closes: see ``leftovers``
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    if written is not None:
                        written.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                if written is not None and written.hexdigest() != sha256:
                    raise ChecksumMismatchError(
                        f"file: put {key}: the bytes written have SHA-256 {written.hexdigest()}, not {sha256}: "
                        "nothing stored"
                    )
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
        _check_key(self.prefix + key)
        return self.root / f"{self.prefix}{key}"

    def _meta_path(self, key: str) -> Path:
        _check_key(self.prefix + key)
        return self.root / _META_DIR / f"{self.prefix}{key}.json"


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
    fcntl.flock(fd, fcntl.LOCK_EX)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp_name, path)


def _in_use(path: Path) -> bool:
    try:
        with path.open("rb") as probe:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
