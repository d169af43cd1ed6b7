"""Uploads through a part sink: one request when the object fits in a part, else a multipart upload.

The driver is the backends': a backend that can write an object in parts
implements ``PartSink`` (S3's multipart upload; Azure's blocks and GCS's XML
multipart have the same shape) and hands its uploads here.

Parts go up on a few threads while the caller produces the next one (reads a
file, or compresses a snapshot). They live in ``TRANSFER_THREADS`` buffers of
one part each, reused: the part being filled and those in flight share them,
so memory stays at ``TRANSFER_THREADS * part size`` whatever the object's
size. Any failure, of a part or of the producer, aborts the multipart upload:
no parts are left for the bucket to keep (and bill), and nothing appears
under the key.

Every request carries the SHA-256 of the bytes it sends, computed from the
very buffer the backend sends (and sends again on its own retries), for
storage to check against what it received: a whole object's, a part its
part's. With the expected SHA-256 of the whole object, the bytes sent are
hashed as they go and compared with it before anything becomes visible: a
single write is not sent, a multipart upload is aborted instead of
completed. That comparison is the client's own, so it holds on servers that
ignore the checksum headers (moto does; SeaweedFS and S3 reject a mismatch
with BadDigest).

The metadata is given before the first byte: S3 takes it at
CreateMultipartUpload and never changes it (a streamed snapshot therefore
records its SHA-256 at its end, walship.trailer).
"""

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol, TypeVar

from walship.errors import ChecksumMismatchError, PermanentStorageError
from walship.models import ObjectInfo

__all__ = ["PART_SIZE", "TRANSFER_THREADS", "PartSink", "part_size_for", "put_one", "upload"]

log = logging.getLogger(__name__)

Part = TypeVar("Part")


class PartSink(Protocol[Part]):
    """What the driver needs from a backend to write objects in parts; each method raises walship's typed errors.

    ``sha256`` is the digest of the bytes given, for storage to check against what it received.
    """

    @property
    def location(self) -> str:
        """The replica URL, for messages."""
        ...

    def put_whole(self, key: str, data: bytes | bytearray, *, metadata: dict[str, str], sha256: bytes) -> ObjectInfo:
        """Write ``data`` as the object ``key`` in one request."""
        ...

    def create_upload(self, key: str, *, metadata: dict[str, str]) -> str:
        """Start a multipart upload of ``key`` with ``metadata``; its id."""
        ...

    def put_part(self, key: str, upload: str, number: int, data: bytearray, *, sha256: bytes) -> Part:
        """Send part ``number`` (from 1) of ``upload``; what ``complete_upload`` names it by (may run on any thread)."""
        ...

    def complete_upload(self, key: str, upload: str, parts: Sequence[Part]) -> None:
        """Make the parts, in order, the object ``key``."""
        ...

    def abort_upload(self, key: str, upload: str) -> None:
        """Discard ``upload`` and its parts; one already gone is no error."""
        ...


# Amazon S3's multipart limits (S3 User Guide, "Amazon S3 multipart upload
# limits"): parts of 5 MiB to 5 GiB, the last one smaller; at most 10,000
# parts. CopyObject copies up to 5 GiB in one request (S3 API Reference,
# CopyObject); larger objects are copied part by part (UploadPartCopy).
# SeaweedFS and moto accept the same, as do GCS's XML multipart uploads.
MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
# 6 MiB parts x 3 buffers and threads: 18 MiB of parts at most, and 10,000
# parts reach 58 GiB before the part size has to grow. A streamed snapshot's
# process is 60 MiB before it starts (Python, botocore's S3 model) and zstd
# adds 13 MiB: 8 MiB parts peaked at 96 MiB, these at 90 MiB (1 GiB, bench/).
# Two threads measured 10-20% slower against moto.
PART_SIZE = 6 << 20
TRANSFER_THREADS = 3
# Seconds between attempts to abort an upload that failed: about 15 s in all.
_ABORT_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)
_MIB = 1 << 20


