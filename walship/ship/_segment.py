"""Capturing one segment: whole committed transactions from the cursor, copied verbatim into the spool."""

import hashlib
import os
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, NamedTuple

from walship.errors import ContinuityLostError
from walship.layout import format_segment_key
from walship.models import SegmentInfo, WalCursor, utcnow
from walship.spool import Spool, new_entry
from walship.sqlite import WAL_HEADER_SIZE, WalCapture, cursor_at, may_follow_restart

__all__ = ["Captured", "capture_segment"]


class Captured(NamedTuple):
    """One segment spooled, and the cursor just after it."""

    segment: SegmentInfo
    cursor: WalCursor
    budget_reached: bool  # more committed WAL waits beyond the byte budget


class NoRoom(NamedTuple):
    """Committed WAL waits, but the spool has no room for it until uploads free some."""


def capture_segment(
    capture: WalCapture,
    spool: Spool,
    cursor: WalCursor,
    *,
    guarded: bool,
    committed_after: datetime,
    max_bytes: int,
) -> Captured | NoRoom | None:
    """Spool the whole committed transactions after ``cursor`` (up to ``max_bytes``); None if there are none.

    The segment's data and description are fsynced before the caller moves
    the cursor. Raises ``ContinuityLostError`` when the WAL restarted in a way
    the lineage rules do not accept (``guarded``: see ``walship.sqlite``).
    """
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
    scan = capture.scan(start, seed, max_bytes=max_bytes)
    if scan.commits == 0 or (scan.header.salt1, scan.header.salt2) != (header.salt1, header.salt2):
        return None
    size = scan.last_commit_offset - start
    if not spool.room_for_segment(size):
        return NoRoom()
    now = utcnow()
    with spool.writing(".wal", what=f"a WAL segment of {capture.database}", needed=size) as data:
        digest, copied = _copy_fsynced(capture, start, scan.last_commit_offset, data)
        start_checksum = (header.checksum1, header.checksum2) if seed is None else seed
        info = SegmentInfo(
            key=format_segment_key(cursor.generation, cursor.sequence + 1),
            generation=cursor.generation,
            sequence=cursor.sequence + 1,
            salt1=header.salt1,
            salt2=header.salt2,
            big_endian=header.big_endian,
            page_size=header.page_size,
            start_offset=start,
            end_offset=scan.last_commit_offset,
            checksum_start1=start_checksum[0],
            checksum_start2=start_checksum[1],
            checksum_end1=scan.last_commit_checksum[0],
            checksum_end2=scan.last_commit_checksum[1],
            frames=scan.frames_committed,
            commits=scan.commits,
            db_size_pages=scan.db_size_pages or 0,
            wal_restarted=restarted,
            committed_after=committed_after,
            captured_at=now,
            raw_size=copied,
            sha256=digest,
        )
        spool.add(new_entry(info), data)
    moved = cursor_at(cursor.generation, info.sequence, header, scan, cursor.db_inode).model_copy(
        update={"moved_at": now, "snapshot_sequence": cursor.snapshot_sequence, "snapshot_at": cursor.snapshot_at}
    )
    return Captured(info, moved, scan.budget_reached)


def _copy_fsynced(capture: WalCapture, start: int, end: int, target: Path) -> tuple[str, int]:
    """Copy WAL bytes ``[start, end)`` to ``target``, fsynced; their SHA-256 and count."""
    with target.open("wb") as out:
        hashing = _HashingWriter(out)
        capture.copy_range(start, end, hashing.write)
        out.flush()
        os.fsync(out.fileno())
    return hashing.digest.hexdigest(), hashing.count


class _HashingWriter:
    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.count += len(data)
        return self._raw.write(data)
