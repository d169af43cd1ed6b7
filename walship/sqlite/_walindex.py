"""The WAL index (the ``-shm`` file), read the way SQLite's own readers read it: without locks.

"WAL-index Format" (https://www.sqlite.org/walformat.html): two copies of a
48-byte header, then the checkpoint information. In the header, ``isInit`` is
byte 12, ``mxFrame`` (frames published) byte 16 and the WAL's salts bytes 32-39,
copied from the WAL header as they are; ``nBackfill`` (frames already copied
into the database file) is the first word of the checkpoint information, byte
96. All but the salts are in the host's byte order.
"""

import struct
from typing import NamedTuple

__all__ = ["WAL_INDEX_READ_SIZE", "WalIndexState", "parse_wal_index"]

_HEADER_SIZE = 48
_BACKFILL_OFFSET = 96
WAL_INDEX_READ_SIZE = _BACKFILL_OFFSET + 4


class WalIndexState(NamedTuple):
    """What the WAL index says now: which WAL (its salts), how far it is published and backfilled."""

    salt1: int
    salt2: int
    max_frame: int
    backfilled: int

    @property
    def complete(self) -> bool:
        """Every published frame is in the database file too: the next writer may restart the WAL."""
        return self.backfilled == self.max_frame


def parse_wal_index(data: bytes) -> WalIndexState | None:
    """The state in ``data`` (the index's first bytes), or None while its two header copies disagree."""
    if len(data) < WAL_INDEX_READ_SIZE:
        return None
    first, second = data[:_HEADER_SIZE], data[_HEADER_SIZE : 2 * _HEADER_SIZE]
    if first != second or not first[12]:
        return None
    (max_frame,) = struct.unpack_from("=I", first, 16)
    salt1, salt2 = struct.unpack_from(">II", first, 32)
    (backfilled,) = struct.unpack_from("=I", data, _BACKFILL_OFFSET)
    return WalIndexState(salt1, salt2, max_frame, backfilled)
