"""Segments as a verifiable chain, and applying them to a restored database.

A generation's segments must have contiguous sequence numbers after its
snapshot; each must continue the previous one (same salts, starting at the
offset and running checksum where it ended) or begin a WAL that restarted
after walship's own checkpoint. Inside a segment every frame's salts and
checksum are verified while it is applied. Any break stops the restore with
an error naming the object: never a silently wrong database.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

from pydantic import ValidationError

from walship.catalog import from_metadata
from walship.envelope import Keyring, open_to_file
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError
from walship.layout import format_segment_key, generation_prefix, is_resync_key, parse_segment_key
from walship.models import ObjectInfo, SegmentInfo
from walship.resync import apply_resync
from walship.sqlite import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, iter_frames, replay_header
from walship.storage import ObjectStore

__all__ = [
    "AppliedSegments",
    "apply_segments",
    "list_segment_keys",
    "list_segment_sequences",
    "missing_segment",
    "read_segment_info",
    "segment_from_object",
]


def list_segment_sequences(store: ObjectStore, generation: str) -> list[int]:
    """Sequence numbers of a generation's segments (one LIST, no HEAD)."""
    return sorted(list_segment_keys(store, generation))


def list_segment_keys(store: ObjectStore, generation: str) -> dict[int, str]:
    """A generation's segment keys (WAL or resync) by sequence (one LIST, no HEAD)."""
    keys: dict[int, str] = {}
    for obj in store.list(f"{generation_prefix(generation)}wal/"):
        parsed = parse_segment_key(obj.key)
        if parsed is None or parsed.generation != generation:
            continue
        if parsed.sequence in keys:
            raise CorruptObjectError(f"segments {keys[parsed.sequence]} and {obj.key} share a sequence: a fork")
        keys[parsed.sequence] = obj.key
    return keys


def missing_segment(generation: str, sequence: int) -> str:
    """A segment that is not in the replica, named by both keys it may have had: a gone object shows no kind."""
    return f"{format_segment_key(generation, sequence)} (or .resync.zst)"


class AppliedSegments(NamedTuple):
    """What a restore applied, and the first segment it stopped before (a time limit), if any.

    ``stopped_before`` bounds what the state lacks: its commits all came
    after its ``committed_after``.
    """

    applied: list[SegmentInfo]
    stopped_before: SegmentInfo | None


def apply_segments(
    store: ObjectStore,
    database: BinaryIO,
    generation: str,
    after: int,
    *,
    until_sequence: int | None = None,
    until_time: datetime | None = None,
    scratch: Path,
    keys: Keyring | None = None,
) -> AppliedSegments:
    """Apply the generation's segments after sequence ``after`` to ``database`` (open r+b).

    Stops after ``until_sequence``, before the first segment captured after
    ``until_time``, or at the end of the chain. Any damage names the segment
    and the last point that can still be restored (``--sequence N-1``).
    ``keys`` open segments encrypted with age.
    """
    segment_keys = list_segment_keys(store, generation)
    sequences = sorted(s for s in segment_keys if s > after)
    if until_sequence is not None and until_sequence not in sequences and until_sequence != after:
        raise NotFoundError(
            f"{missing_segment(generation, until_sequence)} is not in the replica: "
            "run 'walship status' to see the newest sequence"
        )
    applied: list[SegmentInfo] = []
    stopped_before: SegmentInfo | None = None
    expected = after + 1
    for sequence in sequences:
        if until_sequence is not None and sequence > until_sequence:
            break
        key = segment_keys[sequence]
        if sequence != expected:
            raise NotFoundError(
                f"{missing_segment(generation, expected)} is missing: the chain of generation {generation} "
                f"breaks after sequence {expected - 1}; restore an earlier point with --sequence {expected - 1}"
            )
        try:
            with _downloaded(store, key, scratch, keys) as (info, raw):
                if until_time is not None and info.captured_at > until_time:
                    stopped_before = info
                    break
                if info.kind == "resync":
                    apply_resync(raw, info, database)
                else:
                    _check_link(applied[-1] if applied else None, info)
                    _apply(raw, info, database)
        except (ChecksumMismatchError, CorruptObjectError) as exc:
            # The same way out a missing segment offers: everything before it still restores.
            raise type(exc)(f"{exc}; restore an earlier point with --sequence {sequence - 1}") from exc
        applied.append(info)
        expected += 1
    if until_sequence is not None and (applied[-1].sequence if applied else after) != until_sequence:
        raise NotFoundError(f"{missing_segment(generation, until_sequence)} could not be reached")
    return AppliedSegments(applied, stopped_before)


