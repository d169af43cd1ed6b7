"""Capturing one segment: whole committed transactions from the cursor, sealed into the spool.

``capture_segment`` streams a segment into a spool file, compressed as it
will be stored (sealed once, so uploads only send it) and fsynced before it
counts. ``read_tail`` reads the few frames written since into memory while
writers wait (a checkpoint's last step), so the pause costs no fsync of
walship's; ``spool_tail`` makes that segment durable once writers go on.
"""

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import NamedTuple

from walship.envelope import Sealing
from walship.errors import ContinuityLostError
from walship.models import WalCursor, utcnow
from walship.resync import FrameDigester, PageChanges
from walship.segment import WalSegment, seal_segment
from walship.spool import Spool, new_entry
from walship.sqlite import WAL_HEADER_SIZE, WalCapture, WalHeader, WalScan, cursor_at, may_follow_restart

__all__ = ["Captured", "NoRoom", "TailCopy", "TooBig", "capture_segment", "read_tail", "spool_tail"]


class Captured(NamedTuple):
    """One segment spooled, and the cursor just after it."""

    segment: WalSegment
    cursor: WalCursor
    budget_reached: bool  # more committed WAL waits beyond the byte budget
    pages: PageChanges  # what it does to the database's pages (the page digest map follows)


class NoRoom(NamedTuple):
    """Committed WAL waits, but the spool has no room for it until uploads free some."""


class TailCopy(NamedTuple):
    """A segment read into memory; it counts as captured once ``spool_tail`` made it durable."""

    segment: WalSegment
    cursor: WalCursor
    data: bytes


class TooBig(NamedTuple):
    """More committed WAL than a tail copy may hold in memory."""


class _Found(NamedTuple):
    header: WalHeader
    scan: WalScan
    start: int
    seed: tuple[int, int] | None
    restarted: bool
    captured_at: datetime  # taken before the scan read where the committed WAL ends


def _find(capture: WalCapture, cursor: WalCursor, *, guarded: bool, max_bytes: int | None) -> _Found | None:
    """The whole committed transactions after ``cursor`` (None if none); lineage checked."""
    header = capture.wal_header()
    if header is None:
        return None
    restarted = (header.salt1, header.salt2) != (cursor.salt1, cursor.salt2)
    if restarted:
        if not may_follow_restart(cursor, header, guarded=guarded):
            raise ContinuityLostError("the WAL was reset by someone else")
        start, seed = WAL_HEADER_SIZE, None
    else:
        start, seed = cursor.offset, (cursor.checksum1, cursor.checksum2)
        if start == WAL_HEADER_SIZE:
            seed = None
    # Before the scan: a commit published before this moment is in the scan (or
    # an earlier one), so the segment holds every commit made before its
    # captured_at. Taken after, a commit between the two would be neither here
    # nor before the next segment's committed_after.
    captured_at = utcnow()
    scan = capture.scan(start, seed, max_bytes=max_bytes)
    if scan.commits == 0 or (scan.header.salt1, scan.header.salt2) != (header.salt1, header.salt2):
        return None
    return _Found(header, scan, start, seed, restarted, captured_at)


def _describe(found: _Found, cursor: WalCursor, committed_after: datetime, sha256: str, size: int) -> WalSegment:
    header, scan = found.header, found.scan
    start_checksum = (header.checksum1, header.checksum2) if found.seed is None else found.seed
    return WalSegment(
        generation=cursor.generation,
        sequence=cursor.sequence + 1,
        salt1=header.salt1,
        salt2=header.salt2,
        big_endian=header.big_endian,
        page_size=header.page_size,
        start_offset=found.start,
        end_offset=scan.last_commit_offset,
        checksum_start1=start_checksum[0],
        checksum_start2=start_checksum[1],
        checksum_end1=scan.last_commit_checksum[0],
        checksum_end2=scan.last_commit_checksum[1],
        frames=scan.frames_committed,
        commits=scan.commits,
        db_size_pages=scan.db_size_pages or 0,
        wal_restarted=found.restarted,
        committed_after=committed_after,
        captured_at=found.captured_at,
        raw_size=size,
        sha256=sha256,
    )


def _moved(found: _Found, cursor: WalCursor) -> WalCursor:
    """The cursor just after the segment ``found`` makes."""
    moved = cursor_at(cursor.generation, cursor.sequence + 1, found.header, found.scan, cursor.db_inode)
    return moved.model_copy(
        update={
            "moved_at": found.captured_at,
            "snapshot_sequence": cursor.snapshot_sequence,
            "snapshot_at": cursor.snapshot_at,
        }
    )


def capture_segment(
    capture: WalCapture,
    spool: Spool,
    cursor: WalCursor,
    *,
    guarded: bool,
    committed_after: datetime,
    max_bytes: int,
    sealing: Sealing,
) -> Captured | NoRoom | None:
    """Spool the whole committed transactions after ``cursor`` (up to ``max_bytes``); None if there are none.

    The segment's data and description are fsynced before the caller moves
    the cursor. Raises ``ContinuityLostError`` when the WAL restarted in a way
    the lineage rules do not accept (``guarded``: see ``walship.sqlite``).
    """
    found = _find(capture, cursor, guarded=guarded, max_bytes=max_bytes)
    if found is None:
        return None
    size = found.scan.last_commit_offset - found.start
    if not spool.room_for_segment(size):
        return NoRoom()
    digester = FrameDigester(found.header.page_size)

    def copy(write: Callable[[bytes], int]) -> None:
        def both(chunk: bytes) -> int:
            digester.feed(chunk)
            return write(chunk)

        capture.copy_range(found.start, found.scan.last_commit_offset, both)

    with spool.writing(".wal.zst", what=f"a WAL segment of {capture.database}", needed=size) as data:
        segment, stored = seal_segment(
            data, sealing, size, copy, lambda sha, raw_size: _describe(found, cursor, committed_after, sha, raw_size)
        )
        spool.add(new_entry(segment, stored.sha256), data)
    return Captured(segment, _moved(found, cursor), found.scan.budget_reached, digester.changes())


def read_tail(
    capture: WalCapture, cursor: WalCursor, *, guarded: bool, committed_after: datetime, limit: int
) -> TailCopy | TooBig | None:
    """The committed transactions after ``cursor``, read into memory (at most ``limit`` bytes)."""
    found = _find(capture, cursor, guarded=guarded, max_bytes=None)
    if found is None:
        return None
    if found.scan.last_commit_offset - found.start > limit:
        return TooBig()
    chunks: list[bytes] = []
    capture.copy_range(found.start, found.scan.last_commit_offset, chunks.append)
    data = b"".join(chunks)
    segment = _describe(found, cursor, committed_after, hashlib.sha256(data).hexdigest(), len(data))
    return TailCopy(segment, _moved(found, cursor), data)


def spool_tail(spool: Spool, tail: TailCopy, sealing: Sealing) -> PageChanges:
    """Write a tail copy into the spool, sealed and fsynced, as ``capture_segment`` would have;
    what it does to the pages (digested here, after writers went on)."""
    with spool.writing(".wal.zst", what=f"a WAL segment ({tail.segment.key})", needed=len(tail.data)) as path:
        segment, stored = seal_segment(
            path, sealing, len(tail.data), lambda write: write(tail.data), lambda _sha256, _size: tail.segment
        )
        spool.add(new_entry(segment, stored.sha256), path)
    digester = FrameDigester(tail.segment.page_size)
    digester.feed(tail.data)
    return digester.changes()
