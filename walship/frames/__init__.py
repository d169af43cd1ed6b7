"""Framed snapshots: a database in independent zstd frames of whole pages, with a table of them at the end.

A restore fetches and decompresses frames in parallel, a query reads the
frame holding the page it needs, a delta restore fetches only frames whose
SHA-256 differs from the pages it has; ``zstd -d`` still turns the object
into the database (docs/FORMAT.md, "Framed snapshots").
"""

from walship.frames._fetch import RUN_BYTES, Fetched, Seed, fetch_framed
from walship.frames._read import decode_frame, read_agreed_layout, read_frames, read_layout
from walship.frames._table import ENVELOPE, Frame, FrameLayout, format_tail, parse_tail, tail_size
from walship.frames._write import FRAME_BYTES, compress_framed, framed_chunks, pages_per_frame

__all__ = [
    "ENVELOPE",
    "FRAME_BYTES",
    "RUN_BYTES",
    "Fetched",
    "Frame",
    "FrameLayout",
    "Seed",
    "compress_framed",
    "decode_frame",
    "fetch_framed",
    "format_tail",
    "framed_chunks",
    "pages_per_frame",
    "parse_tail",
    "read_agreed_layout",
    "read_frames",
    "read_layout",
    "tail_size",
]
