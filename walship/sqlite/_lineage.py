"""WAL lineage: when a WAL continues what was captured, written once.

A generation is one unbroken lineage of WAL. Within a WAL (one pair of salts)
frames chain by their running checksum. Across a WAL restart (new salts,
salt-1 one higher per restart) the lineage continues only if no frame of the
old WAL was lost, which is proven one of two ways:

- *guarded*: from the cursor's point on, walship held a pin the whole time,
  and its only pins that let the WAL restart were taken when every published
  frame was captured (``WalCapture.move_pin``). Then any number of restarts
  lost nothing: the old WAL's frames were all captured, and any WAL in between
  held no frame (backfill, and so a second restart with frames, was held back).
- *checkpointed*: nobody held the WAL (between two runs that did not overlap),
  but the cursor records that the whole WAL was in the database file and
  captured, and exactly one restart happened since (salt-1 plus one).

Anything else starts a new generation, with the reason.
"""

from walship.errors import ContinuityLostError
from walship.models import WalCursor
from walship.sqlite._capture import Covers, WalCapture
from walship.sqlite._wal import FRAME_HEADER_SIZE, WAL_HEADER_SIZE, WAL_MAGIC, WAL_VERSION, WalHeader, WalScan
from walship.sqlite._walindex import WalIndexState

__all__ = [
    "began_without_wal",
    "captured_frames",
    "check_resume",
    "covered_by",
    "cursor_at",
    "cursor_at_end",
    "may_follow_restart",
    "replay_header",
]

_MASK = 0xFFFFFFFF


def cursor_at(generation: str, sequence: int, header: WalHeader, scan: WalScan, inode: int) -> WalCursor:
    """The cursor just after the last commit ``scan`` found."""
    return WalCursor(
        generation=generation,
        sequence=sequence,
        salt1=header.salt1,
        salt2=header.salt2,
        offset=scan.last_commit_offset,
        checksum1=scan.last_commit_checksum[0],
        checksum2=scan.last_commit_checksum[1],
        big_endian=header.big_endian,
        page_size=header.page_size,
        db_inode=inode,
    )


def cursor_at_end(capture: WalCapture, generation: str) -> WalCursor:
    """Sequence 0 of a new generation, at the end of the committed WAL (call it while writers wait).

    Without a WAL the database file holds everything, and any WAL that
    appears continues it: the cursor is marked ``checkpointed`` there.
    """
    inode = capture.db_inode
    header = capture.wal_header()
    if header is None:
        return WalCursor(
            generation=generation,
            sequence=0,
            offset=WAL_HEADER_SIZE,
            checkpointed=True,
            db_inode=inode,
            db_mtime_ns=capture.db_mtime_ns,
        )
    return cursor_at(generation, 0, header, capture.scan(WAL_HEADER_SIZE, None), inode)


def replay_header(*, big_endian: bool, page_size: int, salt1: int, salt2: int) -> WalHeader:
    """A WAL header that frames of that WAL verify against (the header's own checksum is not needed)."""
    return WalHeader(WAL_MAGIC[big_endian], WAL_VERSION, page_size, 0, salt1, salt2, 0, 0)


def captured_frames(cursor: WalCursor) -> int:
    if not cursor.page_size:
        return 0
    return (cursor.offset - WAL_HEADER_SIZE) // (cursor.page_size + FRAME_HEADER_SIZE)


def covered_by(cursor: WalCursor | None) -> Covers:
    """Whether ``cursor`` holds every frame an index state publishes (its WAL, that many frames or more)."""

    def covers(state: WalIndexState) -> bool:
        if state.max_frame == 0:
            return True
        if cursor is None or (cursor.salt1, cursor.salt2) != (state.salt1, state.salt2):
            return False
        return captured_frames(cursor) >= state.max_frame

    return covers


def began_without_wal(cursor: WalCursor) -> bool:
    return cursor.offset == WAL_HEADER_SIZE and (cursor.salt1, cursor.salt2) == (0, 0)


def may_follow_restart(cursor: WalCursor, header: WalHeader, *, guarded: bool) -> bool:
    """Whether a WAL with other salts than the cursor's continues its lineage (see the module's rules)."""
    if guarded:
        return True
    if not cursor.checkpointed:
        return False
    return began_without_wal(cursor) or header.salt1 == (cursor.salt1 + 1) & _MASK


def check_resume(cursor: WalCursor, capture: WalCapture, *, guarded: bool) -> None:
    """Raise ``ContinuityLostError`` unless the database's WAL now continues ``cursor``."""
    if cursor.db_inode != capture.db_inode:
        raise ContinuityLostError("the database file was replaced")
    header = capture.wal_header()
    if header is None:
        # An empty WAL (truncated) or none: under a guard nothing was lost; else the file must be as we left it.
        if not guarded and (not cursor.checkpointed or cursor.db_mtime_ns != capture.db_mtime_ns):
            raise ContinuityLostError("the WAL was checkpointed and removed while nobody watched")
        return
    if (header.salt1, header.salt2) == (cursor.salt1, cursor.salt2):
        stored = capture.frame_checksum_before(cursor.offset, header)
        if cursor.offset > WAL_HEADER_SIZE and stored != (cursor.checksum1, cursor.checksum2):
            raise ContinuityLostError("the WAL no longer holds the last captured frame")
        return
    if not guarded and began_without_wal(cursor) and cursor.db_mtime_ns != capture.db_mtime_ns:
        # While nobody held a read transaction, frames may have been
        # checkpointed into the file and the WAL reset any number of times.
        raise ContinuityLostError("the database changed and its WAL was reset while nobody watched")
    if not may_follow_restart(cursor, header, guarded=guarded):
        raise ContinuityLostError("the WAL was reset while nobody watched")
