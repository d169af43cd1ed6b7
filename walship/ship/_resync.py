"""Continuing a generation after a gap: the shipper's page digest map, and the resync segment it allows.

``PageTracker`` keeps the map in step with the cursor: reset from each
generation's snapshot, moved by every captured segment before the cursor
moves. ``spool_resync`` compares one consistent state of the database with
it, inside the same writers' pause rules as a generation's snapshot (the WAL
end read and the read transaction begun while writers wait), and spools the
pages that differ as the next segment of the same generation.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from walship.envelope import Sealing
from walship.errors import ContinuityLostError, MapUnusableError
from walship.layout import format_resync_key
from walship.models import WalCursor, utcnow
from walship.resync import PageChanges, PageMap, PageMapStore, digest_file
from walship.segment import ResyncPages, ResyncSegment, seal_segment, write_resync
from walship.ship._identity import HEADER_BYTES, DatabaseIdentity, IdentityFile, why_another
from walship.ship._results import FIRST_CAPTURE, ResyncSummary
from walship.spool import Spool, new_entry
from walship.sqlite import WalCapture, cursor_at_end

__all__ = ["PageTracker", "Resynced", "spool_resync"]

log = logging.getLogger(__name__)

# The application's own checkpoint may hold the write lock a moment: the pause is asked for this often.
_PAUSE_ATTEMPTS = 50


class PageTracker:
    """The page digest map of one spool, or why there is none to trust."""

    def __init__(self, spool_root: Path) -> None:
        self._store = PageMapStore(spool_root)
        self._identity = IdentityFile(spool_root)
        self.map: PageMap | None = None
        # The header fields of the generation's snapshot or last resync (see walship.ship._identity).
        self.identity: DatabaseIdentity | None = None
        self.missing = FIRST_CAPTURE

    def load(self, cursor: WalCursor | None) -> None:
        """The map at ``cursor`` from the spool (records past it dropped), or the reason it cannot be had."""
        self.close()
        if cursor is None:
            self.missing = FIRST_CAPTURE
            return
        self.identity = self._identity.load(cursor.generation)
        try:
            self.map = self._store.load(cursor.generation, cursor.sequence)
        except MapUnusableError as unusable:
            self.missing = str(unusable)
        except OSError as exc:
            self.missing = f"the page digest map could not be read: {exc}"

    def begin(self, generation: str, snapshot: Path, page_size: int, identity: DatabaseIdentity) -> None:
        """A new generation's map, from its snapshot copy's own pages (before the cursor is saved there);
        ``identity`` is the database's at the snapshot (the copy's schema cookie is the backup's own)."""
        self.close()

        def build() -> None:
            self.map = PageMap.build(self._store.work, generation, 0, page_size, digest_file(snapshot, page_size))
            self._store.reset(self.map)

        self._keep(build, generation)
        self.recorded(generation, identity)

    def recorded(self, generation: str, identity: DatabaseIdentity) -> None:
        """The identity of the database whose state the replica now holds (at a snapshot, a resync)."""
        self.identity = identity
        try:
            self._identity.save(generation, identity)
        except OSError as exc:
            log.warning("identity of generation %s not recorded: %s", generation, exc)

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
            self.map = None

    def captured(self, sequence: int, changes: PageChanges) -> None:
        """One more sequence captured: move the map with it (before the cursor is saved there)."""
        page_map = self.map
        if page_map is not None:
            self._keep(lambda: self._store.record(page_map, sequence, changes), page_map.generation)

    def sync(self) -> None:
        """Make the journal durable (at the end of a run: the map must survive a power loss in the gap)."""
        if self.map is not None:
            self._keep(self._store.sync, self.map.generation)

    def why_not(self, cursor: WalCursor | None, capture: WalCapture) -> str | None:
        """Why a resync cannot continue ``cursor``'s generation (None: it can)."""
        page_map = self.map
        if cursor is None:
            return FIRST_CAPTURE
        if page_map is None:
            return self.missing
        if (page_map.generation, page_map.sequence) != (cursor.generation, cursor.sequence):
            return f"the page digest map is at {page_map.generation}/{page_map.sequence}, not at the cursor"
        if cursor.db_inode != capture.db_inode:
            return "the database file was replaced"
        page_size = capture.header().page_size
        if page_size != page_map.page_size:
            return f"the page size changed from {page_map.page_size} to {page_size}"
        return None

    def _keep(self, step: Callable[[], object], generation: str) -> None:
        """Run a map step; a failure costs the map (a later gap then takes a full snapshot), never the run."""
        try:
            step()
            self.missing = ""
        except (MapUnusableError, OSError) as exc:
            log.warning("page digest map of generation %s dropped: %s", generation, exc)
            self.close()
            self.missing = f"the page digest map was dropped: {exc}"