def part_size_for(size_hint: int | None) -> int:
    """The part size that fits an object of up to ``size_hint`` bytes in 10,000 parts."""
    if not size_hint:
        return PART_SIZE
    needed = -(-size_hint // MAX_PARTS)
    return min(MAX_PART_SIZE, max(PART_SIZE, -(-needed // _MIB) * _MIB))


def upload(
    sink: PartSink[Part],
    key: str,
    chunks: Iterable[bytes],
    *,
    metadata: Mapping[str, str],
    size_hint: int | None = None,
    sha256: str | None = None,
) -> ObjectInfo:
    """Write ``chunks`` as the object ``key`` with ``metadata``; only if they hash to ``sha256`` (hex), if given."""
    buffers = _Buffers(part_size_for(size_hint), TRANSFER_THREADS)
    parts = _parts(chunks, buffers)
    # The first two parts tell whether one request will do; held in a list
    # the upload empties, so neither stays in memory once sent.
    ahead = [next(parts)]
    second = next(parts, None)
    described = dict(metadata)
    if second is None:
        return put_one(sink, key, ahead[0], metadata=described, sha256=sha256)
    ahead.append(second)
    del second
    size = _multipart(sink, key, _then(ahead, parts), buffers, described, sha256)
    return ObjectInfo(key=key, size=size, metadata=described)


def put_one(
    sink: PartSink[Part], key: str, data: bytes | bytearray, *, metadata: Mapping[str, str], sha256: str | None = None
) -> ObjectInfo:
    """One request writing ``data`` (held in memory: the bytes hashed are the bytes sent, on every attempt)."""
    digest = hashlib.sha256(data).digest()
    if sha256 is not None and digest.hex() != sha256:
        raise _mismatch(sink, key, sha256, digest.hex())
    return sink.put_whole(key, data, metadata=dict(metadata), sha256=digest)


def _mismatch(sink: PartSink[Part], key: str, expected: str, sent: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(
        f"put object {sink.location}{key}: the bytes read to send have SHA-256 {sent}, not {expected}: nothing stored"
    )


def _then(ahead: list[bytearray], rest: Iterator[bytearray]) -> Iterator[bytearray]:
    while ahead:
        yield ahead.pop(0)
    yield from rest


class _Buffers:
    """Part buffers, allocated once per upload and reused; taking one waits while all are in flight.

    Why reused: after glibc frees the first large buffer it raises its mmap
    threshold, so fresh buffers come from a heap that may grow with the
    object. A fixed set keeps memory flat, whatever the object's size.
    """

    def __init__(self, size: int, count: int) -> None:
        self.size, self._count = size, count
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._made = 0
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free.empty() and self._made < self._count:
                self._made += 1
                return bytearray(self.size)
        return self._free.get()

    def give(self, buffer: bytes | bytearray) -> None:
        if isinstance(buffer, bytearray) and len(buffer) == self.size:
            self._free.put(buffer)


def _parts(chunks: Iterable[bytes], buffers: _Buffers) -> Iterator[bytearray]:
    """Regroup chunks into parts of ``buffers.size`` bytes (the last one shorter); at least one, maybe empty.

    Each part is filled in place in a buffer of its own, so a part costs no copy.
    """
    size = buffers.size
    part, held, sent = buffers.take(), 0, False
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            taken = min(len(view), size - held)
            part[held : held + taken] = view[:taken]
            held, view = held + taken, view[taken:]
            if held == size:
                yield part
                part, held, sent = buffers.take(), 0, True
    if held or not sent:
        del part[held:]  # in place: no copy of the last part
        yield part
    else:
        buffers.give(part)


def _multipart(
    sink: PartSink[Part],
    key: str,
    parts: Iterable[bytearray],
    buffers: _Buffers,
    metadata: dict[str, str],
    sha256: str | None,
) -> int:
    """A multipart upload of ``parts`` to ``key``, aborted on any failure (``sha256`` differing from the
    parts' is one); returns the object's size."""
    whole = hashlib.sha256() if sha256 is not None else None
    upload_id = sink.create_upload(key, metadata=metadata)
    try:
        finished, size = _upload_parts(sink, key, upload_id, parts, buffers, whole)
        if whole is not None and sha256 is not None and sha256 != (sent := whole.hexdigest()):
            raise _mismatch(sink, key, sha256, sent)
        sink.complete_upload(key, upload_id, finished)
    except BaseException:
        _abort_quietly(sink, key, upload_id)
        raise
    return size


def _upload_parts(
    sink: PartSink[Part],
    key: str,
    upload_id: str,
    parts: Iterable[bytearray],
    buffers: _Buffers,
    whole: "hashlib._Hash | None",
) -> tuple[list[Part], int]:
    """Send ``parts``; ``whole`` hashes them in order, as they go."""

    def send(number: int, data: bytearray) -> Part:
        # Hashed here, on the part's thread (hashlib lets go of the GIL): the buffer stays as it is until sent.
        return sink.put_part(key, upload_id, number, data, sha256=hashlib.sha256(data).digest())

    finished: list[Part] = []
    size = 0
    with ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="walship-part") as pool:
        running: deque[Future[Part]] = deque()
        try:
            # Bounds memory: the next part is produced only once a buffer is free.
            for number, data in enumerate(parts, start=1):
                if number > MAX_PARTS:
                    raise PermanentStorageError(
                        f"put object {sink.location}{key}: more than {MAX_PARTS} parts "
                        "(the object outgrew its size hint)"
                    )
                size += len(data)
                if whole is not None:
                    whole.update(data)
                future = pool.submit(send, number, data)
                future.add_done_callback(_giving_back(buffers, data))
                running.append(future)
                while running and running[0].done():  # fail fast: a failed part stops the producer
                    finished.append(running.popleft().result())
            finished.extend(f.result() for f in running)
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return finished, size


def _giving_back(buffers: _Buffers, data: bytearray) -> Callable[[object], None]:
    return lambda _: buffers.give(data)


def _abort_quietly(sink: PartSink[Part], key: str, upload_id: str) -> None:
    """Abort a multipart upload, waiting a while for storage to come back if it must.

    The error that made us abort is the one to report. Parts left behind
    are kept (and billed) by the bucket until aborted, so a failed abort is
    retried past the backend's own attempts (a short outage is the usual
    cause), then logged; a bucket lifecycle rule for incomplete multipart
    uploads is the backstop (docs/OPERATIONS.md).
    """
    for wait in (*_ABORT_WAITS, None):
        try:
            sink.abort_upload(key, upload_id)
            return
        except Exception as exc:
            failure = exc
        if wait is None:
            log.warning("abort multipart upload of %s%s failed: %s", sink.location, key, failure)
            return
        time.sleep(wait)
