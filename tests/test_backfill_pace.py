"""Under steady writes a sync captures every window, but moves the pin (which lets SQLite's autocheckpoint
backfill and fsync inside a writer's commit) at most every ``ShipConfig.backfill_seconds``.
Real SQLite, a real spool."""

import sqlite3
from pathlib import Path

from walship.ship import ShipConfig, Shipper
from walship.spool import Spool, default_spool_dir


def _pins_after_syncs(tmp_path: Path, backfill_seconds: float) -> tuple[int, int]:
    """How many segments and how many distinct pins three syncs after three commits left."""
    database = tmp_path / "app.db"
    app = sqlite3.connect(database, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t (x)")
    app.execute("INSERT INTO t VALUES (0)")  # frames in the WAL: the first pin reads it
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id="app.db", backfill_seconds=backfill_seconds))
    try:
        shipper.open()
        shipper.sync()  # a shipper's first sync tends the WAL
        pins, segments = {shipper.capture.pin}, 0
        for n in range(3):
            app.execute("INSERT INTO t VALUES (?)", (n,))
            segments += shipper.sync().segments
            pins.add(shipper.capture.pin)
        return segments, len(pins)
    finally:
        shipper.close()
        spool.close()
        app.close()


def test_each_sync_moves_the_pin_by_default(tmp_path: Path) -> None:
    assert _pins_after_syncs(tmp_path, 0.0) == (3, 4)


def test_syncs_capture_but_keep_the_pin_within_backfill_seconds(tmp_path: Path) -> None:
    assert _pins_after_syncs(tmp_path, 3600.0) == (3, 1)
