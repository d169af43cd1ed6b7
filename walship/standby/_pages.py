"""The pages a WAL segment leaves behind: each page's last image, checked frame by frame on the way in.

A segment holds every frame of its transactions; a standby needs only the
last image of each page that is still inside the database once the segment's
last commit is applied. ``walship.segment.wal_runs`` checks the segment
(salts, the checksum chain, frame and commit counts) a run of frames at a
time. Here each page's newest image is kept in memory, up to a bound; past
it, the images go to a scratch file, each over its page's older image there.
So a busy page is rewritten in memory, memory holds a bounded set of images
and a number per page, and the scratch file each page once.
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

from walship.segment import WalSegment, wal_runs
from walship.sqlite import FrameRun

__all__ = ["SegmentPages", "segment_pages"]

# The newest images of this many bytes of pages are kept in memory: a busy page is rewritten there, not on disk.
_HOT_BYTES = 32 << 20


class SegmentPages:
    """What a segment left: its page count, and each page's last image in page order (``pages``)."""

    def __init__(self, page_size: int, scratch: BinaryIO) -> None:
        """``scratch`` is a file of its own (a temporary one): it is read and written by position."""
        self.page_size, self.page_count = page_size, 0
        self._scratch, self._at = scratch.fileno(), 0
        self._hot = dict[int, bytes]()  # newest images, in memory
        self._where = dict[int, int]()  # where the scratch file holds a page's image (older, if it is also hot)
        self._end = 0  # the scratch file's length
        self._hot_only = 0  # hot pages the scratch file does not hold
        self._hot_pages = max(1, _HOT_BYTES // page_size)
        self._highest = 0  # no page above this is kept: a commit that does not shrink the file costs nothing

    def pages(self) -> Iterator[tuple[int, bytes]]:
        for number in sorted(self._where.keys() | self._hot.keys()):
            yield number, self._read_image(number)

    def holds(self, number: int) -> bool:
        return number in self._hot or number in self._where

    def _read_image(self, number: int) -> bytes:
        image = self._hot.get(number)
        return image if image is not None else os.pread(self._scratch, self.page_size, self._where[number])

    def __len__(self) -> int:
        return len(self._where) + self._hot_only

    def take(self, run: FrameRun) -> None:
        """Keep a run of a segment's frames, applied in order: each page's last image, the page count it left."""
        images = run.last_images()
        if images.smallest is not None:
            self._drop_above(images.smallest)
        if images.final is not None:
            self.page_count = images.final
        for number, index in images.last.items():
            self._keep(number, run.page(index))
        self._highest = max(self._highest, max(images.last, default=0))

    # The part of a writable file a resync's pages are applied to (``walship.standby.Overlay``).
    def seek(self, offset: int, whence: int = 0) -> int:
        self._at = offset
        return offset

    def write(self, page: bytes) -> int:
        number, rest = divmod(self._at, self.page_size)
        if rest or len(page) != self.page_size:
            raise ValueError("a segment writes whole pages")
        self._keep(number + 1, page)
        self._highest = max(self._highest, number + 1)
        return len(page)

    def truncate(self, size: int) -> int:
        """Every commit cuts the file to its size; only a shrink below a kept page drops pages."""
        self.page_count = size // self.page_size
        self._drop_above(self.page_count)
        return size

    def _keep(self, number: int, image: bytes | memoryview) -> None:
        if number not in self._hot and number not in self._where:
            self._hot_only += 1
        self._hot[number] = bytes(image)
        if len(self._hot) >= self._hot_pages:
            self._spill()

    def _spill(self) -> None:
        """Write the images in memory to the scratch file, each over its page's older image or after the rest."""
        appended = bytearray()
        for number, image in self._hot.items():
            at = self._where.get(number)
            if at is None:
                self._where[number] = self._end + len(appended)
                appended += image
            else:
                os.pwrite(self._scratch, image, at)
        os.pwrite(self._scratch, appended, self._end)
        self._end += len(appended)
        self._hot.clear()
        self._hot_only = 0

    def _drop_above(self, count: int) -> None:
        """Forget the pages past ``count``; nothing to look through unless a kept page is."""
        if self._highest <= count:
            return
        for pages in (self._hot, self._where):
            for number in [n for n in pages if n > count]:
                del pages[number]
        self._hot_only = sum(1 for n in self._hot if n not in self._where)
        self._highest = count


@contextlib.contextmanager
def segment_pages(raw_path: Path, segment: WalSegment, scratch: Path) -> Iterator[SegmentPages]:
    """The pages of the WAL segment whose raw body (downloaded, its checksum verified) is ``raw_path``."""
    with tempfile.TemporaryFile(dir=scratch) as kept:
        pages = SegmentPages(segment.page_size, cast(BinaryIO, kept))
        for run in wal_runs(raw_path, segment):
            pages.take(run)
        yield pages
