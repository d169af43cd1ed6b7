"""The pages a WAL segment leaves behind: each page's last image, checked frame by frame on the way in.

A segment holds every frame of its transactions; a standby needs only the
last image of each page that is still inside the database once the segment's
last commit is applied. ``walship.segment.wal_runs`` checks the segment
(salts, the checksum chain, frame and commit counts) a run of frames at a
time; here each page's newest image goes into a scratch file, over its older
one, and a page's entry says where it is: memory holds a number per page,
never the pages, and the scratch file each page once.
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

# Images go to the scratch file this many bytes at a time: a write call per page cost more than reading the segment.
_WRITE_BYTES = 1 << 20


class SegmentPages:
    """What a segment left: its page count, and each page's last image in page order (``pages``)."""

    def __init__(self, page_size: int, scratch: BinaryIO) -> None:
        """``scratch`` is a file of its own (a temporary one): it is read and written by position."""
        self.page_size, self.page_count = page_size, 0
        self._scratch, self._at, self._where = scratch.fileno(), 0, dict[int, int]()
        self._highest = 0  # no page above this is kept: a commit that does not shrink the file costs nothing
        # Where the next image goes in the scratch file, and images not yet written out.
        self._end, self._pending = 0, bytearray()

    def pages(self) -> Iterator[tuple[int, bytes]]:
        for number in sorted(self._where):
            yield number, self._read_image(number)

    def _read_image(self, number: int) -> bytes:
        self._flush()
        return os.pread(self._scratch, self.page_size, self._where[number])

    def __len__(self) -> int:
        return len(self._where)

    def take(self, run: FrameRun) -> None:
        """Keep a run of a segment's frames, applied in order: each page's last image, the page count it left."""
        images = run.last_images()
        if images.smallest is not None and self._highest > images.smallest:
            _drop_above(self._where, images.smallest)
            self._highest = images.smallest
        if images.final is not None:
            self.page_count = images.final
        for number, index in images.last.items():
            self._keep(number, run.page(index))
        self._highest = max(self._highest, max(images.last, default=0))
        if len(self._pending) >= _WRITE_BYTES:
            self._flush()

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
        if len(self._pending) >= _WRITE_BYTES:
            self._flush()
        return len(page)

    def _keep(self, number: int, image: bytes | memoryview) -> None:
        """Page ``number``'s newest image: over its older one, so the scratch file holds each page once."""
        at = self._where.get(number)
        if at is None:
            self._where[number] = self._end + len(self._pending)
            self._pending += image
        elif at >= self._end:
            self._pending[at - self._end : at - self._end + self.page_size] = image
        else:
            os.pwrite(self._scratch, image, at)

    def _flush(self) -> None:
        if not self._pending:
            return
        os.pwrite(self._scratch, self._pending, self._end)
        self._end += len(self._pending)
        self._pending = bytearray()

    def truncate(self, size: int) -> int:
        """Every commit cuts the file to its size; only a shrink below a kept page drops pages."""
        self.page_count = size // self.page_size
        if self._highest > self.page_count:
            _drop_above(self._where, self.page_count)
            self._highest = self.page_count
        return size


def _drop_above(pages: dict[int, int], count: int) -> None:
    for number in [n for n in pages if n > count]:
        del pages[number]


@contextlib.contextmanager
def segment_pages(raw_path: Path, segment: WalSegment, scratch: Path) -> Iterator[SegmentPages]:
    """The pages of the WAL segment whose raw body (downloaded, its checksum verified) is ``raw_path``."""
    with tempfile.TemporaryFile(dir=scratch) as kept:
        pages = SegmentPages(segment.page_size, cast(BinaryIO, kept))
        for run in wal_runs(raw_path, segment):
            pages.take(run)
        yield pages
