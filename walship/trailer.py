"""The SHA-256 a streamed snapshot carries at its end, in a zstd skippable frame.

A snapshot streamed straight from the database knows its checksum only when
its last byte has been read, after its upload began (S3 takes metadata when
an upload starts). The checksum goes at the end of the object instead: a
skippable frame (magic ``0x184D2A57``, size 36, ``wsha`` and the 32 bytes of
the digest), which ``zstd -d`` and every zstd decoder pass over, so the object
still decompresses to the database with plain tools. Restore reads it as the
stream ends and compares it with what the bytes hashed to and with what the
index recorded.
"""

import struct
from typing import Protocol

from walship.errors import CorruptObjectError

__all__ = ["TRAILER_SIZE", "TailReader", "TailWriter", "format_trailer", "parse_trailer"]

_MAGIC = 0x184D2A57  # one of zstd's sixteen skippable-frame magics (0x184D2A50-5F)
_TAG = b"wsha"
_HEADER = struct.Struct("<II")
_DIGEST_SIZE = 32
TRAILER_SIZE = _HEADER.size + len(_TAG) + _DIGEST_SIZE


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


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Tail:
    """The last ``TRAILER_SIZE`` bytes of everything passed through."""

    def __init__(self) -> None:
        self._tail = b""

    def _keep(self, data: bytes) -> None:
        view = memoryview(data)
        if len(view) >= TRAILER_SIZE:
            self._tail = bytes(view[-TRAILER_SIZE:])
        elif view:
            self._tail = (self._tail + bytes(view))[-TRAILER_SIZE:]

    def sha256(self, name: str) -> str:
        return parse_trailer(self._tail, name)


class TailReader(_Tail):
    """A reader that remembers the last bytes it returned: the trailer, once the source is exhausted."""

    def __init__(self, source: _Readable) -> None:
        super().__init__()
        self._source = source

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self._keep(data)
        return data


class TailWriter(_Tail):
    """A writer that remembers the last bytes written through it to ``target``."""

    def __init__(self, target: _Writable) -> None:
        super().__init__()
        self._target = target

    def write(self, data: bytes, /) -> int:
        self._keep(data)
        return self._target.write(data)

    def flush(self) -> None:
        pass
