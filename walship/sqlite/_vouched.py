"""Scanning the frames the WAL index vouches for, a column of header bytes at a time.

Frames up to the WAL index's ``mxFrame`` are the ones SQLite's own readers
trust without checksumming them. For those, the scan checks every frame's
header (page number not 0, the WAL's salts) and finds the commit frames, but
not one frame at a time in Python: each header field is read for a whole run
of frames as one strided byte column, and columns are combined as big
integers (OR and XOR act on every byte at once). Checksums are computed at
the ends only: the first frame must chain from the cursor's checksum (nothing
was rewritten under the cursor) and the last commit frame must match its own
page, seeded by the checksum stored in the frame before it. If that end does
not match, the range is scanned frame by frame (``scan_wal``).

At a hundred thousand frames a second the frame-by-frame loop alone took a
core; the columns take a few milliseconds.
"""

from typing import BinaryIO

from walship.sqlite._checksum import frame_checksum
from walship.sqlite._wal import (
    WAL_HEADER_SIZE,
    WalScan,
    parse_wal_header,
    read_frame_header,
    read_up_to,
    scan_wal,
)

__all__ = ["scan_vouched"]

# Bytes of whole frames read at once: the columns of a chunk are small, its pages are not kept.
_CHUNK_BYTES = 1 << 20


class _Columns:
    """Per frame, one byte each: page number OR-ed (0: page 0), commit size OR-ed, salts XOR-ed with the WAL's."""

    def __init__(self) -> None:
        self.page = bytearray()
        self.commit = bytearray()
        self.stale = bytearray()

    def add(self, chunk: bytes, frame_size: int, salts: bytes) -> None:
        frames = len(chunk) // frame_size
        view = memoryview(chunk)[: frames * frame_size]

        def column(offset: int) -> int:
            return int.from_bytes(view[offset::frame_size].tobytes(), "big")

        page = commit = stale = 0
        for k in range(4):
            page |= column(k)
            commit |= column(4 + k)
        for k, expected in enumerate(salts):
            stale |= column(8 + k) ^ int.from_bytes(bytes([expected]) * frames, "big")
        self.page += page.to_bytes(frames, "big")
        self.commit += commit.to_bytes(frames, "big")
        self.stale += stale.to_bytes(frames, "big")

    def valid(self) -> int:
        """How many frames from the first are valid: up to the first page 0 or stale salt."""
        zero_page = self.page.find(0)
        stale = len(self.stale) - len(self.stale.lstrip(b"\0"))
        return min(x for x in (zero_page, stale, len(self.page)) if x >= 0)


def scan_vouched(
    f: BinaryIO, *, start_offset: int, start_checksum: tuple[int, int] | None, max_bytes: int | None = None
) -> WalScan:
    """``scan_wal`` for a file that ends where the WAL index says the committed frames end (see the module)."""
    f.seek(0)
    header = parse_wal_header(read_up_to(f, WAL_HEADER_SIZE))
    seed = (header.checksum1, header.checksum2) if start_checksum is None else start_checksum
    if start_checksum is None and start_offset != WAL_HEADER_SIZE:
        raise ValueError("reading from past the first frame needs the running checksum of the frame before")
    nothing = WalScan(header, start_offset, seed, 0, 0, None)
    size = header.frame_size
    f.seek(start_offset)
    first = read_up_to(f, size)
    if len(first) < size or frame_checksum(first, seed, header.big_endian) != read_frame_header(first)[4:6]:
        return scan_wal(f, start_offset=start_offset, start_checksum=start_checksum, max_bytes=max_bytes)
    columns = _Columns()
    salts = header.salt1.to_bytes(4, "big") + header.salt2.to_bytes(4, "big")
    columns.add(first, size, salts)
    while chunk := read_up_to(f, max(1, _CHUNK_BYTES // size) * size):
        columns.add(chunk, size, salts)
        if len(chunk) % size:
            break  # a torn frame at the end is no frame
    valid = columns.valid()
    commits_at = bytes(columns.commit[:valid])
    fit = valid if max_bytes is None else max(0, min(valid, max_bytes // size))
    last = len(commits_at[:fit].rstrip(b"\0")) - 1  # the last commit frame within the budget
    if last < 0:
        # A first transaction bigger than the budget is still taken whole.
        beyond = commits_at[fit:]
        skipped = len(beyond) - len(beyond.lstrip(b"\0"))
        if skipped == len(beyond):
            return nothing
        last = fit + skipped
    budget_reached = max_bytes is not None and valid > max(fit, last + 1)
    end = start_offset + (last + 1) * size
    # The last commit frame, and the frame before it whose stored checksum seeds it
    # (the first frame was checked against the cursor's checksum above).
    frames = 2 if last > 0 else 1
    f.seek(end - frames * size)
    raw = read_up_to(f, frames * size)
    final = read_frame_header(raw[-size:])
    if last > 0:
        before = read_frame_header(raw)
        if frame_checksum(raw[size:], (before[4], before[5]), header.big_endian) != final[4:6]:
            return scan_wal(f, start_offset=start_offset, start_checksum=start_checksum, max_bytes=max_bytes)
    commits = last + 1 - commits_at[: last + 1].count(0)
    return WalScan(header, end, (final[4], final[5]), last + 1, commits, final[1], budget_reached)
