"""Read SQLite's write-ahead log (the ``-wal`` file) without SQLite.

The format is "Write-Ahead Log File Format", section 4 of the SQLite file
format document (https://www.sqlite.org/fileformat2.html#walformat): a 32-byte
header, then frames of a 24-byte frame header and one page each. A frame is
valid when its salts match the header's and its checksum matches the checksum
running from the header through every frame before it (section 4.1); SQLite
takes the log to end at the first frame that is not valid, and a transaction to
exist only once its commit frame is valid. These readers apply the same rules,
so they see exactly the transactions SQLite itself would recover, and they read
one frame at a time: memory stays bounded by one page whatever the log's size.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, NamedTuple, overload

from walship.errors import CorruptObjectError
from walship.sqlite._checksum import FrameShares, wal_checksum

__all__ = [
    "FRAME_HEADER_SIZE",
    "WAL_HEADER_SIZE",
    "WAL_MAGIC",
    "WAL_VERSION",
    "Frame",
    "FrameRun",
    "RunImages",
    "WalHeader",
    "WalScan",
    "iter_frame_runs",
    "iter_frames",
    "parse_wal_header",
    "read_frame_header",
    "read_up_to",
    "scan_wal",
]

# Section 4.1, "WAL Header Format" and "WAL Frame Header Format": all fields
# are big-endian 32-bit unsigned integers, whatever the checksum byte order.
WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
_WAL_HEADER = struct.Struct(">8I")
_FRAME_HEADER = struct.Struct(">6I")
# The header checksum covers the fields before it; a frame's checksum covers
# the first 8 bytes of its header (page number, commit size) then the page.
_HEADER_CHECKSUMMED = 24

# Section 4.1: the magic's low bit is the checksum byte order (section 4.2):
# set, the checksum reads big-endian words; clear, little-endian. SQLite
# writes its host's order, so logs from x86 and ARM hosts end in 2.
_MAGIC_LITTLE_ENDIAN = 0x377F0682
_MAGIC_BIG_ENDIAN = 0x377F0683
# "File format version. Currently 3007000." SQLite refuses any other value.
_VERSION = 3007000
WAL_MAGIC = {False: _MAGIC_LITTLE_ENDIAN, True: _MAGIC_BIG_ENDIAN}  # by big_endian
WAL_VERSION = _VERSION
# Section 1.3 "Page Size": a power of two from 512 to 65536. Unlike the
# database header's two-byte field, the WAL's four-byte field holds 65536 as is.
_MIN_PAGE_SIZE = 512
_MAX_PAGE_SIZE = 65536


class WalHeader(NamedTuple):
    """The eight fields of the 32-byte WAL header (section 4.1)."""

    magic: int
    version: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum1: int
    checksum2: int

    @property
    def big_endian(self) -> bool:
        """Whether checksums read the log as big-endian (not little-endian) words."""
        return bool(self.magic & 1)

    @property
    def frame_size(self) -> int:
        """Bytes per frame: the frame header and one page."""
        return FRAME_HEADER_SIZE + self.page_size


# A dataclass, not a NamedTuple: a field named ``index`` would shadow tuple.index.
@dataclass(frozen=True, slots=True)
class Frame:
    """One valid frame's header and where it is; its page is not kept."""

    index: int  # 0-based frame number within the WAL
    offset: int  # byte offset of the frame header in the file
    page_number: int
    db_size_after_commit: int  # database size in pages for a commit frame, else 0
    salt1: int
    salt2: int
    checksum1: int  # the running checksum through this frame: the next frame's seed
    checksum2: int

    @property
    def is_commit(self) -> bool:
        """Whether this frame ends a transaction (only commit frames record a size)."""
        return self.db_size_after_commit != 0


class WalScan(NamedTuple):
    """What a scan found: the whole committed transactions from its start on."""

    header: WalHeader
    last_commit_offset: int  # just past the last valid commit frame; the start offset if none
    last_commit_checksum: tuple[int, int]  # the running checksum there: what the next frame chains from
    frames_committed: int  # frames from the start offset through the last commit frame
    commits: int  # commit frames, i.e. whole transactions, from the start offset
    db_size_pages: int | None  # database size after the last commit, None if no commit
    budget_reached: bool = False  # the scan stopped at its byte budget: more commits may follow


