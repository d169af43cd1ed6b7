"""Writing a framed snapshot: the database's pages in independent zstd frames, compressed on every core.

Independent frames are what let a restore fetch and decompress parts of the
object in parallel and a query read one page without what comes before it;
each is compressed alone, so they are compressed in parallel too (one zstd
compressor per thread: zstd releases the GIL). Frames go out in order as
they are ready, at most a few per thread in memory.
"""

import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import zstandard

from walship.codec import CHUNK_SIZE, Progress, StreamTotals, Writable, validate_level
from walship.errors import CorruptObjectError
from walship.frames._table import format_tail

__all__ = ["FRAME_BYTES", "compress_framed", "framed_chunks", "pages_per_frame"]

# A frame's raw size: small enough that a query reading one page fetches little, big enough that zstd's
# ratio stays within a few percent of one stream's (bench/framed_restore.py measures both).
FRAME_BYTES = 1 << 20
_IN_FLIGHT_PER_THREAD = 2


def pages_per_frame(page_size: int) -> int:
    return max(1, FRAME_BYTES // page_size)


def framed_chunks(
    blocks: Iterable[bytes | bytearray],
    totals: StreamTotals,
    *,
    size: int,
    page_size: int,
    level: int,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """Compress ``size`` raw bytes arriving as ``blocks`` into frames of whole pages, yielded in order, then the
    tables (``walship.frames._table``). ``totals`` is complete once the last chunk has been yielded; a stream
    of another size than announced raises ``CorruptObjectError`` before the tables, so no whole object is made."""
    validate_level(level)
    per_frame = pages_per_frame(page_size)
    frame_bytes = per_frame * page_size
    digest = hashlib.sha256()
    written: list[tuple[int, int, bytes]] = []
    buffer = bytearray()
    done = 0
    with _FrameCompressor(level) as compressor:
        for block in blocks:
            digest.update(block)
            done += len(block)
            buffer += block
            while len(buffer) >= frame_bytes:
                compressor.submit(bytes(buffer[:frame_bytes]))
                del buffer[:frame_bytes]
                yield from _counted(compressor.ready(), written, totals)
            if progress is not None:
                progress(done, size)
        if done != size:
            raise CorruptObjectError(f"compress: {done} bytes arrived, {size} announced")
        if buffer:
            compressor.submit(bytes(buffer))
        yield from _counted(compressor.ready(wait_all=True), written, totals)
    totals.raw_size, totals.sha256 = done, digest.hexdigest()
    tail = format_tail(
        page_size=page_size, pages_per_frame=per_frame, raw_size=done, sha256=totals.sha256, frames=written
    )
    totals.compressed_size += len(tail)
    yield tail


def compress_framed(
    source: Path, out: Writable, *, page_size: int, level: int, progress: Progress | None = None
) -> StreamTotals:
    """Compress the file ``source`` into ``out`` as a framed snapshot; its sizes and SHA-256."""
    totals = StreamTotals()
    size = source.stat().st_size
    with source.open("rb") as raw:
        blocks = iter(lambda: raw.read(CHUNK_SIZE), b"")
        for chunk in framed_chunks(blocks, totals, size=size, page_size=page_size, level=level, progress=progress):
            out.write(chunk)
    return totals


def _counted(
    frames: Iterator[tuple[bytes, int, bytes]], written: list[tuple[int, int, bytes]], totals: StreamTotals
) -> Iterator[bytes]:
    for compressed, raw_size, frame_digest in frames:
        written.append((len(compressed), raw_size, frame_digest))
        totals.compressed_size += len(compressed)
        yield compressed


class _FrameCompressor:
    """Frames compressed on a few threads, handed back in the order they were submitted."""

    def __init__(self, level: int) -> None:
        threads = min(4, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="walship-frame")
        self._limit = threads * _IN_FLIGHT_PER_THREAD
        self._pending: deque[Future[tuple[bytes, int, bytes]]] = deque()
        self._local = threading.local()
        self._level = level

    def __enter__(self) -> "_FrameCompressor":
        return self

    def __exit__(self, *exc_info: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)

    def submit(self, raw: bytes) -> None:
        self._pending.append(self._pool.submit(self._compress, raw))

    def ready(self, *, wait_all: bool = False) -> Iterator[tuple[bytes, int, bytes]]:
        """The oldest frames: every one done, and those over the in-flight limit (or all) waited for."""
        while self._pending and (wait_all or len(self._pending) > self._limit or self._pending[0].done()):
            yield self._pending.popleft().result()

    def _compress(self, raw: bytes) -> tuple[bytes, int, bytes]:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(
                level=self._level, write_checksum=True, write_content_size=True
            )
        return compressor.compress(raw), len(raw), hashlib.sha256(raw).digest()
