"""The shipper's hold on the WAL survives everything it does: its SQLite locks are never dropped.

POSIX locks belong to a process and a file: closing any descriptor of the
database in the shipper's process drops every lock its SQLite connections
hold there. The application's last connection to close then believes it is
alone, checkpoints past walship's read marks and deletes the WAL with
commits walship never captured (a restore that exits 0 without them).
"""

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.helpers import walship
from tests.shipping import Ship, checkpoint_mode, restore, wait_until
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool, default_spool_dir

RESYNCED = re.compile(r"resync \S+: \d+ of \d+ pages changed")
DIRECT: dict[str, str] = {"PREFECT_API_URL": ""}


_COMMIT = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
    "c.execute('CREATE TABLE IF NOT EXISTS markers (name TEXT)'); "
    "c.execute('INSERT INTO markers VALUES (?)', (sys.argv[2],)); c.close()"
)


def _commit(database: Path, marker: str) -> None:
    """One commit by an application process whose connection then closes (in a process of its own:
    closing it here would drop the locks this test checks)."""
    subprocess.run([sys.executable, "-c", _COMMIT, str(database), marker], check=True)


def _markers(database: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("SELECT name FROM markers ORDER BY rowid")]
    finally:
        connection.close()


def _reset_while_nobody_watched(database: Path) -> None:
    """Two WAL restarts with commits between them and no shipper: only a resync bridges that."""
    for n in range(3):
        _commit(database, f"unwatched-{n}")
        checkpoint_mode(database, "TRUNCATE")


def _locks_held_by_us(database: Path) -> int:
    """How many POSIX locks this process holds on ``database`` (Linux's /proc/locks)."""
    inode = database.stat().st_ino
    pid = str(os.getpid())
    count = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, not a holder
            continue
        if fields[1] == "POSIX" and fields[4] == pid and fields[5].rsplit(":", 1)[-1] == str(inode):
            count += 1
    return count


def test_a_resync_keeps_the_shippers_locks(database: Path, tmp_path: Path) -> None:
    """Opening through a resync (the page digest map consulted) leaves the pins' locks in place."""
    replica = f"file://{tmp_path / 'replica'}"
    assert walship("ship", str(database), "--replica", replica, "--once", env=DIRECT).returncode == 0
    _reset_while_nobody_watched(database)
    shipper = Shipper(database, Spool(default_spool_dir(database)), ShipConfig(database_id="app.db"))
    try:
        opened = shipper.open()
        assert opened.resync is not None, "the case needs the resync path"
        assert _locks_held_by_us(database) > 0, "the shipper's process lost its locks on the database"
    finally:
        shipper.close()


def test_every_step_of_a_shipper_keeps_its_locks(database: Path, tmp_path: Path) -> None:
    """A new generation, syncs, a checkpoint, a snapshot in the generation, a resync and the finish:
    after each, the shipper's process still holds its locks on the database."""
    config = ShipConfig(database_id="app.db", snapshot_seconds=0.001)
    shipper = Shipper(database, Spool(default_spool_dir(database)), config)
    steps: dict[str, Callable[[], object]] = {
        "open": shipper.open,
        "sync": lambda: (_commit(database, "a"), shipper.sync()),
        "checkpoint": lambda: (_commit(database, "b"), shipper._checkpoint()),
        "snapshot": lambda: (_commit(database, "c"), shipper.take_snapshot(), shipper._snapshots.wait()),
        "resync": lambda: shipper._recover("a test asks", shipper.cursor),
        "new generation": lambda: shipper.start_generation("a test asks"),
        "finish": lambda: (_commit(database, "d"), shipper.finish()),
    }
    try:
        for name, step in steps.items():
            step()
            assert _locks_held_by_us(database) > 0, f"after {name}, the shipper's process lost its locks"
    finally:
        shipper.close()


def test_commits_after_a_resync_reach_the_replica(database: Path, tmp_path: Path, spawned: list[Ship]) -> None:
    """The reported case, made deterministic: a shipper that resynced, then the application's last
    connection commits and closes; the replica must hold that commit when the shipper exits 0."""
    replica = f"file://{tmp_path / 'replica'}"
    assert walship("ship", str(database), "--replica", replica, "--once", env=DIRECT).returncode == 0
    _reset_while_nobody_watched(database)
    ship = Ship(database, replica, "--duration", "4", "--interval", "0.5", env=DIRECT)
    spawned.append(ship)
    assert ship.wait_for(RESYNCED, timeout=60), ship.output
    _commit(database, "after-the-resync")
    wait_until(lambda: ship.process.poll() is not None, "the shipper to end", timeout=60)
    assert ship.wait() == 0, ship.output
    output = tmp_path / "restored.db"
    done = restore(replica, output, DIRECT)
    assert done.returncode == 0, done.stderr
    assert _markers(output) == _markers(database)
    assert _markers(output)[-1] == "after-the-resync"
