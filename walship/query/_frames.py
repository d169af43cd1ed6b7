"""A framed snapshot read a frame at a time: one ranged GET per frame first needed, each checked, then cached.

Every frame read is checked against its SHA-256 in the frame table (whose
own SHA-256 ``read_layout`` checks) before a page of it is served, so a
damaged frame fails the query naming the object, never a wrong answer. The
few frames in use stay decoded in memory; the rest go to the disk cache.
"""

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar, cast

from walship.frames import FrameLayout, decode_frame, read_agreed_layout, read_frames
from walship.models import SnapshotInfo
from walship.query._cache import FrameCache
from walship.storage import ObjectStore, ReadStream

__all__ = ["Retry", "SnapshotFrames"]

R = TypeVar("R")


class Retry(Protocol):
    """How each storage call is made: at once, or retried on transient errors (``walship.retry.retrying``)."""

    def __call__(self, call: Callable[[], R], /) -> R: ...


# Decoded frames kept in memory: a b-tree descent touches a handful; each is at most 1 MiB.
_HOT_FRAMES = 4


class SnapshotFrames:
    """The pages of the framed snapshot ``snapshot``, served from its frames; ``fetched_bytes`` counts what was
    read of the object (its tables and every frame fetched)."""

    def __init__(self, store: ObjectStore, snapshot: SnapshotInfo, cache: FrameCache, retry: Retry) -> None:
        self._store = _CountingStore(store)
        self.key, self._cache, self._retry = snapshot.key, cache, retry
        self.layout: FrameLayout = retry(
            lambda: read_agreed_layout(
                self._as_store,
                snapshot.key,
                snapshot.compressed_size,
                sha256=snapshot.sha256,
                raw_size=snapshot.raw_size,
                page_size=snapshot.page_size,
            )
        )
        self.page_size = self.layout.page_size
        self._hot: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def fetched_bytes(self) -> int:
        return self._store.read_bytes

    @property
    def _as_store(self) -> ObjectStore:
        return cast(ObjectStore, self._store)

    def page(self, number: int) -> bytes:
        """Page ``number`` (1-based) as the snapshot holds it."""
        frame = self.layout.frame_of_page(number)
        raw = self.frame(frame.index)
        at = (number - 1) * self.page_size - frame.raw_offset
        return raw[at : at + self.page_size]

    def frame(self, index: int) -> bytes:
        """Frame ``index``'s raw bytes, verified against its SHA-256."""
        with self._lock:
            raw = self._hot.get(index)
            if raw is not None:
                self._hot.move_to_end(index)
                return raw
            frame = self.layout.frames[index]
            raw = self._cache.get(frame.sha256)
            if raw is None:
                data = self._retry(lambda: read_frames(self._as_store, self.key, [frame]))
                raw = decode_frame(data, frame, self.key, check_digest=True)
                self._cache.put(frame.sha256, raw)
            self._hot[index] = raw
            if len(self._hot) > _HOT_FRAMES:
                self._hot.popitem(last=False)
            return raw


class _CountingStore:
    """The store, counting the bytes its reads return: what a query cost in transfer."""

    def __init__(self, store: ObjectStore) -> None:
        self._store, self.read_bytes = store, 0

    @contextlib.contextmanager
    def open(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator["_CountingStream"]:
        with self._store.open(key, start=start, length=length) as stream:
            yield _CountingStream(stream, self)


class _CountingStream:
    def __init__(self, stream: ReadStream, owner: _CountingStore) -> None:
        self._stream, self._owner = stream, owner

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._owner.read_bytes += len(data)
        return data
