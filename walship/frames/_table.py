"""The end of a framed snapshot: walship's frame table, then zstd's seek table (docs/FORMAT.md, "Framed snapshots").

Both are zstd skippable frames, which every decoder passes over, so the
object still decompresses to the database with ``zstd -d``. The seek table is
the zstd seekable format's, last in the object, so that tools knowing that
format seek in it too; it lists the frame table as a frame that decompresses
to nothing. The frame table holds what zstd's cannot: the page size, every
frame's SHA-256 (a query checks each frame it reads; a delta restore compares
them with the pages it already has), the whole database's SHA-256, and a
SHA-256 of the table itself, so a damaged table is never trusted.
"""

import hashlib
import struct
from dataclasses import dataclass
from typing import NoReturn

from walship.errors import CorruptObjectError

__all__ = ["ENVELOPE", "TAIL_GUESS", "Frame", "FrameLayout", "format_tail", "parse_tail", "tail_size"]

# The envelope name a framed snapshot's metadata records (walship.envelope).
ENVELOPE = "zstd-frames"
_SKIPPABLE = struct.Struct("<II")
_FRAME_TABLE_MAGIC = 0x184D2A57  # walship's skippable frames' magic (walship.trailer's too), told apart by tag
_FRAME_TABLE_TAG = b"wfrm"
_FRAME_TABLE_VERSION = 1
_FRAME_TABLE_HEAD = struct.Struct("<4sBIIQI32s")  # tag, version, page size, pages a frame, raw size, frames, sha256
_DIGEST = 32
_SEEK_TABLE_MAGIC = 0x184D2A5E  # the seekable format's skippable frame
_SEEK_ENTRY = struct.Struct("<II")  # compressed size, decompressed size
_SEEK_FOOTER = struct.Struct("<IBI")  # frames, descriptor (no checksums), seekable magic
_SEEKABLE_MAGIC = 0x8F92EAB1
# What a reader fetches of an object's end first: the tables of a database up to a few GiB in one request.
TAIL_GUESS = 256 << 10


@dataclass(frozen=True)
class Frame:
    """One data frame: where its compressed bytes are in the object, which raw bytes it holds, their SHA-256."""

    index: int
    offset: int
    size: int
    raw_offset: int
    raw_size: int
    sha256: bytes