class Resynced(NamedTuple):
    segment: ResyncSegment
    cursor: WalCursor
    summary: ResyncSummary


def spool_resync(
    capture: WalCapture,
    spool: Spool,
    tracker: PageTracker,
    cursor: WalCursor,
    *,
    reason: str,
    sealing: Sealing,
    between: Callable[[], object],
    at_point: Callable[[WalCursor], object],
) -> Resynced:
    """Spool the pages that differ from the map as segment ``cursor.sequence + 1``, then move the map.

    ``between`` runs between two attempts at pausing writers (to move the
    pin, as for a snapshot); ``at_point`` hears the new cursor while writers
    still wait (to move the pin there). The caller saves the cursor once this
    returns. Raises ``ContinuityLostError``, spooling nothing and leaving the
    map as it was, when the database is not the one the replica holds
    (``walship.ship._identity``).
    """
    replica = tracker.map
    assert replica is not None, "why_not() first"
    sequence = cursor.sequence + 1
    key = format_resync_key(cursor.generation, sequence)
    with contextlib.ExitStack() as stack:
        with capture.writers_paused(attempts=_PAUSE_ATTEMPTS, between=between):
            at_end = cursor_at_end(capture, cursor.generation)
            pages = stack.enter_context(capture.pages_now())
            state_at = utcnow()
            moved = at_end.model_copy(
                update={
                    "sequence": sequence,
                    "moved_at": state_at,
                    "snapshot_sequence": cursor.snapshot_sequence,
                    "snapshot_at": cursor.snapshot_at,
                }
            )
            at_point(moved)
        with spool.writing(".resync.zst", what=f"a resync of {capture.database}", needed=pages.size) as path:
            compared: list[ResyncPages] = []
            first = bytearray()

            def blocks() -> Iterator[bytes | bytearray]:
                for block in pages.blocks():
                    first.extend(b"" if first else block[:HEADER_BYTES])
                    yield block

            def described(sha256: str, _raw_size: int) -> ResyncSegment:
                [written] = compared
                # Checked before the description ends the object: another database's pages never go up.
                _same_database(tracker.identity, bytes(first), len(written.changes.digests), pages.page_count)
                return _describe(moved, cursor.moved_at or state_at, state_at, pages.page_size, written, sha256)

            info, stored = seal_segment(
                path,
                sealing,
                0,
                lambda write: compared.append(
                    write_resync(blocks(), pages.page_size, pages.page_count, replica, write)
                ),
                described,
            )
            [written] = compared
            spool.add(new_entry(info, stored.sha256), path)
    tracker.captured(sequence, written.changes)
    tracker.recorded(cursor.generation, DatabaseIdentity.from_header(bytes(first)))
    summary = ResyncSummary(
        key=key,
        reason=reason,
        pages=len(written.changes.digests),
        page_count=pages.page_count,
        raw_bytes=written.raw_size,
        stored_bytes=stored.size,
    )
    return Resynced(info, moved, summary)


def _same_database(recorded: DatabaseIdentity | None, header: bytes, changed: int, page_count: int) -> None:
    if recorded is None or len(header) < HEADER_BYTES:
        return  # nothing recorded (a spool of an earlier walship): the inode check is all there is
    why = why_another(recorded, DatabaseIdentity.from_header(header), changed, page_count)
    if why is not None:
        raise ContinuityLostError(f"the database file was replaced: {why}")


def _describe(
    moved: WalCursor, committed_after: datetime, state_at: datetime, page_size: int, written: ResyncPages, sha256: str
) -> ResyncSegment:
    # Its WAL position is the cursor's: the segment after it continues from there.
    return ResyncSegment(
        kind="resync",
        generation=moved.generation,
        sequence=moved.sequence,
        page_size=page_size,
        db_size_pages=written.changes.page_count,
        salt1=moved.salt1,
        salt2=moved.salt2,
        end_offset=moved.offset,
        checksum_end1=moved.checksum1,
        checksum_end2=moved.checksum2,
        pages=len(written.changes.digests),
        state_digest=written.state,
        committed_after=committed_after,
        captured_at=state_at,
        raw_size=written.raw_size,
        sha256=sha256,
    )
