"""Writing a segment object: its body sealed (``walship.envelope``), then its description at its end."""

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, NamedTuple, TypeVar, cast

from walship.envelope import Sealing, SegmentSealer
from walship.segment._describe import description_trailer
from walship.segment._models import ResyncSegment, WalSegment

__all__ = ["Stored", "seal_segment"]

S = TypeVar("S", WalSegment, ResyncSegment)


class Stored(NamedTuple):
    """A sealed file as written: its size and SHA-256 (the spool checks it before the upload)."""

    size: int
    sha256: str


class _HashingFile:
    """A file that hashes what is written to it (the sealed bytes, as they reach the disk)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.digest = out, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.out.write(data)


def seal_segment(
    path: Path,
    sealing: Sealing,
    size: int,
    fill: Callable[[Callable[[bytes], int]], object],
    describe: Callable[[str, int], S],
) -> tuple[S, Stored]:
    """Write into ``path``, sealed and fsynced, the raw body ``fill`` hands its writer (about ``size``
    bytes, 0 if not known), ended by the description ``describe`` gives once the body's SHA-256 and
    size are known. Returns that description, with how it was stored, and what was written."""
    with path.open("wb") as out:
        hashing = _HashingFile(out)
        sealer = SegmentSealer(cast(BinaryIO, hashing), sealing, size)
        try:
            fill(sealer.write)
            segment = describe(sealer.digest.hexdigest(), sealer.raw_size).model_copy(
                update={"level": sealing.level, "envelope": sealing.envelope}
            )
            sealer.finish(description_trailer(segment))
        except BaseException:
            sealer.abort()
            raise
        out.flush()
        os.fsync(out.fileno())
        stored = Stored(out.tell(), hashing.digest.hexdigest())
    return segment.model_copy(update={"compressed_size": stored.size}), stored
