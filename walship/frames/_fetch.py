"""A framed snapshot fetched whole: runs of frames by ranged reads in parallel, decompressed on every core.

Each worker reads its run frame by frame from one ranged response and
writes each frame's pages at their place in the file, so memory holds a
frame or two per worker whatever the database's size. The whole database's
SHA-256 is still the check: this thread reads back, in order, whatever
prefix of the file is complete, frame by frame as workers report them, while
later runs download (zstd's own checksum and the size of every frame are
checked as it is decompressed). bench/framed_restore.py measures it against
the single-stream restore and Litestream's.
"""

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, NamedTuple

from walship.codec import Progress
from walship.errors import ChecksumMismatchError, CorruptObjectError
from walship.frames._read import decode_frame, read_agreed_layout, read_all
from walship.frames._table import Frame, FrameLayout
from walship.storage import ObjectStore

__all__ = ["RUN_BYTES", "Fetched", "Seed", "fetch_framed"]

# One ranged read's compressed bytes: AWS's guidance for parallel GETs is 8-16 MB a request.
RUN_BYTES = 8 << 20
# Ranged reads in flight: S3 serves about 90 MB/s a connection. No more than the S3 store's connection pool
# keeps (twice its transfer threads), or each extra read opens a connection that is then dropped.
_WORKERS = 6
_HASH_CHUNK = 1 << 20

# Reads ``length`` bytes at ``offset`` of what a restore may take frames from (fewer past its end).
Seed = Callable[[int, int], bytes]


class Fetched(NamedTuple):
    """A framed snapshot written whole: its layout, the SHA-256 verified, the bytes of the object read, and how
    many frames came from the seed instead."""

    layout: FrameLayout
    sha256: str
    fetched: int
    seeded: int


def fetch_framed(
    store: ObjectStore,
    key: str,
    size: int,
    target: BinaryIO,
    *,
    expected_sha256: str,
    expected_size: int,
    progress: Progress | None = None,
    seed: Seed | None = None,
) -> Fetched:
    """Write the database the framed snapshot ``key`` (``size`` bytes stored) holds into ``target``, verified
    against ``expected_sha256`` (when known; "" takes the object's own) and ``expected_size``.

    ``seed`` reads bytes likely equal to the snapshot's (a delta restore's copy): a frame whose SHA-256 they
    match is taken from them, not fetched. The whole file is hashed either way.
    """
    layout = read_agreed_layout(store, key, size, sha256=expected_sha256, raw_size=expected_size)
    fd = target.fileno()
    os.ftruncate(fd, layout.raw_size)
    held = {f.index for f in layout.frames if seed is not None and _seeded(seed, f, fd)}
    runs = _runs([f for f in layout.frames if f.index not in held])
    done_until = _Prefix(layout, fd, progress)
    for frame in layout.frames:
        if frame.index in held:
            done_until.fetched(frame)
    with ThreadPoolExecutor(_WORKERS, thread_name_prefix="walship-fetch") as pool:
        pending: set[Future[None]] = set()
        queue = iter(runs)

        def top_up() -> None:
            while len(pending) < _WORKERS and (run := next(queue, None)) is not None:
                future = pool.submit(_fetch_run, store, key, run, fd, done_until.fetched)
                future.add_done_callback(done_until.wake)
                pending.add(future)

        try:
            top_up()
            while pending:
                done_until.wait()
                for future in [f for f in pending if f.done()]:
                    pending.discard(future)
                    future.result()
                top_up()
                done_until.hash_ready()
        finally:
            for future in pending:
                future.cancel()
    actual = done_until.finish()
    if actual != layout.sha256:
        raise ChecksumMismatchError(f"verify {key}: SHA-256 {actual} does not match recorded {layout.sha256}")
    fetched = sum(f.size for f in layout.frames if f.index not in held) + size - layout.data_end
    return Fetched(layout, actual, fetched, len(held))


