"""A WAL truncated or restarted by the application while walship reads it is a reset in progress, not damage.

Between reading the WAL's header and scanning its frames, the application's
TRUNCATE checkpoint may empty the file (walship's pin lets it once every
frame is captured). The scan must report a reset in progress, which a sync
waits out, never a corrupt WAL, which would end the run. Real SQLite files;
the truncation is placed at the one instant the race needs.
"""

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from walship.errors import CorruptObjectError, WalIndexUnsettledError
from walship.sqlite import WAL_HEADER_SIZE, WalCapture, WalHeader


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    database = tmp_path / "app.db"
    app = sqlite3.connect(database, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("CREATE TABLE t (x)")
    for n in range(20):
        app.execute("INSERT INTO t VALUES (?)", (n,))
    yield database, app
    app.close()


class _TruncatedAfterHeader(WalCapture):
    """The header and the index's end are read, then the application's TRUNCATE checkpoint lands."""

    def __init__(self, database: Path, app: sqlite3.Connection) -> None:
        super().__init__(database)
        self._app, self._armed = app, True

    def published_end(self, header: WalHeader) -> int:
        end = super().published_end(header)
        if self._armed:
            self._armed = False
            busy, _, _ = self._app.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0
            assert self.wal_path.stat().st_size == 0
        return end


def test_a_wal_truncated_between_header_and_scan_is_a_reset_in_progress(
    live: tuple[Path, sqlite3.Connection],
) -> None:
    database, app = live
    capture = _TruncatedAfterHeader(database, app)
    try:
        with pytest.raises(WalIndexUnsettledError, match="reset"):
            capture.scan(WAL_HEADER_SIZE, None)
    finally:
        capture.close()


def test_a_damaged_wal_header_is_still_corrupt(live: tuple[Path, sqlite3.Connection]) -> None:
    database, _ = live
    capture = WalCapture(database)
    try:
        wal = Path(f"{database}-wal")
        data = bytearray(wal.read_bytes())
        data[0] ^= 0xFF  # the magic: no reset writes this
        wal.write_bytes(bytes(data))
        with pytest.raises(CorruptObjectError):
            capture.scan(WAL_HEADER_SIZE, None)
    finally:
        capture.close()