def parse_wal_header(data: bytes) -> WalHeader:
    """Decode and check the WAL header at the start of ``data`` (at least 32 bytes)."""
    if len(data) < WAL_HEADER_SIZE:
        raise CorruptObjectError(f"WAL header is truncated: {len(data)} of {WAL_HEADER_SIZE} bytes")
    header = WalHeader._make(_WAL_HEADER.unpack_from(data))
    if header.magic not in (_MAGIC_LITTLE_ENDIAN, _MAGIC_BIG_ENDIAN):
        raise CorruptObjectError(f"not a SQLite WAL: magic {header.magic:#010x}, expected 0x377f0682 or 0x377f0683")
    if header.version != _VERSION:
        raise CorruptObjectError(f"unsupported WAL format version {header.version}, expected {_VERSION}")
    size = header.page_size
    if not _MIN_PAGE_SIZE <= size <= _MAX_PAGE_SIZE or size & (size - 1):
        raise CorruptObjectError(f"WAL header has an invalid page size {size}: not a power of two from 512 to 65536")
    expected = wal_checksum(data[:_HEADER_CHECKSUMMED], 0, 0, header.big_endian)
    if expected != (header.checksum1, header.checksum2):
        raise CorruptObjectError(
            f"WAL header checksum mismatch: stored {header.checksum1:#010x} {header.checksum2:#010x}, "
            f"computed {expected[0]:#010x} {expected[1]:#010x}"
        )
    return header


@overload
def iter_frames(
    f: BinaryIO,
    header: WalHeader,
    *,
    start_offset: int = ...,
    start_checksum: tuple[int, int] | None = ...,
    with_data: Literal[False] = ...,
) -> Iterator[Frame]: ...


@overload
def iter_frames(
    f: BinaryIO,
    header: WalHeader,
    *,
    start_offset: int = ...,
    start_checksum: tuple[int, int] | None = ...,
    with_data: Literal[True],
) -> Iterator[tuple[Frame, bytes]]: ...


def iter_frames(
    f: BinaryIO,
    header: WalHeader,
    *,
    start_offset: int = WAL_HEADER_SIZE,
    start_checksum: tuple[int, int] | None = None,
    with_data: bool = False,
) -> Iterator[Frame] | Iterator[tuple[Frame, bytes]]:
    """Yield the valid frames of ``f`` from ``start_offset`` on, with their pages if ``with_data``.

    ``start_offset`` must be a frame boundary, and past the first frame
    ``start_checksum`` must be the running checksum of the frame before it (a
    previous scan's ``last_commit_checksum``); at the first frame the header's
    checksum is the seed. Iteration stops, as SQLite's recovery does, at the
    first frame that is torn (cut short by the end of the file), carries other
    salts than the header (left over from before the WAL was last reset), or
    breaks the checksum chain. Frames of a transaction not yet committed are
    valid frames too: only a commit frame makes the frames before it count.
    """
    start_checksum = _start_checksum(header, start_offset, start_checksum)
    frames = _valid_frames(f, header, start_offset, start_checksum, with_data=with_data)
    if with_data:
        return frames
    return (frame for frame, _ in frames)


# Frames read per call: one call per frame was a third of a shipper's scan time.
_BATCH_BYTES = 1 << 20
# Header words of a frame: page number, commit size, salt1, salt2, checksum1, checksum2.
_PAGE, _COMMIT, _SALT1, _SALT2, _CHECKSUM1 = range(5)


