"""Writing SQLite's WAL index (the ``-shm`` file) the way SQLite's own writer does, for frames walship appended.

"WAL-index Format" (https://www.sqlite.org/walformat.html): the index is a run
of 32 KiB blocks. The first starts with two copies of a 48-byte header and the
checkpoint information (136 bytes); then every block holds a page-number array
(one 32-bit entry per frame) and a hash table of 8192 16-bit slots, each slot
naming an entry of that block's array, 1-based; 0 is empty. A page's first
slot is ``page * 383 % 8192``, collisions take the next slot. All in the host's
byte order but the salts, copied from the WAL header as they are.

Readers trust only frames up to the header's ``mxFrame``, so entries written
past it are invisible until the header says otherwise; the header is written
second copy first, and a reader takes it only when both copies agree and its
checksum holds (SQLite's ``walIndexWriteHdr`` / ``walIndexTryHdr``). Slots are
written with one aligned 16-bit store each (``memoryview`` item assignment),
as SQLite's ``AtomicStore``: a reader probing never meets half a slot.
"""

import mmap
import os
import struct
import sys
from dataclasses import dataclass, replace

from walship.errors import CorruptObjectError
from walship.sqlite import wal_checksum

__all__ = ["IndexHeader", "WalIndexWriter"]

_BLOCK = 32768
_HEADER_BYTES = 136
_NPAGE = 4096
_NPAGE_ONE = _NPAGE - _HEADER_BYTES // 4  # entries of the first block, after the header
_NSLOT = 2 * _NPAGE
_HASH_MULTIPLIER = 383
_VERSION = 3007000
# iVersion, unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage, aFrameCksum[2], aSalt (raw), aCksum[2].
_FIELDS = struct.Struct("=IIIBBHIIII8s")
_COPY = 48
_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


@dataclass(frozen=True)
class IndexHeader:
    """The WAL-index header's fields that say which state readers see."""

    change: int
    big_endian: bool  # the WAL's checksum byte order
    page_size: int
    max_frame: int
    page_count: int
    frame_checksum: tuple[int, int]  # the running checksum of frame ``max_frame``: the next frame's seed
    salts: bytes  # the WAL header's salts, 8 bytes as stored

    def encode(self) -> bytes:
        size = (self.page_size & 0xFF00) | (self.page_size >> 16)  # 65536 is stored as 1
        fields = _FIELDS.pack(
            _VERSION,
            0,
            self.change,
            1,
            int(self.big_endian),
            size,
            self.max_frame,
            self.page_count,
            *self.frame_checksum,
            self.salts,
        )
        return fields + struct.pack("=II", *wal_checksum(fields, 0, 0, _NATIVE_BIG_ENDIAN))

    def after(self, frames: int, page_count: int, checksum: tuple[int, int]) -> "IndexHeader":
        """This header once ``frames`` more frames, the last one committing ``page_count`` pages, are published."""
        return replace(
            self,
            change=(self.change + 1) & 0xFFFFFFFF,
            max_frame=self.max_frame + frames,
            page_count=page_count,
            frame_checksum=checksum,
        )


def _decode(copy: bytes) -> IndexHeader | None:
    version, _, change, init, big_endian, size, max_frame, pages, sum1, sum2, salts = _FIELDS.unpack_from(copy)
    stored = struct.unpack_from("=II", copy, _FIELDS.size)
    if version != _VERSION or not init or stored != wal_checksum(copy[: _FIELDS.size], 0, 0, _NATIVE_BIG_ENDIAN):
        return None
    page_size = (size & 0xFF00) | ((size & 0x0001) << 16)
    return IndexHeader(change, bool(big_endian), page_size, max_frame, pages, (sum1, sum2), salts)


def _block_of(frame: int) -> int:
    return (frame + _NPAGE - _NPAGE_ONE - 1) // _NPAGE


def _first_frame_before(block: int) -> int:
    """The frame number just before the block's first entry (``iZero`` in wal.c)."""
    return 0 if block == 0 else _NPAGE_ONE + (block - 1) * _NPAGE