@dataclass(frozen=True)
class FrameLayout:
    """What a framed snapshot's tables say: its frames in order and the whole database's SHA-256."""

    page_size: int
    pages_per_frame: int
    raw_size: int
    sha256: str
    frames: tuple[Frame, ...]

    @property
    def data_end(self) -> int:
        """Where the data frames end (the tables begin)."""
        last = self.frames[-1] if self.frames else None
        return last.offset + last.size if last else 0

    def frame_of_page(self, number: int) -> Frame:
        """The frame holding page ``number`` (1-based)."""
        return self.frames[(number - 1) // self.pages_per_frame]


def format_tail(
    *, page_size: int, pages_per_frame: int, raw_size: int, sha256: str, frames: list[tuple[int, int, bytes]]
) -> bytes:
    """The frame table and the seek table that end an object whose data ``frames`` are (compressed size, raw
    size, raw SHA-256), in order."""
    body = _FRAME_TABLE_HEAD.pack(
        _FRAME_TABLE_TAG,
        _FRAME_TABLE_VERSION,
        page_size,
        pages_per_frame,
        raw_size,
        len(frames),
        bytes.fromhex(sha256),
    ) + b"".join(digest for _, _, digest in frames)
    body += hashlib.sha256(body).digest()
    frame_table = _SKIPPABLE.pack(_FRAME_TABLE_MAGIC, len(body)) + body
    entries = [(size, raw) for size, raw, _ in frames] + [(len(frame_table), 0)]
    seek_body = b"".join(_SEEK_ENTRY.pack(*entry) for entry in entries)
    seek_body += _SEEK_FOOTER.pack(len(entries), 0, _SEEKABLE_MAGIC)
    return frame_table + _SKIPPABLE.pack(_SEEK_TABLE_MAGIC, len(seek_body)) + seek_body


def tail_size(frames: int) -> int:
    """How many bytes the two tables of an object with ``frames`` data frames take."""
    frame_table = _SKIPPABLE.size + _FRAME_TABLE_HEAD.size + (frames + 1) * _DIGEST
    return frame_table + _SKIPPABLE.size + (frames + 1) * _SEEK_ENTRY.size + _SEEK_FOOTER.size


def parse_tail(tail: bytes, object_size: int, name: str) -> FrameLayout | int:
    """The layout the object's last ``len(tail)`` bytes describe, or how many of its last bytes are needed
    when ``tail`` holds too few. ``CorruptObjectError`` when they are not a framed snapshot's tables."""
    if len(tail) < _SEEK_FOOTER.size:
        _broken(name, "it is shorter than its tables")
    count, descriptor, magic = _SEEK_FOOTER.unpack_from(tail, len(tail) - _SEEK_FOOTER.size)
    if magic != _SEEKABLE_MAGIC or descriptor != 0 or count < 1:
        _broken(name, "it does not end with a seek table")
    frames = count - 1
    needed = tail_size(frames)
    if needed > object_size:
        _broken(name, "its seek table counts more frames than it can hold")
    if needed > len(tail):
        return needed
    tail = tail[len(tail) - needed :]
    seek_start = needed - (_SKIPPABLE.size + count * _SEEK_ENTRY.size + _SEEK_FOOTER.size)
    magic, size = _SKIPPABLE.unpack_from(tail, seek_start)
    if magic != _SEEK_TABLE_MAGIC or size != count * _SEEK_ENTRY.size + _SEEK_FOOTER.size:
        _broken(name, "its seek table's frame is damaged")
    entries = [_SEEK_ENTRY.unpack_from(tail, seek_start + _SKIPPABLE.size + i * _SEEK_ENTRY.size) for i in range(count)]
    body = _frame_table_body(tail[:seek_start], entries[-1], name)
    tag, version, page_size, per_frame, raw_size, listed, whole = _FRAME_TABLE_HEAD.unpack_from(body)
    if tag != _FRAME_TABLE_TAG or version != _FRAME_TABLE_VERSION or listed != frames:
        _broken(name, f"its frame table is version {version} of {tag!r} and counts {listed} frames, not {frames}")
    if page_size < 512 or per_frame < 1:
        _broken(name, f"its frame table says {per_frame} pages of {page_size} bytes a frame")
    layout = _layout(body, entries[:-1], page_size, per_frame, raw_size, whole.hex())
    full = page_size * per_frame
    if sum(f.raw_size for f in layout.frames) != raw_size or any(f.raw_size != full for f in layout.frames[:-1]):
        _broken(name, f"its frames do not hold {raw_size} bytes in frames of {full}")
    if layout.data_end + needed != object_size:
        _broken(name, f"its frames and tables take {layout.data_end + needed} bytes, the object {object_size}")
    return layout


def _frame_table_body(frame_table: bytes, entry: tuple[int, int], name: str) -> bytes:
    magic, size = _SKIPPABLE.unpack_from(frame_table)
    body = frame_table[_SKIPPABLE.size :]
    if magic != _FRAME_TABLE_MAGIC or size != len(body) or entry != (len(frame_table), 0):
        _broken(name, "its frame table's frame is damaged")
    if hashlib.sha256(body[:-_DIGEST]).digest() != body[-_DIGEST:]:
        _broken(name, "its frame table does not match its own SHA-256")
    return body[:-_DIGEST]


def _layout(
    body: bytes, entries: list[tuple[int, int]], page_size: int, per_frame: int, raw_size: int, sha256: str
) -> FrameLayout:
    frames, offset, raw_offset = [], 0, 0
    digests = _FRAME_TABLE_HEAD.size
    for index, (size, raw) in enumerate(entries):
        digest = body[digests + index * _DIGEST : digests + (index + 1) * _DIGEST]
        frames.append(Frame(index, offset, size, raw_offset, raw, digest))
        offset, raw_offset = offset + size, raw_offset + raw
    return FrameLayout(page_size, per_frame, raw_size, sha256, tuple(frames))


def _broken(name: str, why: str) -> NoReturn:
    raise CorruptObjectError(f"verify {name}: not a framed snapshot's end ({why}): the object is truncated or corrupt")
