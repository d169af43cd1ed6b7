"""The pages a WAL segment leaves behind: each page's last image, checked frame by frame on the way in.

A segment holds every frame of its transactions; a standby needs only the
last image of each page that is still inside the database once the segment's
last commit is applied. ``walship.segment.apply_wal`` checks the segment
(salts, the checksum chain, frame and commit counts) while it writes each
frame into a file-like target; here the target keeps the images in a scratch
file and remembers where each page's last one is, so memory holds a number per
page, never the pages.
"""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from walship.segment import WalSegment, apply_wal

__all__ = ["SegmentPages", "segment_pages"]


class SegmentPages:
    """What a segment left: its page count, and each page's last image in page order (``pages``)."""

    def __init__(self, page_size: int, scratch: BinaryIO) -> None:
        self.page_size, self.page_count = page_size, 0
        self._scratch, self._at, self._where = scratch, 0, dict[int, int]()
        self._highest = 0  # no page above this is kept: a commit that does not shrink the file costs nothing
        # Where the next image goes, and whether a read moved the file since (a seek per write was a tenth
        # of a catch-up's time).
        self._end, self._moved = 0, True

    def pages(self) -> Iterator[tuple[int, bytes]]:
        for number in sorted(self._where):
            yield number, self._read_image(number)

    def _read_image(self, number: int) -> bytes:
        self._moved = True
        self._scratch.seek(self._where[number])
        return self._scratch.read(self.page_size)

    def __len__(self) -> int:
        return len(self._where)

    # The part of a writable file apply_wal uses.
    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = offset
        return offset

    def write(self, page: bytes) -> int:
        number, rest = divmod(self._at, self.page_size)
        if rest or len(page) != self.page_size:
            raise ValueError("a segment writes whole pages")
        if self._moved:
            self._scratch.seek(self._end)
            self._moved = False
        self._where[number + 1] = self._end
        self._highest = max(self._highest, number + 1)
        self._scratch.write(page)
        self._end += len(page)
        return len(page)

    def truncate(self, size: int) -> int:
        """Every commit cuts the file to its size; only a shrink below a kept page drops pages."""
        self.page_count = size // self.page_size
        if self._highest > self.page_count:
            for number in [n for n in self._where if n > self.page_count]:
                del self._where[number]
            self._highest = self.page_count
        return size


@contextlib.contextmanager
def segment_pages(raw_path: Path, segment: WalSegment, scratch: Path) -> Iterator[SegmentPages]:
    """The pages of the WAL segment whose raw body (downloaded, its checksum verified) is ``raw_path``."""
    with tempfile.TemporaryFile(dir=scratch) as kept:
        pages = SegmentPages(segment.page_size, cast(BinaryIO, kept))
        apply_wal(raw_path, segment, cast(BinaryIO, pages))
        yield pages
