"""A run that ends claims its WAL will restart before it grows; a reader that keeps it from restarting voids that.

A run's last checkpoint backfills every frame it captured, so a successor
may continue across exactly one WAL restart. But a reader whose snapshot is
the WAL's end keeps the next writer from restarting it: commits then go on in
the same WAL, and once that reader ends they can be backfilled and the WAL
restarted with them in the database file alone. A successor that took that
restart for the one after the last run lost those commits. Real SQLite
readers and writers, the CLI as operators run it.
"""

import sqlite3
from pathlib import Path

import apsw

from tests.helpers import walship
from walship.sqlite import WalCapture


def _insert(connection: sqlite3.Connection | apsw.Connection, rows: int, tag: str) -> None:
    for _ in range(rows):
        connection.execute("INSERT INTO t (v) VALUES (?)", (tag * 500,))


def test_commits_behind_a_reader_that_held_the_wal_are_shipped(tmp_path: Path) -> None:
    database, replica = tmp_path / "app.db", f"file://{tmp_path / 'replica'}"
    app = sqlite3.connect(database, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")  # the test says when the application checkpoints
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    _insert(app, 50, "a")
    assert walship("ship", str(database), "--replica", replica, "--once").returncode == 0
    _insert(app, 50, "b")
    reader = sqlite3.connect(database, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchall()  # its snapshot: the WAL's end
    ended = walship("ship", str(database), "--replica", replica, "--once")
    assert ended.returncode == 0, ended.stderr
    _insert(app, 30, "c")  # the reader keeps the WAL from restarting: these go on in the same WAL
    reader.execute("COMMIT")
    reader.close()
    (busy, log, backfilled), *_ = app.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    assert (busy, log) == (0, backfilled)
    _insert(app, 10, "d")  # the WAL restarts here, once
    resumed = walship("ship", str(database), "--replica", replica, "--once")
    assert resumed.returncode == 0, resumed.stderr

    restored = tmp_path / "restored.db"
    done = walship("restore", "--replica", replica, "--output", str(restored))
    assert done.returncode == 0, done.stderr
    counts = "SELECT substr(v, 1, 1), count(*) FROM t GROUP BY 1 ORDER BY 1"
    assert sqlite3.connect(restored).execute(counts).fetchall() == app.execute(counts).fetchall()


def test_ends_at_holds_only_when_no_reader_can_keep_the_wal_from_restarting(tmp_path: Path) -> None:
    """``WalCapture.ends_at`` against real readers: held back by one whose snapshot is the WAL's end, allowed when
    none is there, and true once the WAL restarted. The application is apsw's SQLite, as walship's own connections
    are: two SQLite libraries in one process do not see each other's locks."""
    database = tmp_path / "app.db"
    app = apsw.Connection(str(database))
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")
    app.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    _insert(app, 20, "a")
    reader = apsw.Connection(str(database))
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchall()
    capture = WalCapture(database)
    try:
        assert capture.checkpoint_passive(), "a reader at the WAL's end lets every frame be backfilled"
        assert capture.move_pin(lambda _: True)
        assert capture.pin_lets_restart
        assert capture.pin is not None
        held = capture.pin
        assert not capture.ends_at(held), "the reader keeps the next writer from restarting the WAL"
        reader.execute("COMMIT")
        assert capture.ends_at(held)
        _insert(app, 1, "b")  # the WAL restarts here
        restarted = capture.wal_index()
        assert restarted is not None
        assert restarted.salt1 == (held.salt1 + 1) & 0xFFFFFFFF
        assert capture.ends_at(held)
    finally:
        capture.close()
        reader.close()
        app.close()
