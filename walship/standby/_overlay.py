"""A database's state with a resync segment's pages laid over it, read as one file, so the resync is proven first.

A resync segment records the digest of the whole state it produces. A
restore checks it on the file it wrote; a standby must not take pages it
cannot prove, so the check reads this overlay (the standby's settled file,
and the segment's pages kept in a scratch file) before a single page is
applied.
"""

from collections.abc import Callable
from typing import BinaryIO

from walship.standby._pages import SegmentPages

__all__ = ["Overlay"]


class Overlay(SegmentPages):
    """``SegmentPages`` that also reads: each page from the pages written, else ``base(number)``."""

    def __init__(self, page_size: int, scratch: BinaryIO, base: Callable[[int], bytes], base_pages: int) -> None:
        super().__init__(page_size, scratch)
        self._base = base
        self.page_count = base_pages

    def read(self, size: int) -> bytes:
        first, rest = divmod(self._at, self.page_size)
        if rest or size % self.page_size:
            raise ValueError("the overlay reads whole pages")
        out = bytearray()
        for number in range(first + 1, min(first + size // self.page_size, self.page_count) + 1):
            out += self._page(number)
        self._at += len(out)
        return bytes(out)

    def flush(self) -> None:
        pass

    def _page(self, number: int) -> bytes:
        if self.holds(number):
            return self._read_image(number)
        return self._base(number)
