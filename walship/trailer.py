"""What an object carries at its end, in zstd skippable frames: a snapshot's SHA-256, a segment's description.

A snapshot streamed straight from the database knows its checksum only when
its last byte has been read, after its upload began (S3 takes metadata when
an upload starts). The checksum goes at the end of the object instead: a
skippable frame (magic ``0x184D2A57``, size 36, ``wsha`` and the 32 bytes of
the digest), which ``zstd -d`` and every zstd decoder pass over, so the object
still decompresses to the database with plain tools. Restore reads it as the
stream ends and compares it with what the bytes hashed to and with what the
index recorded.

A segment carries its whole description the same way (``format_description``,
read by ``walship.segment``), so that reading it needs nothing but the object.
"""

import struct
from typing import Protocol

from walship.errors import CorruptObjectError

__all__ = [
    "DESCRIPTION_LIMIT",
    "TRAILER_SIZE",
    "TailReader",
    "TailWriter",
    "format_description",
    "format_trailer",
    "parse_description",
    "parse_trailer",
]

_MAGIC = 0x184D2A57  # one of zstd's sixteen skippable-frame magics (0x184D2A50-5F)
_TAG = b"wsha"
_HEADER = struct.Struct("<II")
_DIGEST_SIZE = 32
TRAILER_SIZE = _HEADER.size + len(_TAG) + _DIGEST_SIZE
# A description frame: the header, a 4-byte tag, the body, and the body's length last, so that a
# reader holding the object's end finds where the frame begins.
_LENGTH = struct.Struct("<I")
_DESCRIPTION_OVERHEAD = _HEADER.size + 4 + _LENGTH.size
DESCRIPTION_LIMIT = 4096  # the most of an object's end a reader keeps to find its description


def format_trailer(sha256: str) -> bytes:
    """The skippable frame that records ``sha256`` (hex)."""
    digest = bytes.fromhex(sha256)
    if len(digest) != _DIGEST_SIZE:
        raise ValueError(f"a SHA-256 has {_DIGEST_SIZE} bytes, not {len(digest)}")
    return _HEADER.pack(_MAGIC, len(_TAG) + _DIGEST_SIZE) + _TAG + digest


def parse_trailer(tail: bytes, name: str) -> str:
    """The hex SHA-256 that the object's last ``TRAILER_SIZE`` bytes record; ``CorruptObjectError`` if none."""
    if len(tail) == TRAILER_SIZE:
        magic, size = _HEADER.unpack_from(tail)
        if magic == _MAGIC and size == len(_TAG) + _DIGEST_SIZE and tail[_HEADER.size :].startswith(_TAG):
            return tail[_HEADER.size + len(_TAG) :].hex()
    raise CorruptObjectError(
        f"verify {name}: the object does not end with its SHA-256 (truncated or corrupt): take a new snapshot"
    )


def format_description(tag: bytes, body: bytes) -> bytes:
    """A skippable frame carrying ``body`` under a 4-byte ``tag``, findable from the object's end."""
    if len(tag) != 4 or len(body) + _DESCRIPTION_OVERHEAD > DESCRIPTION_LIMIT:
        raise ValueError(f"a description needs a 4-byte tag and at most {DESCRIPTION_LIMIT} bytes in all")
    size = len(tag) + len(body) + _LENGTH.size
    return _HEADER.pack(_MAGIC, size) + tag + body + _LENGTH.pack(len(body))


def parse_description(tail: bytes, tag: bytes) -> bytes | None:
    """The body of the ``tag`` description frame that ``tail`` (an object's last bytes) ends with; None if none."""
    if len(tail) < _DESCRIPTION_OVERHEAD:
        return None
    (length,) = _LENGTH.unpack_from(tail, len(tail) - _LENGTH.size)
    start = len(tail) - _DESCRIPTION_OVERHEAD - length
    if start < 0:
        return None
    magic, size = _HEADER.unpack_from(tail, start)
    body_at = start + _HEADER.size + len(tag)
    if magic != _MAGIC or size != len(tag) + length + _LENGTH.size or tail[start + _HEADER.size : body_at] != tag:
        return None
    return tail[body_at : body_at + length]


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Tail:
    """The last ``keep`` bytes of everything passed through."""

    def __init__(self, keep: int) -> None:
        self._tail = b""
        self._size = keep

    def _keep(self, data: bytes) -> None:
        view = memoryview(data)
        if len(view) >= self._size:
            self._tail = bytes(view[-self._size :])
        elif view:
            self._tail = (self._tail + bytes(view))[-self._size :]

    @property
    def tail(self) -> bytes:
        return self._tail

    def sha256(self, name: str) -> str:
        return parse_trailer(self._tail[-TRAILER_SIZE:], name)


class TailReader(_Tail):
    """A reader that remembers the last bytes it returned: the trailer, once the source is exhausted."""

    def __init__(self, source: _Readable, keep: int = TRAILER_SIZE) -> None:
        super().__init__(keep)
        self._source = source

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self._keep(data)
        return data


class TailWriter(_Tail):
    """A writer that remembers the last bytes written through it to ``target``."""

    def __init__(self, target: _Writable, keep: int = TRAILER_SIZE) -> None:
        super().__init__(keep)
        self._target = target

    def write(self, data: bytes, /) -> int:
        self._keep(data)
        return self._target.write(data)

    def flush(self) -> None:
        pass
