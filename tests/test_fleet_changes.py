"""The kernel tells the fleet which parked databases changed (inotify), so an idle one costs no look: a write to a
database or its WAL is told at once, other files of its directory are not, a directory that goes is told and no
longer counted on, and a fleet wakes a parked database at its change, not at its next look."""

import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workload import database_copies
from tests.shipping import app_commits, wait_until
from walship.fleet import FleetMember, FleetShipping, RetryingSteps, RowState, SharedStores
from walship.fleet._changes import ChangeWatch
from walship.ship import ShipConfig

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/sys/fs/inotify"), reason="Linux inotify")


@pytest.fixture
def watched(small_database: Path, tmp_path: Path) -> Iterator[tuple[ChangeWatch, list[Path], threading.Event]]:
    databases = database_copies(tmp_path / "a", small_database, 2) + database_copies(tmp_path / "b", small_database, 1)
    nudge = threading.Event()
    watch = ChangeWatch(databases, nudge)
    watch.start()
    try:
        yield watch, databases, nudge
    finally:
        watch.close()


def _told(watch: ChangeWatch, nudge: threading.Event, expected: set[int]) -> set[int]:
    """What the watch tells until ``expected`` is among it (or 10 s passed)."""
    told: set[int] = set()
    for _ in range(100):
        if expected <= told:
            break
        nudge.wait(0.1)
        nudge.clear()
        told |= watch.take()
    return told


def test_a_commit_is_told_and_other_files_are_not(watched: tuple[ChangeWatch, list[Path], threading.Event]) -> None:
    watch, databases, nudge = watched
    assert watch.watched == [True, True, True]
    (databases[0].parent / "notes.txt").write_text("not a database")
    Path(f"{databases[0]}-shm").write_bytes(b"")  # SQLite's index: written through memory, never told
    # The database file itself, as a checkpoint writes it: one write, told once.
    with databases[1].open("r+b") as file:
        file.seek(0, os.SEEK_END)
        file.write(b"\0")
    assert _told(watch, nudge, {1}) == {1}
    # Last, as its close goes on writing (a checkpoint, the WAL deleted) after the first event may have been told.
    connection = sqlite3.connect(databases[2], isolation_level=None)
    connection.execute("CREATE TABLE t (x)")  # WAL mode: the commit appends to the -wal file
    connection.close()
    assert _told(watch, nudge, {2}) == {2}


def test_a_directory_that_goes_is_told_and_no_longer_watched(
    watched: tuple[ChangeWatch, list[Path], threading.Event],
) -> None:
    watch, databases, nudge = watched
    shutil.rmtree(databases[0].parent)
    assert _told(watch, nudge, {0, 1}) == {0, 1}
    wait_until(lambda: watch.watched == [False, False, True], "the watch to let the directory go", 10)


def test_a_directory_not_on_a_local_filesystem_is_not_watched() -> None:
    """There a write made by another host raises no event here: polling only (/proc stands in for it)."""
    watch = ChangeWatch([Path("/proc/self/status")], threading.Event())
    watch.start()
    try:
        assert watch.watched == [False]
    finally:
        watch.close()


@pytest.mark.parametrize("watch_changes", [True, False], ids=["watched", "polled"])
def test_a_parked_database_wakes_at_its_change(small_database: Path, tmp_path: Path, watch_changes: bool) -> None:
    """Its next look, without a change, is ``watched_poll`` (here longer than the window) or ``idle_poll`` away:
    only the kernel's word can wake the watched one within seconds; the polled one wakes at its look."""
    [database] = database_copies(tmp_path / "dbs", small_database, 1)
    stores = SharedStores()
    fleet = FleetShipping(
        [FleetMember(database=database, replicas=[f"file://{tmp_path / 'replica'}"])],
        lambda m: ShipConfig(database_id=m.database.name),
        RetryingSteps(stores=stores),
        stores=stores,
        idle_poll=0.2,
        watched_poll=600,
        park_after=1.0,
        watch_changes=watch_changes,
    )
    thread = threading.Thread(target=lambda: fleet.run(duration=120), daemon=True)
    thread.start()
    try:
        wait_until(lambda: fleet.rows[0].state == RowState.PARKED, "the idle database to be parked", 30)
        time.sleep(1)  # past the look that follows its parking: the next one is a poll away
        app_commits(database, 1)
        wait_until(lambda: fleet.rows[0].state != RowState.PARKED, "the change to wake it", 20)
    finally:
        fleet.stop()
        thread.join(timeout=120)
    assert fleet.rows[0].state == RowState.DONE, fleet.rows


def test_a_database_named_through_a_link_is_watched_where_its_file_is(small_database: Path, tmp_path: Path) -> None:
    """SQLite puts the WAL beside the file the link names, so that directory is the one watched."""
    [database] = database_copies(tmp_path / "real", small_database, 1)
    (tmp_path / "links").mkdir()
    link = tmp_path / "links" / "alias.db"
    link.symlink_to(database)
    nudge = threading.Event()
    watch = ChangeWatch([link], nudge)
    watch.start()
    try:
        connection = sqlite3.connect(link, isolation_level=None)
        connection.execute("CREATE TABLE t (x)")
        connection.close()
        assert _told(watch, nudge, {0}) == {0}
    finally:
        watch.close()
