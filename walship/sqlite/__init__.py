"""SQLite-facing code: input checks, consistent snapshots, holding and reading a live WAL, its lineage."""

from walship.sqlite._capture import Covers, WalCapture
from walship.sqlite._checksum import FrameShares, frame_checksum, wal_checksum
from walship.sqlite._database import HEADER_SIZE, check_database, integrity_check, parse_header, read_header
from walship.sqlite._lineage import (
    began_without_wal,
    captured_frames,
    check_resume,
    covered_by,
    cursor_at,
    cursor_at_end,
    may_follow_restart,
    replay_header,
)
from walship.sqlite._pages import PageCopy, consistent_pages
from walship.sqlite._snapshot import take_snapshot
from walship.sqlite._wal import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    WAL_MAGIC,
    WAL_VERSION,
    FrameRun,
    WalHeader,
    WalScan,
    iter_frame_runs,
    iter_frames,
    parse_wal_header,
)
from walship.sqlite._walindex import WalIndexState

__all__ = [
    "FRAME_HEADER_SIZE",
    "HEADER_SIZE",
    "WAL_HEADER_SIZE",
    "WAL_MAGIC",
    "WAL_VERSION",
    "Covers",
    "FrameRun",
    "FrameShares",
    "PageCopy",
    "WalCapture",
    "WalHeader",
    "WalIndexState",
    "WalScan",
    "began_without_wal",
    "captured_frames",
    "check_database",
    "check_resume",
    "consistent_pages",
    "covered_by",
    "cursor_at",
    "cursor_at_end",
    "frame_checksum",
    "integrity_check",
    "iter_frame_runs",
    "iter_frames",
    "may_follow_restart",
    "parse_header",
    "parse_wal_header",
    "read_header",
    "replay_header",
    "take_snapshot",
    "wal_checksum",
]
