"""Streaming zstd with a SHA-256 of the uncompressed bytes, computed on the fly.

Memory stays bounded by the chunk size and zstd's window whatever the input
size: nothing here holds a whole object.
"""

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import zstandard

from walship.errors import ChecksumMismatchError, CorruptObjectError, UsageError
from walship.trailer import format_trailer

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_LEVEL",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "DecompressingWriter",
    "PrefixedReader",
    "Progress",
    "Readable",
    "SealingWriter",
    "StreamTotals",
    "Writable",
    "check_decoded",
    "compress_blocks",
    "compress_into",
    "decompress_stream",
    "decompress_to_file",
    "validate_level",
]

CHUNK_SIZE = 1 << 20
# Chunks small enough to stay in L2 cache between zstd, SHA-256 and the
# file (measured in bench/: 256 KiB beat 1 MiB by about a third).
_SMALL_CHUNK = 256 << 10
_COMPRESS_JOB = 1 << 20
# Segments at least this big are compressed by zstd's workers (SealingWriter).
# Below it the workers cost more CPU than they save time: level 3 on WAL
# frames, one thread against two workers, 8 MiB 10.3 against 14.6 ms of CPU
# and no faster; 32 MiB 42 against 61 ms of CPU for 36 ms of wall instead of
# 42. A shipper under 500 tx/s seals 8 MiB segments (bench/ship_lag.py).
_THREADED_FROM = 32 << 20
DEFAULT_LEVEL = 3
MIN_LEVEL = 1
MAX_LEVEL = 22


# Called with (bytes done, bytes in all) as a transfer moves, in the caller's
# thread; the flows turn it into a Prefect progress artifact, the core never
# needs to know.
Progress = Callable[[int, int], None]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class PrefixedReader:
    """Bytes already read from ``rest`` (a header peeked at), then the rest of the stream."""

    def __init__(self, first: bytes, rest: Readable) -> None:
        self._first, self._rest = first, rest

    def read(self, size: int = -1, /) -> bytes:
        if not self._first:
            return self._rest.read(size)
        if 0 <= size < len(self._first):
            data, self._first = self._first[:size], self._first[size:]
            return data
        data, self._first = self._first, b""
        return data + self._rest.read(-1 if size < 0 else size - len(data))


class _HashingReader:
    """Hands bytes to zstd while hashing and counting them."""

    def __init__(self, raw: BinaryIO, total: int, progress: Progress | None) -> None:
        self._raw = raw
        self._total = total
        self._progress = progress
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        if self._progress is not None:
            self._progress(self.count, self._total)
        return data


def validate_level(level: int) -> int:
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise UsageError(
            f"compression level {level} is out of range: use {MIN_LEVEL} to {MAX_LEVEL} (default {DEFAULT_LEVEL})"
        )
    return level


def compress_into(
    source: Path, out: Writable, level: int = DEFAULT_LEVEL, *, progress: Progress | None = None
) -> tuple[int, str]:
    """Compress ``source`` as one zstd frame written to ``out``; return its size and SHA-256."""
    validate_level(level)
    size = source.stat().st_size
    compressor = _compressor(level)
    with source.open("rb") as raw:
        reader = _HashingReader(raw, size, progress)
        compressor.copy_stream(
            cast(BinaryIO, reader), cast(BinaryIO, out), size=size, read_size=_SMALL_CHUNK, write_size=CHUNK_SIZE
        )
    if reader.count != size:
        raise CorruptObjectError(f"compress {source}: file changed size while being read ({size} -> {reader.count})")
    return reader.count, reader.digest.hexdigest()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # threads=-1: one zstd worker per core; level 3 on one core is slower than
    # the disk and the network, so the extra worker pays for itself. 1 MiB jobs
    # keep each worker's buffers small: peak RSS 24 MiB instead of 65 MiB for
    # the same speed and a 0.4% larger output (measured on 256 MiB, bench/).
    parameters = zstandard.ZstdCompressionParameters.from_level(
        level, threads=-1, job_size=_COMPRESS_JOB, write_checksum=1
    )
    return zstandard.ZstdCompressor(compression_params=parameters)


@dataclass
class StreamTotals:
    """What ``compress_blocks`` has seen so far; complete once its chunks are exhausted."""

    raw_size: int = 0
    compressed_size: int = 0
    sha256: str = ""


def compress_blocks(
    blocks: Iterable[bytes | bytearray],
    totals: StreamTotals,
    *,
    size: int,
    level: int = DEFAULT_LEVEL,
    progress: Progress | None = None,
    trailer: bool = False,
) -> Iterator[bytes]:
    """Compress ``size`` bytes arriving as ``blocks`` into one zstd frame, yielded in chunks.

    Nothing is held beyond zstd's jobs and one chunk: the caller consumes
    chunks (uploads them) while later blocks are compressed. ``totals`` gets
    the SHA-256 and sizes once the last chunk has been yielded; a stream of
    another size than announced raises ``CorruptObjectError``. With
    ``trailer`` the SHA-256 follows the frame (``walship.trailer``).
    """
    validate_level(level)
    chunker = _compressor(level).chunker(size=size, chunk_size=CHUNK_SIZE)
    digest = hashlib.sha256()
    done = 0
    for block in blocks:
        digest.update(block)
        done += len(block)
        for chunk in chunker.compress(block):
            totals.compressed_size += len(chunk)
            yield chunk
        if progress is not None:
            progress(done, size)
    if done != size:
        raise CorruptObjectError(f"compress: {done} bytes arrived, {size} announced")
    for chunk in chunker.finish():  # type: ignore[no-untyped-call]
        totals.compressed_size += len(chunk)
        yield chunk
    totals.raw_size, totals.sha256 = done, digest.hexdigest()
    if trailer:
        end = format_trailer(totals.sha256)
        totals.compressed_size += len(end)
        yield end


