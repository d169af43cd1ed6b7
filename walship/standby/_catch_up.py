"""Bringing a kept copy to a point of its replica: ``restore --delta``, and each step of ``follow``.

One way for both: a copy proven unchanged, in the generation of the point,
with every segment up to it still in the replica, takes those segments; any
other copy of the same database is rebuilt by restoring the point beside it
and applying only the pages that differ. Either way the copy is then sealed
(its WAL checkpointed into the file, its pages' digest recorded) and
``integrity_check`` passes; a copy of another database is refused.
"""

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from walship.chain import list_segment_objects
from walship.copies import CopyRecord, drop_copy_record, read_copy_record
from walship.envelope import Keyring
from walship.errors import NotFoundError, UsageError
from walship.generations import choose_start, describe_generations
from walship.models import SnapshotInfo, utcnow
from walship.restore import restore_snapshot
from walship.sqlite import integrity_check
from walship.standby._copy import KeptCopy, Segments
from walship.storage import ObjectStore

__all__ = ["CaughtUp", "catch_up", "require_same_database", "update"]


class CaughtUp(BaseModel):
    """What one update of a copy did."""

    output: Path
    record: CopyRecord
    segments_applied: int = 0
    pages_rewritten: int | None = None  # set when the copy was rebuilt by comparing pages
    rebuilt_because: str | None = None
    restored_whole: bool = False  # there was no copy: a plain restore made one
    downloaded: int  # bytes of objects fetched
    full_restore_bytes: int | None = None  # what a whole restore of the same point fetches (None: not counted)
    # From the capture of the newest commits applied to their being readable in the copy.
    lag_seconds: float | None = None

    @property
    def settled(self) -> bool:
        """The copy's WAL was checkpointed into its file, whose stat the record holds (readers may keep it)."""
        return self.record.file is not None

    def summary(self) -> str:
        share = (
            f", {100 * self.downloaded / max(self.full_restore_bytes, 1):.1f} % of a full restore's "
            f"{self.full_restore_bytes}"
            if self.full_restore_bytes is not None
            else ""
        )
        how = (
            f"{self.segments_applied} segments applied"
            if self.pages_rewritten is None
            else f"rebuilt, {self.pages_rewritten} pages rewritten"
        )
        if self.restored_whole:
            how = f"no copy there: restored whole with {self.segments_applied} segments"
        elif not self.segments_applied and self.pages_rewritten is None:
            return f"{self.output} already holds {self.record.position}: nothing to apply"
        lag = f"; {self.lag_seconds:.2f} s after its capture" if self.lag_seconds is not None else ""
        return (
            f"caught up {self.output} to {self.record.position} ({how}; downloaded {self.downloaded} bytes{share}{lag})"
        )


def catch_up(
    store: ObjectStore,
    output: Path,
    *,
    timestamp: datetime | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    keys: Keyring | None = None,
) -> CaughtUp:
    """Bring the copy at ``output`` to the replica's newest point, or the one asked, downloading what changed."""
    output = output.absolute()
    generations = describe_generations(store)
    chosen, until = choose_start(generations, before=timestamp, generation=generation, sequence=sequence)
    segments = list_segment_objects(store, chosen.generation)
    if not output.exists():
        return _restored_whole(store, output, chosen, segments, until, timestamp, keys)
    with KeptCopy(store, output, keys=keys) as copy:
        require_same_database(copy.record, chosen, output)
        result = update(copy, chosen, segments, until, timestamp)
    integrity_check(output, live=True)
    return result


def _restored_whole(
    store: ObjectStore,
    output: Path,
    chosen: SnapshotInfo,
    segments: Segments,
    until: int | None,
    timestamp: datetime | None,
    keys: Keyring | None,
) -> CaughtUp:
    result = restore_snapshot(store, chosen, output, until_sequence=until, until_time=timestamp, keys=keys)
    record = read_copy_record(output)
    assert record is not None, "a restore records what it placed"
    fetched = chosen.compressed_size + _bytes_between(segments, chosen.sequence, result.position.sequence)
    return CaughtUp(
        output=output,
        record=record,
        segments_applied=result.segments_applied,
        restored_whole=True,
        downloaded=fetched,
        full_restore_bytes=fetched,
        lag_seconds=_since(record),
    )


def update(
    copy: KeptCopy,
    chosen: SnapshotInfo,
    segments: Segments,
    until: int | None,
    timestamp: datetime | None,
    *,
    seal: bool = True,
) -> CaughtUp:
    record = copy.record
    why = copy.unproven()
    if why is None and record.generation != chosen.generation:
        why = f"the replica's point is in generation {chosen.generation}, the copy in {record.generation}"
    if why is None and until is not None and record.sequence > until:
        why = f"the copy is past the point asked ({record.position})"
    applied = 0
    if why is None:
        try:
            applied = copy.advance(segments, until, timestamp)
        except NotFoundError as exc:
            why = str(exc)
    rewritten = None
    if why is not None:
        rewritten = _rebuild(copy, chosen, segments, until, timestamp)
    record = copy.seal() if seal else copy.record
    # Nothing applied: the copy already held the point, and is behind the replica by nothing.
    lag = 0.0 if not applied and why is None else _since(record)
    return CaughtUp(
        output=copy.output,
        record=record,
        segments_applied=applied,
        pages_rewritten=rewritten,
        rebuilt_because=why,
        downloaded=copy.downloaded,
        full_restore_bytes=chosen.compressed_size + _bytes_between(segments, chosen.sequence, record.sequence),
        lag_seconds=lag,
    )


def _bytes_between(segments: Segments, after: int, last: int) -> int:
    return sum(obj.size for sequence, obj in segments.items() if after < sequence <= last)


def _rebuild(
    copy: KeptCopy, chosen: SnapshotInfo, segments: Segments, until: int | None, timestamp: datetime | None
) -> int:
    """Restore the point beside the copy, taking the snapshot's frames the copy already holds from it, then
    apply the pages that differ; how many did."""
    scratch = copy.output.with_name(f".{copy.output.name}.walship-target")
    try:
        result = restore_snapshot(
            copy.store,
            chosen,
            scratch,
            force=True,
            until_sequence=until,
            until_time=timestamp,
            keys=copy.keys,
            seed=copy.read_at,
        )
        fetched = result.snapshot_bytes_fetched + _bytes_between(segments, chosen.sequence, result.position.sequence)
        copy.downloaded += fetched
        return copy.take(scratch, result.snapshot, result.position.sequence, result.complete_until)
    finally:
        scratch.unlink(missing_ok=True)
        drop_copy_record(scratch)


def require_same_database(record: CopyRecord, chosen: SnapshotInfo, output: Path) -> None:
    if record.database_id != chosen.database_id:
        raise UsageError(
            f"{output} is a copy of database {record.database_id!r}, the replica holds {chosen.database_id!r}: "
            "choose the right replica, or restore without --delta (with --force to replace it)"
        )


def _since(record: CopyRecord) -> float | None:
    """From the capture of the newest commits the copy holds to now, when they were just applied."""
    return (utcnow() - record.captured_at).total_seconds() if record.captured_at is not None else None