def _seeded(seed: Seed, frame: Frame, fd: int) -> bool:
    """Whether ``seed`` holds ``frame``'s bytes; if so they are written in its place."""
    raw = seed(frame.raw_offset, frame.raw_size)
    if len(raw) != frame.raw_size or hashlib.sha256(raw).digest() != frame.sha256:
        return False
    _write_in_place(fd, raw, frame)
    return True


def _runs(frames: Sequence[Frame]) -> list[list[Frame]]:
    """Consecutive frames grouped into ranged reads of about ``RUN_BYTES``."""
    runs: list[list[Frame]] = []
    for frame in frames:
        last = runs[-1] if runs else None
        if (
            last is not None
            and last[-1].index + 1 == frame.index
            and frame.offset + frame.size - last[0].offset <= RUN_BYTES
        ):
            last.append(frame)
        else:
            runs.append([frame])
    return runs


def _fetch_run(store: ObjectStore, key: str, run: Sequence[Frame], fd: int, fetched: Callable[[Frame], None]) -> None:
    start, end = run[0].offset, run[-1].offset + run[-1].size
    with store.open(key, start=start, length=end - start) as stream:
        for frame in run:
            data = read_all(stream, frame.size)
            if len(data) != frame.size:
                raise CorruptObjectError(f"verify {key}: the object ended inside a frame: it is truncated")
            _write_in_place(fd, decode_frame(data, frame, key, check_digest=False), frame)
            fetched(frame)


def _write_in_place(fd: int, raw: bytes, frame: Frame) -> None:
    """``frame``'s raw bytes at their place in the file."""
    view = memoryview(raw)
    while view:
        view = view[os.pwrite(fd, view, frame.raw_offset + frame.raw_size - len(view)) :]


class _Prefix:
    """The whole file's SHA-256, fed in order with what is complete of it (frames fetched, or held).

    Workers report each frame as it is written, so the hash follows the first frames missing, not whole
    runs: when the last run arrives, little is left to hash. The hash reads the file back into one
    reused buffer (a new buffer a read cost more page faults than the read itself).
    """

    def __init__(self, layout: FrameLayout, fd: int, progress: Progress | None) -> None:
        self._layout, self._fd, self._progress = layout, fd, progress
        self._complete = bytearray(len(layout.frames))
        self._next = 0  # the first frame not hashed yet
        self._digest = hashlib.sha256()
        self._buffer = memoryview(bytearray(_HASH_CHUNK))
        self._changed = threading.Condition()
        self._woken = False  # a run ended (or failed): the caller has futures to collect

    def fetched(self, frame: Frame) -> None:
        """``frame``'s pages are in the file (any thread)."""
        with self._changed:
            self._complete[frame.index] = 1
            if frame.index == self._next:
                self._changed.notify()

    def wake(self, _: object = None) -> None:
        """A run ended: ``wait`` returns (any thread)."""
        with self._changed:
            self._woken = True
            self._changed.notify()

    def wait(self) -> None:
        """Until the next frame to hash is complete or a run has ended."""
        with self._changed:
            while not self._woken and not (self._next < len(self._complete) and self._complete[self._next]):
                self._changed.wait()
            self._woken = False

    def hash_ready(self, *, everything: bool = False) -> None:
        """Hash the complete frames that follow what is hashed; back to the caller as soon as a run ends."""
        frames = self._layout.frames
        while self._next < len(frames) and (everything or (self._complete[self._next] and not self._woken)):
            frame = frames[self._next]
            offset, end = frame.raw_offset, frame.raw_offset + frame.raw_size
            while offset < end:
                read = os.preadv(self._fd, [self._buffer[: min(_HASH_CHUNK, end - offset)]], offset)
                if not read:
                    raise CorruptObjectError("restore: the file being restored shrank while it was written")
                self._digest.update(self._buffer[:read])
                offset += read
            self._next += 1
            if self._progress is not None:
                self._progress(end, self._layout.raw_size)

    def finish(self) -> str:
        self.hash_ready(everything=True)
        return self._digest.hexdigest()
