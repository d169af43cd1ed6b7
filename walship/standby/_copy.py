"""A restored copy kept at a replica's position: segments applied as one atomic step each, or pages that differ.

The copy is a ``Standby`` (readers may have it open) with its record beside
it (``walship.copies``). Before anything is applied, the copy must be proven
unchanged since walship last wrote it: its WAL index still as walship's last
apply published it, or its file as walship left it, or its pages' digest
the one recorded. A copy that cannot be proven so is rebuilt: the target is
restored beside it and only the pages that differ are applied.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

from walship.chain import missing_segment
from walship.copies import CopyRecord, WalMark, file_mark, read_copy_record, save_copy_record
from walship.envelope import Keyring
from walship.errors import NotFoundError, StandbyUnsettledError, UsageError
from walship.models import ObjectInfo, SnapshotInfo, utcnow
from walship.resync import StateHasher, page_digest
from walship.segment import (
    ResyncSegment,
    WalSegment,
    apply_resync,
    check_link,
    download_segment,
    read_description,
    wal_runs,
)
from walship.standby._apply import Standby
from walship.standby._overlay import Overlay
from walship.standby._pages import SegmentPages
from walship.standby._walindex import IndexHeader
from walship.storage import ObjectStore

__all__ = ["KeptCopy", "Segments"]

# How long applying a resync or sealing waits for readers to leave the WAL before it gives up for now.
SETTLE_SECONDS = 30.0


# A generation's segment objects (key and stored size) by sequence, as ``chain.list_segment_objects`` lists them.
Segments = dict[int, ObjectInfo]


class KeptCopy:
    """The copy at ``output`` of the replica in ``store``, open for updates (one per copy per process)."""

    def __init__(self, store: ObjectStore, output: Path, *, keys: Keyring | None = None) -> None:
        record = read_copy_record(output)
        if record is None:
            raise UsageError(
                f"{output} holds no walship record ({output.name}-walship-copy.json): it may not be a copy of this "
                "replica; restore it without --delta (with --force to replace it)"
            )
        self.store, self.output, self.keys, self.record = store, output, keys, record
        self.standby = Standby(output)
        # Every read of the file goes through this one descriptor, closed after SQLite's: closing any descriptor
        # of the file would drop the locks SQLite holds on it (they belong to the process).
        self._file = os.open(output, os.O_RDONLY)
        self.downloaded = 0
        self._last: WalSegment | ResyncSegment | None = None

    def close(self) -> None:
        self.standby.close()
        os.close(self._file)

    def __enter__(self) -> "KeptCopy":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Trust ------------------------------------------------------------------------------------------------------

    def unproven(self) -> str | None:
        """Why the copy cannot be proven to hold its record's state (None: it does)."""
        record, header = self.record, self.standby.published
        if record.wal is not None and header.max_frame and mark_of(header) == record.wal:
            return None
        if record.file is not None and header.max_frame == 0 and file_mark(self.output) == record.file:
            return None
        if record.state_digest is None:
            return "it changed since walship last wrote it, or walship stopped before recording its digest"
        self._settled()
        if self._digest(record.page_count) != record.state_digest:
            return "its pages are not the state walship recorded: it was changed locally"
        return None

    # Segments of the same generation ---------------------------------------------------------------------------

    def advance(self, segments: Segments, until: int | None = None, until_time: datetime | None = None) -> int:
        """Apply the generation's segments after the copy's sequence, up to ``until`` and captured by
        ``until_time``; how many were applied.

        Consecutive WAL segments are applied together, each page's last image
        once, as one commit (a resync goes on its own): what a catch-up writes
        is what changed, not every frame that changed it.
        """
        wanted = sorted(s for s in segments if s > self.record.sequence and (until is None or s <= until))
        expected, applied = self.record.sequence + 1, 0
        with _Batch(self.output.parent) as batch:
            for sequence in wanted:
                if sequence != expected:
                    raise NotFoundError(
                        f"{missing_segment(self.record.generation, expected)} is missing: the copy cannot "
                        "catch up segment by segment"
                    )
                if not self._take(segments, sequence, until_time, batch):
                    break
                expected, applied = expected + 1, applied + 1
            self._flush(batch)
        return applied

    def _take(self, segments: Segments, sequence: int, until_time: datetime | None, batch: "_Batch") -> bool:
        previous = segments.get(sequence - 1)
        if self._last is None and previous is not None:
            # The link to what the copy holds is checked as a restore checks it from one segment to the next.
            self._last = read_description(self.store, previous.key)
        with self._downloaded(segments[sequence].key) as (segment, raw):
            if until_time is not None and segment.captured_at > until_time:
                return False
            if isinstance(segment, ResyncSegment):
                self._flush(batch)
                self._apply_resync(segment, raw)
                self._record(segment.sequence, segment.db_size_pages, segment.captured_at)
            else:
                check_link(self._last, segment)
                batch.add(raw, segment)
                if batch.full:
                    self._flush(batch)
            self._last = segment
        return True

    def _flush(self, batch: "_Batch") -> None:
        """Apply what the batch holds, as one commit, and record the last segment in it."""
        last = batch.last
        if last is None:
            return
        pages = batch.pages
        assert pages is not None
        self.standby.apply(pages.pages(), pages.page_count)
        self._record(last.sequence, last.db_size_pages, last.captured_at)
        batch.clear()

    def _apply_resync(self, segment: ResyncSegment, raw: Path) -> None:
        """Prove the state the resync records over the settled copy, then apply its pages."""
        self._settled()
        with self._scratch() as scratch:
            overlay = Overlay(segment.page_size, scratch, self._page, self.record.page_count)
            apply_resync(raw, segment, overlay)  # type: ignore[arg-type]  # raises unless the state is the recorded one
            self.standby.apply(overlay.pages() if len(overlay) else self._first_page(overlay), overlay.page_count)

    def _first_page(self, overlay: Overlay) -> Iterator[tuple[int, bytes]]:
        """A resync that only shrank the database still needs a commit frame: page 1, unchanged."""
        overlay.seek(0)
        yield 1, overlay.read(overlay.page_size)

    # Pages that differ -----------------------------------------------------------------------------------------

    def take(self, target: Path, snapshot: SnapshotInfo, sequence: int, captured_at: datetime | None) -> int:
        """Make the copy ``target``'s state (a verified restore of ``snapshot`` up to ``sequence``) by applying
        the pages that differ; how many did."""
        self._settled()
        page_size = snapshot.page_size
        if page_size != self.standby.page_size:
            raise UsageError(
                f"{self.output} has {self.standby.page_size}-byte pages, the replica {page_size}: "
                "restore it without --delta (with --force to replace it)"
            )
        pages = target.stat().st_size // page_size
        differing = 0

        def changed() -> Iterator[tuple[int, bytes]]:
            # Page 1 always goes: an apply needs a commit frame even when only the page count changed.
            nonlocal differing
            with target.open("rb") as new:
                for number in range(1, pages + 1):
                    image = new.read(page_size)
                    differs = self._page(number) != image
                    differing += differs
                    if differs or number == 1:
                        yield number, image

        self.standby.apply(changed(), pages)
        self._last = None
        self._record_at(snapshot, sequence, pages, captured_at)
        return differing

    # Records ----------------------------------------------------------------------------------------------------

    def seal(self, *, digest: bool = False) -> CopyRecord:
        """Checkpoint the copy whole and record its file as it stands (and, ``digest``, its pages' digest, which
        proves it later even when its stat changed: a read of every page). Readers still in the WAL after
        ``SETTLE_SECONDS`` keep it: the record keeps the WAL index mark instead."""
        if self.standby.settle(SETTLE_SECONDS):
            self.record = self.record.model_copy(
                update={
                    "file": file_mark(self.output),
                    "wal": None,
                    "state_digest": self._digest(self.record.page_count) if digest else None,
                    "updated_at": utcnow(),
                }
            )
            save_copy_record(self.output, self.record)
        return self.record

    def _settled(self) -> None:
        """The copy's WAL checkpointed into its file, so the file holds its whole state; or the reason it is not."""
        if not self.standby.settle(SETTLE_SECONDS):
            raise StandbyUnsettledError(f"standby {self.output}: readers kept its WAL for {SETTLE_SECONDS:g} s")

    def _record(self, sequence: int, page_count: int, captured_at: datetime | None) -> None:
        self.record = self.record.model_copy(
            update={
                "sequence": sequence,
                "page_count": page_count,
                "captured_at": captured_at,
                "updated_at": utcnow(),
                "file": None,
                "wal": mark_of(self.standby.published),
                "state_digest": None,
            }
        )
        save_copy_record(self.output, self.record)

    def _record_at(self, snapshot: SnapshotInfo, sequence: int, page_count: int, captured_at: datetime | None) -> None:
        self.record = self.record.model_copy(
            update={"database_id": snapshot.database_id, "generation": snapshot.generation}
        )
        self._record(sequence, page_count, captured_at)

    def _digest(self, page_count: int) -> str:
        page_size = self.standby.page_size
        state = StateHasher(page_size, page_count)
        for number in range(1, page_count + 1):
            state.update(page_digest(self._page(number)))
        return state.hexdigest()

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes of the file at ``offset`` (fewer past its end), through the copy's one descriptor."""
        return os.pread(self._file, length, offset)

    def _page(self, number: int) -> bytes:
        """Page ``number`` of the file (zeros past its end, as SQLite reads a hole)."""
        size = self.standby.page_size
        page = os.pread(self._file, size, (number - 1) * size)
        return page + bytes(size - len(page))

    @contextlib.contextmanager
    def _downloaded(self, key: str) -> Iterator[tuple[WalSegment | ResyncSegment, Path]]:
        fd, name = tempfile.mkstemp(dir=self.output.parent, prefix=f".{self.output.name}.", suffix=".segment")
        raw = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                segment = download_segment(self.store, key, out, self.keys)
            self.downloaded += segment.compressed_size
            yield segment, raw
        finally:
            raw.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[BinaryIO]:
        with tempfile.TemporaryFile(dir=self.output.parent) as scratch:
            yield cast(BinaryIO, scratch)