def decompress_to_file(
    source: Readable,
    target: BinaryIO,
    *,
    expected_sha256: str,
    expected_size: int,
    name: str,
    progress: Progress | None = None,
) -> int:
    """Stream-decompress ``source`` into ``target`` and verify size and SHA-256.

    ``name`` (the object key) goes into every error so an operator knows which
    object is bad. ``progress`` hears (bytes decompressed, expected size)
    after every chunk. Returns the number of bytes written.
    """
    written, actual = decompress_stream(source, target, name=name, total=expected_size, progress=progress)
    return check_decoded(written, actual, expected_sha256=expected_sha256, expected_size=expected_size, name=name)


def check_decoded(written: int, actual: str, *, expected_sha256: str, expected_size: int, name: str) -> int:
    """Compare what an object decoded to with what was recorded when it was written; return the size."""
    if written != expected_size:
        raise ChecksumMismatchError(
            f"verify {name}: decompressed to {written} bytes, expected {expected_size} (object truncated or corrupt)"
        )
    if actual != expected_sha256:
        raise ChecksumMismatchError(f"verify {name}: SHA-256 {actual} does not match recorded {expected_sha256}")
    return written


def decompress_stream(
    source: Readable,
    target: BinaryIO,
    *,
    name: str,
    total: int = 0,
    progress: Progress | None = None,
    across_frames: bool = False,
) -> tuple[int, str]:
    """Stream-decompress ``source`` into ``target``; return the bytes written and their SHA-256.

    Nothing is compared here: callers check against what they recorded.
    ``across_frames`` reads past the first zstd frame (other writers may
    have written several).
    """
    decompressor = zstandard.ZstdDecompressor()
    sink = _HashingSink(target)
    done = 0
    try:
        with decompressor.stream_reader(
            cast(BinaryIO, source), read_size=CHUNK_SIZE, closefd=False, read_across_frames=across_frames
        ) as reader:
            while chunk := reader.read(_SMALL_CHUNK):
                sink.put(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"decompress {name}: the object is corrupt ({exc})") from exc
    finally:
        written, actual = sink.close()
    return written, actual


class DecompressingWriter:
    """zstd decompression that the compressed bytes are pushed into (by a decoder that pushes, like age's).

    Output goes to ``target`` through the same hashing thread as ``decompress_stream``'s,
    in chunks of at most ``_SMALL_CHUNK``: memory stays bounded whatever the ratio.
    ``finish`` returns the bytes written and their SHA-256; nothing is compared here.
    """

    def __init__(self, target: BinaryIO, *, name: str, total: int = 0, progress: Progress | None = None) -> None:
        self._name, self._total, self._progress = name, total, progress
        self._sink = _HashingSink(target)
        self.done = 0
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            cast(BinaryIO, _Output(self._decompressed)), write_size=_SMALL_CHUNK, closefd=False
        )

    def write(self, data: bytes) -> int:
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            raise CorruptObjectError(f"decompress {self._name}: the object is corrupt ({exc})") from exc
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> tuple[int, str]:
        return self._sink.close()

    def _decompressed(self, chunk: bytes) -> None:
        self._sink.put(chunk)
        self.done += len(chunk)
        if self._progress is not None:
            self._progress(self.done, self._total)


class _Output:
    def __init__(self, put: Callable[[bytes], None]) -> None:
        self._put = put

    def write(self, chunk: bytes) -> int:
        self._put(chunk)
        return len(chunk)


class _HashingSink:
    """Hashes and writes chunks on a second thread while the caller decompresses.

    hashlib and file writes release the GIL, so this overlaps them with zstd;
    done inline they made restore 1.5x slower than ``zstd -d`` (bench/). The
    queue is bounded, so memory stays at a few chunks.
    """

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._digest = hashlib.sha256()
        self._written = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="walship-sink", daemon=True)
        self._thread.start()

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> tuple[int, str]:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._written, self._digest.hexdigest()

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so put() never blocks forever
            try:
                self._digest.update(chunk)
                self._target.write(chunk)
                self._written += len(chunk)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc


class SealingWriter:
    """Compresses what is written to it into ``target`` as one zstd frame, hashing the raw bytes.

    For WAL segments, compressed once when captured and spooled in the form
    they are stored in. A second-long segment of a busy database is well under
    a MiB and is compressed on this thread: zstd's workers would cost more to
    start than they save. A backlog (``size`` past ``_THREADED_FROM``) gets
    them, so that a shipper behind a fast writer is not held to one core
    (bench/ship_ceiling.py).
    """

    def __init__(self, target: Writable, level: int, size: int = 0) -> None:
        self._target = target
        threads = -1 if size >= _THREADED_FROM else 0
        compressor = zstandard.ZstdCompressor(level=validate_level(level), write_checksum=True, threads=threads)
        self._compressor = compressor.compressobj(size=size if size else -1)
        self.digest = hashlib.sha256()
        self.raw_size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.raw_size += len(data)
        self._target.write(self._compressor.compress(data))
        return len(data)

    def finish(self) -> None:
        """End the frame (its content checksum included); the caller flushes and fsyncs ``target``."""
        self._target.write(self._compressor.flush())
