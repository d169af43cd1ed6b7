"""Page digests: what a page holds, in 16 bytes, and what a whole database state holds, in one.

BLAKE2b cut to 128 bits: in the standard library (no new dependency), about
1.2 GB/s per core here, and a collision between two different pages is out of
reach (2^-64 even across 2^32 pages), which matters because an unchanged
digest is the only reason a resync leaves a page out. A 64-bit hash would be
faster still, but its margin is thin at the scale of a large fleet.
"""

import functools
import hashlib
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "DIGEST_SIZE",
    "FrameDigester",
    "PageChanges",
    "StateHasher",
    "digest_blocks",
    "digest_file",
    "page_digest",
    "state_digest",
    "zero_digest",
]

DIGEST_SIZE = 16
# "WAL File Format": a 32-byte header, then frames of a 24-byte header and one page.
_FRAME_HEADER_SIZE = 24
_READ_BYTES = 1 << 20


def page_digest(page: bytes | bytearray | memoryview) -> bytes:
    return hashlib.blake2b(page, digest_size=DIGEST_SIZE).digest()


@functools.lru_cache(maxsize=8)
def zero_digest(page_size: int) -> bytes:
    """The digest of a page never written: a hole in the file reads as zeros."""
    return page_digest(bytes(page_size))


def state_digest(page_size: int, digests: bytes | bytearray | memoryview) -> str:
    """One digest of a whole database state: its page size, page count and every page's digest in order."""
    hasher = StateHasher(page_size, len(digests) // DIGEST_SIZE)
    hasher.update(digests)
    return hasher.hexdigest()


class StateHasher:
    """``state_digest`` fed page digest by page digest, so a whole database's digests are never held at once."""

    def __init__(self, page_size: int, page_count: int) -> None:
        self._hash = hashlib.blake2b(digest_size=32, person=b"walship-state")
        self._hash.update(page_size.to_bytes(4, "big"))
        self._hash.update(page_count.to_bytes(8, "big"))

    def update(self, digests: bytes | bytearray | memoryview) -> None:
        self._hash.update(digests)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def digest_blocks(blocks: Iterable[bytes | bytearray | memoryview], page_size: int) -> Iterator[bytes]:
    """Every page's digest, in order, a block's worth at a time, from blocks of whole pages."""
    for block in blocks:
        view = memoryview(block)
        yield b"".join(page_digest(view[at : at + page_size]) for at in range(0, len(view) - page_size + 1, page_size))


def digest_file(path: Path, page_size: int) -> Iterator[bytes]:
    """Every page's digest of a database file (a short last page counts as zero-padded, as SQLite reads it)."""
    per_read = max(1, _READ_BYTES // page_size) * page_size

    def blocks() -> Iterator[bytes]:
        with path.open("rb") as source:
            while block := source.read(per_read):
                if len(block) % page_size:
                    block += bytes(page_size - len(block) % page_size)
                yield block

    return digest_blocks(blocks(), page_size)


class PageChanges(NamedTuple):
    """What one captured segment does to the database's pages.

    Replaying it: cut the state to ``low_water`` pages (the smallest size any
    of its commits left), write ``digests``, then set the page count to
    ``page_count``; pages in between that nothing wrote are holes (zeros),
    exactly as a restore that truncates at each commit leaves them.
    """

    page_count: int
    low_water: int
    digests: dict[int, bytes]


class FrameDigester:
    """Digests the pages of WAL frames fed to it in arbitrary chunks (whole committed transactions).

    A page is digested once per segment, in its newest image: a busy page is
    rewritten by most transactions (the shipping benchmark's segments held
    about 7 frames a transaction, most of them the same few pages), and
    digesting every frame took a quarter of the shipper's CPU. Newest images
    wait in memory up to ``PENDING_BYTES``; past that they are digested, so a
    large backlog costs no more memory than a small one.
    """

    PENDING_BYTES = 2 << 20

    def __init__(self, page_size: int) -> None:
        self._page_size = page_size
        self._frame_size = _FRAME_HEADER_SIZE + page_size
        # Page number and size after commit, then the rest of the frame skipped.
        self._headers = struct.Struct(f">II{self._frame_size - 8}x")
        self._partial = bytearray()
        self._digests: dict[int, bytes] = {}
        self._pending: dict[int, bytes] = {}  # page -> its newest image, not digested yet
        self._page_count = 0
        self._low_water: int | None = None
        self._max_page = 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        data: bytes | bytearray | memoryview = chunk
        if self._partial:
            self._partial += chunk
            data = self._partial
        view = memoryview(data)
        frame = self._frame_size
        whole = len(view) - len(view) % frame
        # Frame headers are read as a column (struct walks the frames in C);
        # an image is copied only once it is a page's newest in this chunk.
        newest: dict[int, int] = {}  # page -> offset of its newest frame in ``view``
        at = 0
        for page, size_after in self._headers.iter_unpack(view[:whole]):
            newest[page] = at
            at += frame
            self._max_page = max(self._max_page, page)
            if size_after:  # a commit frame: the database has this many pages now
                self._page_count = size_after
                if self._low_water is None or size_after < self._low_water:
                    self._low_water = size_after
                if self._max_page > size_after:  # it shrank: what lay past its end is gone
                    self._hold(view, newest)
                    newest = {}
                    self._digests = {p: d for p, d in self._digests.items() if p <= size_after}
                    self._pending = {p: d for p, d in self._pending.items() if p <= size_after}
                    self._max_page = max(max(self._digests, default=0), max(self._pending, default=0))
        self._hold(view, newest)
        rest = bytes(view[whole:])
        view.release()
        self._partial = bytearray(rest)
        if len(self._pending) * self._page_size > self.PENDING_BYTES:
            self._settle()

    def _hold(self, view: memoryview, newest: dict[int, int]) -> None:
        for page, at in newest.items():
            self._pending[page] = bytes(view[at + _FRAME_HEADER_SIZE : at + self._frame_size])

    def changes(self) -> PageChanges:
        if self._partial:
            raise ValueError("the WAL bytes digested end inside a frame")
        self._settle()
        low = self._page_count if self._low_water is None else self._low_water
        return PageChanges(self._page_count, low, dict(self._digests))

    def _settle(self) -> None:
        self._digests.update((page, page_digest(image)) for page, image in self._pending.items())
        self._pending.clear()