class WalIndexWriter:
    """The WAL index of one database, written only while its WAL write lock is held.

    ``descriptor`` is an open descriptor of the ``-shm`` file that the caller
    keeps open as long as any SQLite connection of this process has the
    database open: closing a descriptor drops every POSIX lock the process
    holds on the file, SQLite's included.
    """

    def __init__(self, descriptor: int) -> None:
        self._fd = descriptor
        # Python's mmap keeps a duplicate of the descriptor and closes it with the mapping: so every mapping
        # lives until ``close``, which the caller calls once its connections are closed.
        self._maps: list[mmap.mmap] = []

    def close(self) -> None:
        for mapped in self._maps:
            mapped.close()
        self._maps = []

    def header(self) -> IndexHeader:
        """The header readers see now; under the write lock both copies agree."""
        data = os.pread(self._fd, 2 * _COPY, 0)
        decoded = _decode(data[:_COPY]) if len(data) == 2 * _COPY and data[:_COPY] == data[_COPY:] else None
        if decoded is None:
            raise CorruptObjectError("the standby's WAL index header is not whole under the write lock")
        return decoded

    def publish(self, old: IndexHeader, pages: list[int], new: IndexHeader) -> None:
        """Index ``pages`` (the page number of each frame after ``old.max_frame``), then publish ``new``."""
        last = old.max_frame + len(pages)
        with memoryview(self._mapping((_block_of(last) + 1) * _BLOCK)) as view:
            with view.cast("I") as words, view.cast("H") as slots:
                if old.max_frame:
                    _clear_past(words, slots, old.max_frame)
                for frame, page in enumerate(pages, start=old.max_frame + 1):
                    _append(words, slots, frame, page)
            encoded = new.encode()
            view[_COPY : 2 * _COPY] = encoded
            view[:_COPY] = encoded

    def _mapping(self, size: int) -> mmap.mmap:
        """A mapping of at least ``size`` bytes of the index, the file grown to hold them.

        Only a writer grows the index, and we hold the write lock. Grown by
        writing, not by truncating up: a full disk fails here, not as SIGBUS
        in a reader's mapping.
        """
        if self._maps and len(self._maps[-1]) >= size:
            return self._maps[-1]
        now = os.fstat(self._fd).st_size
        if now < size:
            os.pwrite(self._fd, bytes(size - now), now)
        self._maps.append(mmap.mmap(self._fd, size))
        return self._maps[-1]


def _clear_past(words: memoryview, slots: memoryview, max_frame: int) -> None:
    """Drop the entries a writer killed mid-transaction left past ``max_frame`` in its block (``walCleanupHash``).

    A later entry lies further along any probe run than the earlier ones it
    collided with, so clearing it never cuts a reader's way to a live entry.
    Blocks after this one are cleared whole when their first entry is written.
    """
    block = _block_of(max_frame)
    limit = max_frame - _first_frame_before(block)
    base = block * _NPAGE * 2 + (_HEADER_BYTES // 4 if block == 0 else 0)
    end = block * _NPAGE * 2 + _NPAGE
    if limit >= end - base or not words[base + limit]:
        return
    hashes = block * _NSLOT * 2 + _NSLOT
    for slot in range(hashes, hashes + _NSLOT):
        if slots[slot] > limit:
            slots[slot] = 0
    for entry in range(base + limit, end):
        words[entry] = 0


def _append(words: memoryview, slots: memoryview, frame: int, page: int) -> None:
    """Index frame ``frame`` as holding ``page`` (``walIndexAppend``)."""
    block = _block_of(frame)
    entry = frame - _first_frame_before(block)
    start = block * _NPAGE * 2  # in 32-bit words
    base = start + (_HEADER_BYTES // 4 if block == 0 else 0)
    hashes = block * _NSLOT * 2 + _NSLOT  # in 16-bit slots: the table fills the block's second half
    if entry == 1:
        for word in range(base, start + 2 * _NPAGE):
            words[word] = 0
    key = (page * _HASH_MULTIPLIER) & (_NSLOT - 1)
    collisions = entry
    while slots[hashes + key]:
        collisions -= 1
        if collisions < 0:
            raise CorruptObjectError("the standby's WAL index hash table is full: the index is damaged")
        key = (key + 1) & (_NSLOT - 1)
    words[base + ((entry - 1) & (_NPAGE - 1))] = page
    slots[hashes + key] = entry