@dataclass(frozen=True, slots=True)
class FrameRun:
    """Consecutive valid frames read at once: their headers as columns, the frames as one view."""

    first_index: int  # the first frame's 0-based number within the WAL
    first_offset: int
    frame_size: int
    page_numbers: list[int]
    db_sizes: list[int]  # a commit frame's database size in pages, else 0
    checksums: list[tuple[int, int]]  # each frame's running checksum
    frames: memoryview  # the whole frames, headers included

    def __len__(self) -> int:
        return len(self.page_numbers)

    def page(self, index: int) -> memoryview:
        at = index * self.frame_size + FRAME_HEADER_SIZE
        return self.frames[at : at + self.frame_size - FRAME_HEADER_SIZE]

    def last_images(self) -> "RunImages":
        """What applying the run frame by frame leaves: each page's last image, and the page counts it set."""
        last = dict[int, int]()
        smallest = final = None
        highest = 0
        for index, (number, db_size) in enumerate(zip(self.page_numbers, self.db_sizes, strict=True)):
            last[number] = index
            highest = max(highest, number)
            if db_size:
                final = db_size
                smallest = db_size if smallest is None else min(smallest, db_size)
                if highest > db_size:
                    # The commit cut the file below pages written before it.
                    for dropped in [n for n in last if n > db_size]:
                        del last[dropped]
                    highest = db_size
        return RunImages(last, smallest, final)

    def apply_to(self, database: BinaryIO) -> None:
        """Leave ``database`` (open r+b) as writing each frame, and cutting the file at each commit, would;
        but each page is written once, its last image, in page order."""
        page_size = self.frame_size - FRAME_HEADER_SIZE
        images = self.last_images()
        if images.smallest is not None:
            database.truncate(images.smallest * page_size)
        for number in sorted(images.last):
            database.seek((number - 1) * page_size)
            database.write(self.page(images.last[number]))
        if images.final is not None:
            # Frames after the run's last commit belong to the next one: their pages stay, past the size or not.
            database.truncate(max(images.final, max(images.last, default=0)) * page_size)


class RunImages(NamedTuple):
    """A run's effect on a database: apply it by cutting the file to ``smallest`` pages, writing each page's
    image (the run's frame ``last[page]``), then making it ``final`` pages long (None: no commit in it) but
    for pages the frames after the run's last commit wrote past that."""

    last: dict[int, int]
    smallest: int | None
    final: int | None


def iter_frame_runs(
    f: BinaryIO,
    header: WalHeader,
    *,
    start_offset: int = WAL_HEADER_SIZE,
    start_checksum: tuple[int, int] | None = None,
) -> Iterator[FrameRun]:
    """``iter_frames``'s valid frames, a megabyte at a time: checked as columns, never one by one in Python."""
    start_checksum = _start_checksum(header, start_offset, start_checksum)
    return _valid_runs(f, header, start_offset, start_checksum)


def _start_checksum(header: WalHeader, start_offset: int, start_checksum: tuple[int, int] | None) -> tuple[int, int]:
    if start_offset < WAL_HEADER_SIZE or (start_offset - WAL_HEADER_SIZE) % header.frame_size:
        raise ValueError(f"start offset {start_offset} is not a frame boundary for {header.page_size}-byte pages")
    if start_checksum is None:
        if start_offset != WAL_HEADER_SIZE:
            raise ValueError("reading from past the first frame needs the running checksum of the frame before")
        return header.checksum1, header.checksum2
    return start_checksum


