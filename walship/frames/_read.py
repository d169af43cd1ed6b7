"""Reading a framed snapshot in parts: its tables from its end, then any run of frames by one ranged read."""

import hashlib
from collections.abc import Sequence

import zstandard

from walship.errors import ChecksumMismatchError, CorruptObjectError
from walship.frames._table import TAIL_GUESS, Frame, FrameLayout, parse_tail
from walship.storage import ObjectStore, ReadStream

__all__ = ["decode_frame", "read_agreed_layout", "read_all", "read_frames", "read_layout"]


def read_layout(store: ObjectStore, key: str, size: int) -> FrameLayout:
    """The tables at the end of the framed snapshot ``key`` (``size`` bytes): one ranged read, two for a
    database too big for the first guess."""
    wanted = min(size, TAIL_GUESS)
    for _ in range(2):
        parsed = parse_tail(_read_range(store, key, size - wanted, wanted), size, key)
        if not isinstance(parsed, int):
            return parsed
        wanted = parsed
    raise CorruptObjectError(f"verify {key}: its tables moved while they were read: the object was replaced")


def read_agreed_layout(
    store: ObjectStore, key: str, size: int, *, sha256: str, raw_size: int, page_size: int | None = None
) -> FrameLayout:
    """``read_layout``, which must agree with what the index records of the snapshot: its SHA-256 (when
    known, "" takes the object's own), its size and, when given, its page size."""
    layout = read_layout(store, key, size)
    if sha256 and layout.sha256 != sha256:
        raise ChecksumMismatchError.index_disagrees(key, f"SHA-256 {layout.sha256}", f"SHA-256 {sha256}")
    if layout.raw_size != raw_size or page_size not in (None, layout.page_size):
        raise ChecksumMismatchError(
            f"verify {key}: its frame table holds {layout.raw_size} bytes in pages of {layout.page_size}, "
            f"recorded {raw_size} in pages of {page_size or layout.page_size}"
        )
    return layout


def read_frames(store: ObjectStore, key: str, frames: Sequence[Frame]) -> bytes:
    """The compressed bytes of consecutive ``frames``, in one ranged read."""
    start = frames[0].offset
    length = frames[-1].offset + frames[-1].size - start
    return _read_range(store, key, start, length)


def decode_frame(data: bytes | memoryview, frame: Frame, name: str, *, check_digest: bool = True) -> bytes:
    """Frame ``frame``'s raw bytes from its compressed ``data``: its size always checked (and zstd's own
    checksum), its SHA-256 when ``check_digest`` (a restore checks the whole database's instead)."""
    try:
        raw = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"decompress {name}: frame {frame.index} is corrupt ({exc})") from exc
    if len(raw) != frame.raw_size:
        raise ChecksumMismatchError(
            f"verify {name}: frame {frame.index} decompressed to {len(raw)} bytes, expected {frame.raw_size}"
        )
    if check_digest and hashlib.sha256(raw).digest() != frame.sha256:
        raise ChecksumMismatchError(f"verify {name}: frame {frame.index} does not match its SHA-256")
    return raw


def _read_range(store: ObjectStore, key: str, start: int, length: int) -> bytes:
    with store.open(key, start=start, length=length) as stream:
        data = read_all(stream, length)
    if len(data) != length:
        raise CorruptObjectError(
            f"verify {key}: read {len(data)} bytes at {start}, expected {length}: the object is truncated"
        )
    return data


def read_all(stream: ReadStream, length: int) -> bytes:
    """Up to ``length`` bytes of ``stream`` (fewer only where it ends)."""
    parts, got = [], 0
    while got < length and (part := stream.read(length - got)):
        parts.append(part)
        got += len(part)
    return b"".join(parts)