@contextlib.contextmanager
def _downloaded(
    store: ObjectStore, key: str, scratch: Path, keys: Keyring | None
) -> Iterator[tuple[SegmentInfo, Path]]:
    """Download, open and checksum one segment into a scratch file."""
    fd, name = tempfile.mkstemp(dir=scratch, suffix=".wal")
    raw = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            info = read_segment_info(store, key)
            with store.open(key) as stream:
                open_to_file(
                    stream,
                    out,
                    envelope=info.envelope,
                    keys=keys,
                    expected_sha256=info.sha256,
                    expected_size=info.raw_size,
                    name=key,
                )
        yield info, raw
    finally:
        raw.unlink(missing_ok=True)


def read_segment_info(store: ObjectStore, key: str) -> SegmentInfo:
    """Describe one segment object from its own metadata (one HEAD)."""
    return segment_from_object(store.head(key))


def segment_from_object(obj: ObjectInfo) -> SegmentInfo:
    """A segment's description from a HEAD of it."""
    key = obj.key
    try:
        info = SegmentInfo(key=key, **from_metadata(obj.metadata))
    except ValidationError as exc:
        raise CorruptObjectError(f"segment {key} has missing or bad metadata: {exc.error_count()} problem(s)") from exc
    parsed = parse_segment_key(key)
    named_as = "resync" if is_resync_key(key) else "wal"
    if (
        parsed is None
        or (info.generation, info.sequence) != parsed
        or info.compressed_size != obj.size
        or info.kind != named_as
    ):
        raise CorruptObjectError(f"segment {key}: its metadata does not describe this object")
    return info


def _check_link(previous: SegmentInfo | None, info: SegmentInfo) -> None:
    if previous is None:
        return
    if info.wal_restarted:
        if info.start_offset != WAL_HEADER_SIZE or (info.salt1, info.salt2) == (previous.salt1, previous.salt2):
            raise CorruptObjectError(f"segment {info.key} claims a WAL restart it does not show: a fork")
        return
    continues = (
        (info.salt1, info.salt2) == (previous.salt1, previous.salt2)
        and info.start_offset == previous.end_offset
        and (info.checksum_start1, info.checksum_start2) == (previous.checksum_end1, previous.checksum_end2)
    )
    if not continues:
        raise CorruptObjectError(
            f"segment {info.key} does not continue {previous.key} (salts, offset or checksum differ): "
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


def _apply(raw_path: Path, info: SegmentInfo, database: BinaryIO) -> None:
    """Write every frame's page into the database; verify salts and checksums frame by frame."""
    header = replay_header(big_endian=info.big_endian, page_size=info.page_size, salt1=info.salt1, salt2=info.salt2)
    seed = (info.checksum_start1, info.checksum_start2)
    frames = commits = 0
    last = seed
    with raw_path.open("rb") as raw:
        shifted = cast(BinaryIO, _Shifted(raw, info.start_offset))
        pages = iter_frames(shifted, header, start_offset=info.start_offset, start_checksum=seed, with_data=True)
        for frame, page in pages:
            database.seek((frame.page_number - 1) * info.page_size)
            database.write(page)
            frames += 1
            last = (frame.checksum1, frame.checksum2)
            if frame.is_commit:
                commits += 1
                database.truncate(frame.db_size_after_commit * info.page_size)
    frame_size = info.page_size + FRAME_HEADER_SIZE
    if (
        frames != info.frames
        or frames * frame_size != info.raw_size
        or last != (info.checksum_end1, info.checksum_end2)
    ):
        raise ChecksumMismatchError(
            f"verify {info.key}: {frames} of {info.frames} frames verify against the WAL checksum chain"
        )
    if commits != info.commits:
        raise CorruptObjectError(f"verify {info.key}: {commits} commits, recorded {info.commits}")
