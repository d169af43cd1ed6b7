"""The database at a point: each page's newest image from the segments up to it, else the snapshot's.

The segments are applied exactly as a restore applies them (``walship.chain.
apply_segments``: the chain, every frame's checksum, a resync's whole-state
digest), only not to a file: to an overlay that keeps each page's last
image in a scratch file (``walship.standby.Overlay``) and reads the rest
from the snapshot's frames. So a query and a restore of one point read the
same bytes, and memory stays bounded however long the backlog.
"""

import tempfile
import threading
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

from walship.chain import apply_segments
from walship.envelope import Keyring
from walship.errors import CorruptObjectError
from walship.models import SnapshotInfo, WalPosition
from walship.query._frames import SnapshotFrames
from walship.sqlite import HEADER_SIZE, parse_header
from walship.standby import Overlay
from walship.storage import ObjectStore

__all__ = ["PointPages"]

# Bytes 18 and 19 of the header, the write and read format versions: 1 is a rollback journal, 2 WAL.
_FORMAT_VERSIONS = slice(18, 20)
_ROLLBACK_JOURNAL = b"\1\1"


class _FlooredOverlay(Overlay):
    """An overlay that remembers the fewest pages the database had since the snapshot: a page above that which
    no segment wrote since reads as zeros, as the hole a truncated and regrown file holds."""

    def __init__(self, page_size: int, scratch: BinaryIO, snapshot: SnapshotFrames, page_count: int) -> None:
        self.floor = page_count
        self._snapshot = snapshot
        super().__init__(page_size, scratch, self._below_floor, page_count)

    def truncate(self, size: int) -> int:
        self.floor = min(self.floor, size // self.page_size)
        return super().truncate(size)

    def image(self, number: int) -> bytes:
        return self._page(number)

    def _below_floor(self, number: int) -> bytes:
        return self._snapshot.page(number) if number <= self.floor else bytes(self.page_size)


class PointPages:
    """The database file a restore of a point would write, served page by page, its header saying no WAL."""

    def __init__(
        self,
        store: ObjectStore,
        snapshot: SnapshotInfo,
        frames: SnapshotFrames,
        *,
        until_sequence: int | None,
        until_time: datetime | None,
        scratch: Path,
        keys: Keyring | None,
    ) -> None:
        self.frames, self.page_size = frames, snapshot.page_size
        # Closed by ``close``; the caller's ``with`` reaches it.
        self._scratch = cast(BinaryIO, tempfile.TemporaryFile(dir=scratch))  # noqa: SIM115
        self._overlay = _FlooredOverlay(snapshot.page_size, self._scratch, frames, snapshot.page_count)
        try:
            applied, _ = apply_segments(
                store,
                cast(BinaryIO, self._overlay),
                snapshot.generation,
                snapshot.sequence,
                until_sequence=until_sequence,
                until_time=until_time,
                scratch=scratch,
                keys=keys,
            )
            self.segments_applied = len(applied)
            self.position = WalPosition(
                generation=snapshot.generation, sequence=applied[-1].sequence if applied else snapshot.sequence
            )
            self.page_count = applied[-1].db_size_pages if applied else snapshot.page_count
            self._check_header(applied[-1].key if applied else snapshot.key)
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.page_count * self.page_size

    def close(self) -> None:
        self._scratch.close()

    def page(self, number: int) -> bytes:
        """Page ``number`` (1-based) at the point; page 1 says rollback journal, so SQLite looks for no WAL."""
        with self._lock:
            image = self._overlay.image(number)
        if number == 1:
            image = image[: _FORMAT_VERSIONS.start] + _ROLLBACK_JOURNAL + image[_FORMAT_VERSIONS.stop :]
        return image

    def read(self, offset: int, amount: int) -> bytes:
        """``amount`` bytes from ``offset``, fewer past the end of the database."""
        end = min(offset + amount, self.size)
        out = bytearray()
        while offset < end:
            number, within = divmod(offset, self.page_size)
            take = min(self.page_size - within, end - offset)
            out += self.page(number + 1)[within : within + take]
            offset += take
        return bytes(out)

    def _check_header(self, last_key: str) -> None:
        """The page size and count the header says are those recorded, as a restore checks its file."""
        header = parse_header(self._overlay.image(1)[:HEADER_SIZE], Path(last_key))
        if self._overlay.page_count != self.page_count or (header.page_size, header.page_count) != (
            self.page_size,
            self.page_count,
        ):
            raise CorruptObjectError(
                f"verify {last_key}: the point holds {header.page_count} pages of {header.page_size} bytes, "
                f"recorded {self.page_count} of {self.page_size}"
            )
