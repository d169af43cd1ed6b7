"""``walship ship-many``: one process ships a fleet, each database into a replica of its own.

Two hundred databases, ten of them written by real writer processes, go
through one direct-mode process for a 40 s window: every database gets its
generation, the written ones restore equal to their source, a file that is
not a SQLite database is reported and skipped, and one deleted mid-window is
let go. Windows that follow pick new databases up.
"""

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.workload import database_copies
from tests.helpers import ROOT, WALSHIP, walship
from tests.shipping import (
    WriterGroup,
    assert_restore_equals_source,
    replica_generations,
    wait_until,
)
from walship.fleet import Activity, SharedStores, replica_for

FLEET = 200
ACTIVE = 10


@pytest.fixture
def writers() -> Iterator[list[WriterGroup]]:
    running: list[WriterGroup] = []
    yield running
    for group in running:
        group.stop()


def test_two_hundred_databases_one_process(small_database: Path, tmp_path: Path, writers: list[WriterGroup]) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, FLEET)
    (tmp_path / "dbs" / "notes.db").write_text("not a database\n")
    active, doomed = databases[:ACTIVE], databases[-1]
    replica = f"file://{tmp_path}/replicas/{{name}}"
    pattern = str(tmp_path / "dbs" / "*.db")
    writers.extend(WriterGroup(db, [1], rate=50) for db in active)
    ship = subprocess.Popen(
        [WALSHIP, "--no-prefect", "ship-many", pattern, "--replica", replica, "--duration", "40"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Once its generation is stored the doomed database is being shipped: delete it under the shipper.
        wait_until(lambda: bool(replica_generations(replica.format(name=doomed.name))), "the first generations", 60)
        doomed.unlink()
        doomed.with_name(f"{doomed.name}-wal").unlink(missing_ok=True)
        time.sleep(20)
        for group in writers:
            group.stop()  # like a crash, mid-window: the final capture must still get every commit
        writers.clear()
        stdout, stderr = ship.communicate(timeout=180)
    finally:
        if ship.poll() is None:
            ship.kill()
    assert ship.returncode == 0, stderr
    rows = {line.split()[1]: line.split()[0] for line in stdout.splitlines() if line.split()[1:2]}
    assert rows[str(tmp_path / "dbs" / "notes.db")] == "skipped"
    assert rows[str(doomed)] == "removed"
    assert sum(state == "done" for state in rows.values()) == FLEET - 1, stdout
    for db in databases:
        assert len(replica_generations(replica.format(name=db.name))) == 1, db
    for db in active:
        assert_restore_equals_source(replica.format(name=db.name), db, tmp_path / f"restored-{db.name}", {})


def test_next_window_picks_up_new_databases_and_lets_removed_ones_go(small_database: Path, tmp_path: Path) -> None:
    _, second = database_copies(tmp_path / "dbs", small_database, 2)
    replica = f"file://{tmp_path}/replicas"
    pattern = str(tmp_path / "dbs" / "*.db")
    assert walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once").returncode == 0
    second.unlink()
    third = tmp_path / "dbs" / "late.db"
    shutil.copyfile(small_database, third)
    result = walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once")
    assert result.returncode == 0, result.stderr
    assert str(second) not in result.stdout
    assert f"done      {third}" in result.stdout
    # The base URL gives each database a prefix of its own; the removed one's lease was let go by its last run.
    assert replica_generations(f"{replica}/{third.name}")
    lease = json.loads((tmp_path / "replicas" / second.name / "lease.json").read_text())
    assert datetime.fromisoformat(lease["expires_at"]) <= datetime.now(UTC)


def test_a_bad_template_or_no_match_is_bad_usage(tmp_path: Path) -> None:
    result = walship("--no-prefect", "ship-many", str(tmp_path / "*.db"), "--replica", f"file://{tmp_path}/r")
    assert result.returncode == 2
    assert "no database matches" in result.stderr


def test_activity_sees_a_commit_through_stat_alone(small_database: Path, tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "app.db"
    shutil.copyfile(small_database, path)
    activity = Activity(path)
    activity.look()
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE t (x)")
    connection.commit()
    assert activity.look()
    connection.close()
    path.unlink()
    with pytest.raises(FileNotFoundError):
        activity.look()


def test_overlapping_windows_hand_over_database_by_database(
    small_database: Path, tmp_path: Path, writers: list[WriterGroup]
) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, 3)
    replica = f"file://{tmp_path}/replicas/{{name}}"
    pattern = str(tmp_path / "dbs" / "*.db")
    writers.append(WriterGroup(databases[0], [1], rate=50))
    argv = [WALSHIP, "--no-prefect", "ship-many", pattern, "--replica", replica]
    first = subprocess.Popen([*argv, "--duration", "10"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    wait_until(lambda: all(replica_generations(replica.format(name=db.name)) for db in databases), "generations", 60)
    second = walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once", "--handover-wait", "60")
    first.communicate(timeout=60)
    assert first.returncode == 0
    assert second.returncode == 0, second.stderr
    for group in writers:
        group.stop()
    writers.clear()
    # The first window's generation goes on: nothing was refused, nothing started anew.
    third = walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once")
    assert third.returncode == 0, third.stderr
    for db in databases:
        assert len(replica_generations(replica.format(name=db.name))) == 1, db
    assert_restore_equals_source(replica.format(name=databases[0].name), databases[0], tmp_path / "restored.db", {})


@pytest.mark.parametrize("backend", ["moto"], indirect=True)
def test_a_fleet_into_s3_shares_one_client(small_database: Path, tmp_path: Path, replica_url: str) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, 3)
    result = walship("--no-prefect", "ship-many", str(tmp_path / "dbs" / "*.db"), "--replica", replica_url, "--once")
    assert result.returncode == 0, result.stderr
    for db in databases:
        url = replica_for(replica_url, db)
        assert len(replica_generations(url)) == 1, url
    stores = SharedStores()
    first, second = (stores.open(replica_for(replica_url, db)) for db in databases[:2])
    assert first.client is second.client  # type: ignore[attr-defined]
    assert first.location != second.location
