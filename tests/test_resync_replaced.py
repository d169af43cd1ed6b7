"""Issue 21: a database replaced in place (same inode) while nobody watched starts a new generation.

``cat other.db > app.db`` keeps the inode, so only the content can tell that
the file now holds another database. The same database changed by SQLite in
the gap (writes, VACUUM) still continues its generation with a resync
(tests/test_resync.py).
"""

import shutil
import sqlite3
from pathlib import Path

import pytest

from bench.workload import content_digest, create_database
from tests.test_restore_cli import commit
from tests.test_ship import Running, _restore
from walship.index import current_snapshots
from walship.storage import ObjectStore, open_store


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(f"file://{tmp_path / 'replica'}")


def replace_in_place(database: Path, other: Path) -> None:
    """What ``cat other > database`` does, with the application stopped: same inode, other bytes."""
    inode = database.stat().st_ino
    with database.open("r+b") as target:
        target.truncate(0)
        target.write(other.read_bytes())
    assert database.stat().st_ino == inode


def ship_a_window(store: ObjectStore, database: Path, spool: Path) -> Running:
    running = Running(database, store, spool)
    commit(database, "shipped", 50)
    running.step()
    running.close()
    return running


def generations(store: ObjectStore) -> set[str]:
    return {snapshot.generation for snapshot in current_snapshots(store)}


def test_another_database_starts_a_new_generation(store: ObjectStore, database: Path, tmp_path: Path) -> None:
    first = ship_a_window(store, database, tmp_path / "spool")
    other = tmp_path / "other.db"
    create_database(other, 4 << 20, seed=12)
    replace_in_place(database, other)
    running = Running(database, store, tmp_path / "spool")
    assert running.opened.resync is None, running.opened.resync
    assert running.opened.new_generation is not None
    assert running.opened.reason is not None
    assert "the database file was replaced" in running.opened.reason, running.opened.reason
    running.close()
    assert generations(store) == {*first.generations, running.opened.new_generation}
    restored = tmp_path / "restored.db"
    _restore(store, restored)
    assert content_digest(restored) == content_digest(other)


def test_an_older_copy_from_before_a_migration(store: ObjectStore, database: Path, tmp_path: Path) -> None:
    """An older copy put back: the schema went backwards, which the same database never does."""
    older = tmp_path / "older.db"
    shutil.copyfile(database, older)
    connection = sqlite3.connect(database)
    connection.execute("CREATE TABLE migrated (id INTEGER PRIMARY KEY)")
    connection.commit()
    connection.close()
    ship_a_window(store, database, tmp_path / "spool")
    replace_in_place(database, older)
    running = Running(database, store, tmp_path / "spool")
    assert running.opened.new_generation is not None, running.opened.resync
    assert running.opened.reason is not None
    assert "the database file was replaced" in running.opened.reason, running.opened.reason
    running.close()
    restored = tmp_path / "restored.db"
    _restore(store, restored)
    assert content_digest(restored) == content_digest(older)


def test_the_same_database_rewritten_by_vacuum_resyncs(store: ObjectStore, database: Path, tmp_path: Path) -> None:
    """VACUUM rewrites nearly every page, but it is the same database: its generation goes on."""
    ship_a_window(store, database, tmp_path / "spool")
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("VACUUM")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    running = Running(database, store, tmp_path / "spool")
    resync = running.opened.resync
    assert resync is not None, running.opened.reason
    assert resync.pages > resync.page_count // 2  # nearly every page differs, as for another database
    running.close()
    restored = tmp_path / "restored.db"
    _restore(store, restored)
    assert content_digest(restored) == content_digest(database)