def mark_of(header: IndexHeader) -> WalMark:
    return WalMark(
        max_frame=header.max_frame,
        page_count=header.page_count,
        salts=header.salts.hex(),
        frame_checksum=header.frame_checksum,
    )


class _Batch:
    """Consecutive WAL segments' pages, each page's last image kept in a scratch file, until applied."""

    # Applied together at most this many pages (the copy's WAL grows by as many frames before its checkpoint).
    LIMIT_PAGES = 65536

    def __init__(self, scratch: Path) -> None:
        self._scratch_dir = scratch
        self._file: BinaryIO | None = None
        self.pages: SegmentPages | None = None
        self.last: WalSegment | None = None

    def __enter__(self) -> "_Batch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.clear()

    @property
    def full(self) -> bool:
        return self.pages is not None and len(self.pages) >= self.LIMIT_PAGES

    def add(self, raw: Path, segment: WalSegment) -> None:
        """Check every frame of ``segment`` (``wal_runs``) while its pages go into the batch."""
        if self.pages is None:
            # Closed by ``clear``, which the batch's own ``with`` always reaches.
            self._file = cast(BinaryIO, tempfile.TemporaryFile(dir=self._scratch_dir))  # noqa: SIM115
            self.pages = SegmentPages(segment.page_size, self._file)
        for run in wal_runs(raw, segment):
            self.pages.take(run)
        self.last = segment

    def clear(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self.pages, self.last = None, None, None
