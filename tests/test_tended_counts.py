"""What the pin's tending captures between syncs is reported by the next sync, so a run's counts add up.

The application may restart the WAL once every frame is captured, then write
and backfill the new WAL entirely by itself; tending then captures those
frames before the next sync does. A run counts captures from sync results,
so those segments must be in one. Real SQLite, a real spool.
"""

import sqlite3
from pathlib import Path

from walship.ship import ShipConfig, Shipper, SyncResult
from walship.spool import Spool, default_spool_dir


def _spooled_segments(spool: Spool) -> int:
    return sum(1 for entry in spool.pending() if entry.kind == "segment")


def test_segments_tending_captured_are_in_the_next_sync(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    app = sqlite3.connect(database, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t (x)")
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id="app.db"))
    results: list[SyncResult] = []
    try:
        results.append(shipper.open())
        for n in range(5):
            app.execute("INSERT INTO t VALUES (?)", (n,))
        results.append(shipper.sync())  # every frame captured: the pin lets the WAL restart
        app.execute("PRAGMA wal_checkpoint(RESTART)")
        for n in range(5):
            app.execute("INSERT INTO t VALUES (?)", (n,))
        app.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the new WAL backfilled entirely by the application
        for _ in range(3):
            shipper.tend()
        tended = _spooled_segments(spool)
        results.append(shipper.sync())
        assert tended > sum(r.segments for r in results[:2]), "tending captured nothing: the case did not happen"
        assert sum(r.segments for r in results) == _spooled_segments(spool)
    finally:
        shipper.close()
        spool.close()
        app.close()