def _valid_runs(f: BinaryIO, header: WalHeader, offset: int, checksum: tuple[int, int]) -> Iterator[FrameRun]:
    import numpy as np  # noqa: PLC0415 - only commands that read frames pay for numpy's import

    frame_size = header.frame_size
    batch = max(1, _BATCH_BYTES // frame_size)
    index = (offset - WAL_HEADER_SIZE) // frame_size
    f.seek(offset)
    while True:
        chunk = read_up_to(f, frame_size * batch)
        whole = len(chunk) // frame_size  # a torn frame at the end is no frame
        if not whole:
            return
        view = memoryview(chunk)[: whole * frame_size]
        words = np.frombuffer(view, dtype=">u4").reshape(whole, frame_size // 4)
        # SQLite's own reader (walDecodeFrame in wal.c) also refuses page 0,
        # which no database has: a zeroed frame is never valid.
        foreign = (words[:, _PAGE] == 0) | (words[:, _SALT1] != header.salt1) | (words[:, _SALT2] != header.salt2)
        valid = int(np.argmax(foreign)) if foreign.any() else whole
        stored = words[:valid, _CHECKSUM1 : _CHECKSUM1 + 2].astype(np.uint32)
        if valid:
            valid = FrameShares(view[: valid * frame_size], frame_size, header.big_endian).chained(checksum, stored)
        if valid:
            checksums = [(a, b) for a, b in stored[:valid].tolist()]
            yield FrameRun(
                index,
                offset,
                frame_size,
                words[:valid, _PAGE].tolist(),
                words[:valid, _COMMIT].tolist(),
                checksums,
                view[: valid * frame_size],
            )
            index, offset, checksum = index + valid, offset + valid * frame_size, checksums[-1]
        if valid < batch:
            return


def _valid_frames(
    f: BinaryIO,
    header: WalHeader,
    offset: int,
    checksum: tuple[int, int],
    *,
    with_data: bool = True,
) -> Iterator[tuple[Frame, bytes]]:
    for run in _valid_runs(f, header, offset, checksum):
        for i, (page_number, db_size, (checksum1, checksum2)) in enumerate(
            zip(run.page_numbers, run.db_sizes, run.checksums, strict=True)
        ):
            frame = Frame(
                run.first_index + i,
                run.first_offset + i * run.frame_size,
                page_number,
                db_size,
                header.salt1,
                header.salt2,
                checksum1,
                checksum2,
            )
            yield frame, run.page(i).tobytes() if with_data else b""


def read_up_to(f: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the file."""
    data = f.read(size)
    # Buffered files return short only at the end; raw files and pipes may
    # return short before it.
    while 0 < len(data) < size:
        more = f.read(size - len(data))
        if not more:
            break
        data += more
    return data


def scan_wal(
    f: BinaryIO,
    *,
    start_offset: int = WAL_HEADER_SIZE,
    start_checksum: tuple[int, int] | None = None,
    max_bytes: int | None = None,
) -> WalScan:
    """Find the whole committed transactions in ``f`` from ``start_offset`` (see ``iter_frames``).

    With ``max_bytes``, the scan ends at the last commit whose end lies within
    ``max_bytes`` of the start, so that what it covers can be copied in a
    bounded piece; a first transaction bigger than that is still taken whole
    (a transaction cannot be split). ``budget_reached`` then says whether
    frames beyond were left unread.

    Raises ``CorruptObjectError`` if the header is missing or invalid; an
    empty WAL (as SQLite leaves it before the first write or after a
    truncating checkpoint) has no header and is therefore refused too. Frames
    after the last valid commit frame, of a transaction still being written
    or past the end of the valid log, are not counted. (Frames the WAL index
    vouches for are scanned faster by ``walship.sqlite._vouched``.)
    """
    f.seek(0)
    header = parse_wal_header(read_up_to(f, WAL_HEADER_SIZE))
    frames = iter_frames(f, header, start_offset=start_offset, start_checksum=start_checksum)
    # iter_frames has refused a missing checksum past the first frame.
    last_checksum = (header.checksum1, header.checksum2) if start_checksum is None else start_checksum
    last_offset, committed, commits, db_size = start_offset, 0, 0, None
    budget_reached = False
    for seen, frame in enumerate(frames, start=1):
        end = frame.offset + header.frame_size
        if max_bytes is not None and commits and end - start_offset > max_bytes:
            budget_reached = True
            break
        if frame.is_commit:
            last_offset = end
            last_checksum = (frame.checksum1, frame.checksum2)
            committed, commits, db_size = seen, commits + 1, frame.db_size_after_commit
    return WalScan(header, last_offset, last_checksum, committed, commits, db_size, budget_reached)


def read_frame_header(raw: bytes | memoryview) -> tuple[int, ...]:
    """A frame's six header fields: page number, commit size, salt1, salt2, checksum1, checksum2."""
    return _FRAME_HEADER.unpack_from(raw)
