"""A fleet holds only what is written: an idle database is parked (no connection, no descriptor) and woken by a change;
the next window leaves an unchanged database closed; the open-files limit bounds how many are held at once. Nothing a
parked database's application commits is lost, even when it resets the WAL while nobody holds it (a resync bridges it).
"""

import os
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workload import content_digest, database_copies
from tests.helpers import WALSHIP, walship
from tests.shipping import app_commits, wait_until
from walship.errors import UsageError
from walship.fleet import FleetMember, FleetShipping, RetryingSteps, RowState, SharedStores
from walship.fleet._budget import FILES_PER_DATABASE, open_file_budget
from walship.ship import ShipConfig
from walship.spool import CAUGHT_UP, default_spool_dir

DIRECT = {"PREFECT_API_URL": ""}


def _fleet(databases: list[Path], replicas: Path, **options: float) -> FleetShipping:
    stores = SharedStores()
    return FleetShipping(
        [FleetMember(database=db, replicas=[f"file://{replicas / db.name}"]) for db in databases],
        lambda m: ShipConfig(database_id=m.database.name),
        RetryingSteps(stores=stores),
        stores=stores,
        idle_poll=0.2,
        **options,  # type: ignore[arg-type]
    )


def _open_files_of(database: Path) -> list[str]:
    """This process's descriptors open on ``database`` or its WAL, index and journal."""
    names = {str(database), f"{database}-wal", f"{database}-shm"}
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target in names:
            found.append(target)
    return found


def _restored_equals(database: Path, replica: Path, output: Path) -> None:
    result = walship("restore", "--replica", f"file://{replica}", "--output", str(output), env=DIRECT)
    assert result.returncode == 0, result.stderr
    assert content_digest(output) == content_digest(database)


@pytest.fixture
def window() -> Iterator[list[threading.Thread]]:
    threads: list[threading.Thread] = []
    yield threads
    for thread in threads:
        thread.join(timeout=120)


def _run_in_thread(fleet: FleetShipping, seconds: float, threads: list[threading.Thread]) -> dict[str, object]:
    out: dict[str, object] = {}
    thread = threading.Thread(target=lambda: out.update(report=fleet.run(duration=seconds)), daemon=True)
    thread.start()
    threads.append(thread)
    return out


def _state(fleet: FleetShipping, database: Path) -> RowState:
    return next(row.state for row in fleet.rows if row.database == str(database))


def test_an_idle_database_is_parked_and_woken_by_a_change(
    small_database: Path, tmp_path: Path, window: list[threading.Thread]
) -> None:
    quiet, gap = database_copies(tmp_path / "dbs", small_database, 2)
    fleet = _fleet([quiet, gap], tmp_path / "replicas", park_after=1.0)
    out = _run_in_thread(fleet, 40, window)
    wait_until(lambda: _state(fleet, quiet) == RowState.PARKED, "the idle database to be parked", 30)
    assert _open_files_of(quiet) == []  # parked: no connection, no descriptor
    assert (default_spool_dir(quiet) / CAUGHT_UP).exists()

    app_commits(quiet, 20)
    wait_until(lambda: _state(fleet, quiet) == RowState.SHIPPING, "the change to wake it", 10)
    assert _open_files_of(quiet)  # held while written

    # While parked, the application resets the WAL nobody holds: the wake resyncs, nothing is lost.
    wait_until(lambda: _state(fleet, gap) == RowState.PARKED, "the second database to be parked", 30)
    app_commits(gap, 30, checkpoint="TRUNCATE")
    wait_until(lambda: _state(fleet, gap) != RowState.PARKED, "the change to wake it", 10)
    # After a resync under a loaded machine (the whole suite beside it) parking again took over 30 s once.
    wait_until(lambda: _state(fleet, gap) == RowState.PARKED, "it to be parked again", 90)
    fleet.stop()
    window[0].join(timeout=120)
    report = out["report"]
    assert not report.failed, report.rows  # type: ignore[attr-defined]
    assert {row.state for row in fleet.rows} == {RowState.DONE}
    gap_row = next(row for row in fleet.rows if row.database == str(gap))
    assert gap_row.segments_uploaded >= 1  # the resync, counted across its runs
    for db in (quiet, gap):
        _restored_equals(db, tmp_path / "replicas" / db.name, tmp_path / f"restored-{db.name}")


def test_the_next_window_leaves_unchanged_databases_closed(small_database: Path, tmp_path: Path) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, 3)
    pattern, replica = str(tmp_path / "dbs" / "*.db"), f"file://{tmp_path}/replicas/{{name}}"
    first = walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once", env=DIRECT)
    assert first.returncode == 0, first.stderr
    time.sleep(3)  # past the files' recent-change window: an unchanged file is known unchanged
    app_commits(databases[1], 10)
    second = walship("--no-prefect", "ship-many", pattern, "--replica", replica, "--once", env=DIRECT)
    assert second.returncode == 0, second.stderr
    states = {line.split()[1]: line.split()[0] for line in second.stdout.splitlines() if line.split()[1:2]}
    assert states[str(databases[0])] == "idle"
    assert states[str(databases[2])] == "idle"
    assert states[str(databases[1])] == "done"
    for db in databases:
        _restored_equals(db, tmp_path / "replicas" / db.name, tmp_path / f"restored-{db.name}")


def test_more_written_databases_than_the_budget_holds(
    small_database: Path, tmp_path: Path, window: list[threading.Thread], caplog: pytest.LogCaptureFixture
) -> None:
    databases = database_copies(tmp_path / "dbs", small_database, 8)
    # Room for the workers' four databases at once, and no more.
    fleet = _fleet(databases, tmp_path / "replicas", park_after=30.0, open_files=256 + 4 * FILES_PER_DATABASE)
    out = _run_in_thread(fleet, 25, window)
    for _ in range(3):
        for db in databases:
            app_commits(db, 5)
        time.sleep(1)
    window[0].join(timeout=120)
    assert not out["report"].failed  # type: ignore[attr-defined]
    for db in databases:
        _restored_equals(db, tmp_path / "replicas" / db.name, tmp_path / f"restored-{db.name}")


def test_a_limit_too_small_for_the_workers_is_one_line(small_database: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"needs at least \d+ open files.*ulimit -n"):
        open_file_budget(4, limit=100)
    assert open_file_budget(4, limit=256 + 4 * FILES_PER_DATABASE) == 4
    database_copies(tmp_path / "dbs", small_database, 2)
    result = subprocess.run(
        [WALSHIP, "--no-prefect", "ship-many", str(tmp_path / "dbs" / "*.db"), "--replica", f"file://{tmp_path}/r"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)),
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("walship: "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "may open 200" in result.stderr
    assert not (tmp_path / "r").exists()  # refused before anything was written
