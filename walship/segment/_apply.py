"""Checking and applying a WAL segment: its link to the previous segment, and every frame on the way.

A WAL segment must continue the previous one (same salts, starting at the
offset and running checksum where it ended) or begin a WAL that restarted
after walship's own checkpoint. Inside it every frame's salts and checksum
are verified while it is applied. Any break names the object.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from walship.errors import ChecksumMismatchError, CorruptObjectError
from walship.segment._models import ResyncSegment, WalSegment
from walship.sqlite import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, FrameRun, iter_frame_runs, replay_header

__all__ = ["apply_wal", "check_link", "wal_runs"]


def check_link(previous: WalSegment | ResyncSegment | None, segment: WalSegment) -> None:
    """Raise ``CorruptObjectError`` unless ``segment`` continues ``previous`` (None: the chain's first)."""
    if previous is None:
        return
    if segment.wal_restarted:
        if segment.start_offset != WAL_HEADER_SIZE or (segment.salt1, segment.salt2) == (
            previous.salt1,
            previous.salt2,
        ):
            raise CorruptObjectError(f"segment {segment.key} claims a WAL restart it does not show: a fork")
        return
    if segment.start != previous.end:
        raise CorruptObjectError(
            f"segment {segment.key} does not continue {previous.key} (salts, offset or checksum differ): "
            "an overlap or a fork"
        )


class _Shifted:
    """Presents a segment file at the WAL offsets its frames came from."""

    def __init__(self, raw: BinaryIO, shift: int) -> None:
        self._raw, self._shift = raw, shift

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset - self._shift, whence) + self._shift

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)


def apply_wal(raw_path: Path, segment: WalSegment, database: BinaryIO) -> None:
    """Apply the segment to ``database`` (open r+b), verifying salts and checksums frame by frame."""
    for run in wal_runs(raw_path, segment):
        run.apply_to(database)


def wal_runs(raw_path: Path, segment: WalSegment) -> Iterator[FrameRun]:
    """The frames of the WAL segment whose raw body is ``raw_path``, a run at a time, for its consumer to
    apply in order; once they are all taken, the segment's frame and commit counts and its closing
    checksum are checked, and any difference raises."""
    header = replay_header(
        big_endian=segment.big_endian, page_size=segment.page_size, salt1=segment.salt1, salt2=segment.salt2
    )
    seed = (segment.checksum_start1, segment.checksum_start2)
    frames = commits = 0
    last = seed
    with raw_path.open("rb") as raw:
        shifted = cast(BinaryIO, _Shifted(raw, segment.start_offset))
        for run in iter_frame_runs(shifted, header, start_offset=segment.start_offset, start_checksum=seed):
            yield run
            frames += len(run)
            commits += sum(1 for size in run.db_sizes if size)
            last = run.checksums[-1]
    frame_size = segment.page_size + FRAME_HEADER_SIZE
    if (
        frames != segment.frames
        or frames * frame_size != segment.raw_size
        or last != (segment.checksum_end1, segment.checksum_end2)
    ):
        raise ChecksumMismatchError(
            f"verify {segment.key}: {frames} of {segment.frames} frames verify against the WAL checksum chain"
        )
    if commits != segment.commits:
        raise CorruptObjectError(f"verify {segment.key}: {commits} commits, recorded {segment.commits}")
