"""Segments, the numbered objects that follow a generation's snapshot: the one place their format lives.

A ``WalSegment`` holds whole committed transactions copied verbatim from the
WAL; a ``ResyncSegment`` the pages a gap nobody watched changed. This package
writes them (``seal_segment``: the body sealed, then the description at the
object's end), describes them (that trailer, and the same fields as user
metadata, a shortcut), reads them back (``download_segment``: one GET, no
HEAD) and checks and applies them (``check_link``, ``apply_wal`` or, a run of frames at a time,
``wal_runs``; ``apply_resync``). docs/FORMAT.md describes the bytes.
"""

from walship.segment._apply import apply_wal, check_link, wal_runs
from walship.segment._describe import FORMAT, description_trailer, from_head, from_trailer, segment_metadata
from walship.segment._models import ResyncSegment, Segment, WalPoint, WalSegment, parse_segment
from walship.segment._read import download_segment, read_description
from walship.segment._resync import ResyncPages, apply_resync, restored_state, write_resync
from walship.segment._write import Stored, seal_segment

__all__ = [
    "FORMAT",
    "ResyncPages",
    "ResyncSegment",
    "Segment",
    "Stored",
    "WalPoint",
    "WalSegment",
    "apply_resync",
    "apply_wal",
    "check_link",
    "description_trailer",
    "download_segment",
    "from_head",
    "from_trailer",
    "parse_segment",
    "read_description",
    "restored_state",
    "seal_segment",
    "segment_metadata",
    "wal_runs",
    "write_resync",
]
