"""Decoded snapshot frames on local disk, named by their SHA-256, within a byte bound (least recently used go).

A frame's name is its SHA-256 from the snapshot's frame table, so a cached
frame is only ever the bytes that digest names: two snapshots sharing a
frame share its file, a cache directory can serve any later query, and a
file that no longer hashes to its name (a damaged disk) is dropped and
fetched again instead of served.
"""

import contextlib
import hashlib
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

__all__ = ["DEFAULT_CACHE_BYTES", "FrameCache"]

# Enough for the frames of a database's interior b-tree pages and a working set of leaves (frames are 1 MiB).
DEFAULT_CACHE_BYTES = 256 << 20
_SUFFIX = ".frame"


class FrameCache:
    """Frames by SHA-256 in ``directory``, at most ``limit`` bytes of them; a frame bigger than that is not kept."""

    def __init__(self, directory: Path, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"a cache bound of {limit} bytes: give 0 or more")
        self.directory, self.limit = directory, limit
        self.hits = self.misses = 0
        directory.mkdir(parents=True, exist_ok=True)
        # Oldest use first: files a previous query left are ordered by when they were last used (their mtime).
        found = []
        for path in directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append((stat.st_mtime_ns, path.name, stat.st_size))
        self._sizes: OrderedDict[str, int] = OrderedDict((name, size) for _, name, size in sorted(found))
        self.size = sum(self._sizes.values())
        self._evict()

    def get(self, digest: bytes) -> bytes | None:
        name = digest.hex() + _SUFFIX
        if name not in self._sizes:
            self.misses += 1
            return None
        path = self.directory / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # another query sharing the directory evicted it
            self._forget(name)
            self.misses += 1
            return None
        if hashlib.sha256(data).digest() != digest:
            self._forget(name)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self._sizes.move_to_end(name)
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        self.hits += 1
        return data

    def put(self, digest: bytes, data: bytes) -> None:
        """Keep ``data`` (verified to hash to ``digest`` by the caller), evicting the least recently used."""
        name = digest.hex() + _SUFFIX
        if name in self._sizes or len(data) > self.limit:
            return
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(temporary, self.directory / name)
        except OSError:
            # A full disk costs the cache this frame, not the query: it was verified and is served from memory.
            Path(temporary).unlink(missing_ok=True)
            return
        self._sizes[name] = len(data)
        self.size += len(data)
        self._evict()

    def _evict(self) -> None:
        while self.size > self.limit and self._sizes:
            name, _ = next(iter(self._sizes.items()))
            self._forget(name)
            (self.directory / name).unlink(missing_ok=True)

    def _forget(self, name: str) -> None:
        self.size -= self._sizes.pop(name)
