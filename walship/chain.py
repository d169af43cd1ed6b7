"""A generation's segments as a verifiable chain, applied to a restored database.

A generation's segments must have contiguous sequence numbers after its
snapshot, each continuing the previous one (``walship.segment`` checks the
link and every frame). Any break stops the restore with an error naming the
object: never a silently wrong database.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

from walship.envelope import Keyring
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError
from walship.layout import format_segment_key, generation_prefix, parse_segment_key
from walship.models import ObjectInfo
from walship.segment import (
    ResyncSegment,
    WalSegment,
    apply_resync,
    apply_wal,
    check_link,
    download_segment,
    from_head,
    read_description,
)
from walship.storage import ObjectStore

__all__ = [
    "AppliedSegments",
    "apply_segments",
    "list_segment_keys",
    "list_segment_objects",
    "list_segment_sequences",
    "missing_segment",
    "read_segment_info",
]


def list_segment_sequences(store: ObjectStore, generation: str) -> list[int]:
    """Sequence numbers of a generation's segments (one LIST, no HEAD)."""
    return sorted(list_segment_keys(store, generation))


def list_segment_keys(store: ObjectStore, generation: str) -> dict[int, str]:
    """A generation's segment keys (WAL or resync) by sequence (one LIST, no HEAD)."""
    return {sequence: obj.key for sequence, obj in list_segment_objects(store, generation).items()}


def list_segment_objects(store: ObjectStore, generation: str) -> dict[int, ObjectInfo]:
    """A generation's segment objects (WAL or resync), key and stored size, by sequence (one LIST, no HEAD)."""
    found: dict[int, ObjectInfo] = {}
    for obj in store.list(f"{generation_prefix(generation)}wal/"):
        parsed = parse_segment_key(obj.key)
        if parsed is None or parsed.generation != generation:
            continue
        if parsed.sequence in found:
            raise CorruptObjectError(f"segments {found[parsed.sequence].key} and {obj.key} share a sequence: a fork")
        found[parsed.sequence] = obj
    return found


def missing_segment(generation: str, sequence: int) -> str:
    """A segment that is not in the replica, named by both keys it may have had: a gone object shows no kind."""
    return f"{format_segment_key(generation, sequence)} (or .resync.zst)"


class AppliedSegments(NamedTuple):
    """What a restore applied, and the first segment it stopped before (a time limit), if any.

    ``stopped_before`` bounds what the state lacks: its commits all came
    after its ``committed_after``.
    """

    applied: list[WalSegment | ResyncSegment]
    stopped_before: WalSegment | ResyncSegment | None


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
    ``keys`` open segments encrypted with age. One GET per segment: each
    object describes itself.
    """
    segment_keys = list_segment_keys(store, generation)
    sequences = sorted(s for s in segment_keys if s > after)
    if until_sequence is not None and until_sequence not in sequences and until_sequence != after:
        raise NotFoundError(
            f"{missing_segment(generation, until_sequence)} is not in the replica: "
            "run 'walship status' to see the newest sequence"
        )
    applied: list[WalSegment | ResyncSegment] = []
    stopped_before: WalSegment | ResyncSegment | None = None
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
            with _downloaded(store, key, scratch, keys, until_time) as (segment, raw):
                if until_time is not None and segment.captured_at > until_time:
                    stopped_before = segment
                    break
                assert raw is not None
                if isinstance(segment, ResyncSegment):
                    apply_resync(raw, segment, database)
                else:
                    check_link(applied[-1] if applied else None, segment)
                    apply_wal(raw, segment, database)
        except (ChecksumMismatchError, CorruptObjectError) as exc:
            # The same way out a missing segment offers: everything before it still restores.
            raise type(exc)(f"{exc}; restore an earlier point with --sequence {sequence - 1}") from exc
        applied.append(segment)
        expected += 1
    if until_sequence is not None and (applied[-1].sequence if applied else after) != until_sequence:
        raise NotFoundError(f"{missing_segment(generation, until_sequence)} could not be reached")
    return AppliedSegments(applied, stopped_before)


@contextlib.contextmanager
def _downloaded(
    store: ObjectStore, key: str, scratch: Path, keys: Keyring | None, until_time: datetime | None
) -> Iterator[tuple[WalSegment | ResyncSegment, Path | None]]:
    """Download, open and check one segment into a scratch file.

    A segment that fails its checks but whose metadata says it was captured
    after ``until_time`` is not needed: it comes back described, with no body.
    """
    fd, name = tempfile.mkstemp(dir=scratch, suffix=".wal")
    raw = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                segment = download_segment(store, key, out, keys)
        except (ChecksumMismatchError, CorruptObjectError):
            past = _described_past(store, key, until_time)
            if past is None:
                raise
            yield past, None
            return
        yield segment, raw
    finally:
        raw.unlink(missing_ok=True)


def _described_past(store: ObjectStore, key: str, until_time: datetime | None) -> WalSegment | ResyncSegment | None:
    if until_time is None:
        return None
    try:
        segment = from_head(store.head(key))
    except (CorruptObjectError, NotFoundError):
        return None
    return segment if segment.captured_at > until_time else None


def read_segment_info(store: ObjectStore, key: str) -> WalSegment | ResyncSegment:
    """Describe one segment object without reading its body (``walship.segment.read_description``)."""
    segment = read_description(store, key)
    if segment is None:
        raise CorruptObjectError(f"segment {key} describes itself nowhere: walship did not write it, or it is damaged")
    return segment
