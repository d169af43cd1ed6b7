"""A standby in windows: overlapping followers hand the copy over, the flow reports lag, and fail-over ships the copy.

Real processes and a real Prefect API; the database is the session's small one.
"""

import shutil
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from bench.workload import content_digest
from flows.standby import standby_flow
from tests.helpers import WALSHIP, walship
from tests.prefect_api import artifacts, read_events, run_id
from tests.shipping import app_commits, wait_until
from walship.copies import read_copy_record

pytestmark = pytest.mark.timeout(120)


def _ship_once(database: Path, replica: str, *options: str) -> None:
    result = walship("--no-prefect", "ship", str(database), "--replica", replica, "--once", *options)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def shipped(small_database: Path, tmp_path: Path) -> tuple[Path, str]:
    database = tmp_path / "app.db"
    shutil.copyfile(small_database, database)
    replica = f"file://{tmp_path / 'replica'}"
    app_commits(database, 20)
    _ship_once(database, replica)
    return database, replica


def test_overlapping_windows_hand_the_copy_over(shipped: tuple[Path, str], tmp_path: Path) -> None:
    """While a window follows, a second waits for it to seal the copy and takes over; nothing else may apply."""
    database, replica = shipped
    copy = tmp_path / "standby.db"
    follow = ["follow", "--replica", replica, "--output", str(copy), "--interval", "0.2"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    first = subprocess.Popen([WALSHIP, "--no-prefect", *follow], **pipes)  # type: ignore[call-overload]
    second: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: read_copy_record(copy) is not None, "the first window's restore")
        for refused in (
            walship("--no-prefect", *follow, "--once"),
            walship("--no-prefect", "restore", "--replica", replica, "--output", str(copy), "--delta"),
        ):
            assert refused.returncode == 2, refused.stderr
            assert f"copy {copy} is followed by pid {first.pid}" in refused.stderr
        second = subprocess.Popen([WALSHIP, "--verbose", "--no-prefect", *follow, "--handover-wait", "60"], **pipes)  # type: ignore[call-overload]
        assert second.stderr is not None
        while "waiting up to 60 s to take over" not in (line := second.stderr.readline()):
            assert line, "the second window ended without waiting"
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert f"stopped: {copy} holds" in out
        assert "integrity ok" in out
        app_commits(database, 30)
        _ship_once(database, replica)
        wanted = content_digest(database)
        wait_until(lambda: _digest_or_none(copy) == wanted, "the second window to apply what was shipped")
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert "took over from the previous follower after" in out, out
    assert "integrity ok" in out
    assert content_digest(copy) == content_digest(database)


def _digest_or_none(copy: Path) -> str | None:
    try:
        return content_digest(copy)
    except sqlite3.Error:
        return None


@pytest.mark.usefixtures("prefect_api")
def test_the_flow_publishes_position_and_lag_and_emits_lagging(shipped: tuple[Path, str], tmp_path: Path) -> None:
    """A window that applies what is shipped while it runs: its table, and a lagging event past the threshold."""
    database, replica = shipped
    copy = tmp_path / "standby.db"

    def ship_later() -> None:
        wait_until(lambda: read_copy_record(copy) is not None, "the window's restore")
        app_commits(database, 30)
        _ship_once(database, replica)

    shipper = threading.Thread(target=ship_later)
    shipper.start()
    state = standby_flow(
        replica=replica,
        output=copy,
        duration=5,
        interval=0.2,
        lag_threshold_seconds=0.001,
        progress_interval=0.1,
        database_id="app.db",
        return_state=True,
    )
    shipper.join()
    window = state.result()
    assert window.sealed
    assert window.segments_applied >= 1
    assert window.lag_seconds is not None
    assert window.lag_seconds > 0
    assert content_digest(copy) == content_digest(database)
    [table] = [str(a.data) for a in artifacts(run_id(state), "markdown")]
    assert f"| position | {window.position} |" in table
    assert f"| segments applied | {window.segments_applied} |" in table
    assert "| window | ended |" in table
    [lagging] = read_events("walship.standby.lagging", flow_run_id=run_id(state))
    assert lagging.payload["lag_seconds"] > lagging.payload["threshold_seconds"] == 0.001
    assert lagging.resource["walship.database"] == "app.db"
    [completed] = read_events("walship.standby.completed", flow_run_id=run_id(state))
    assert completed.payload["position"] == window.position


def test_fail_over_ships_the_standby_to_a_new_replica(shipped: tuple[Path, str], tmp_path: Path) -> None:
    """docs/OPERATIONS.md's fail-over: stop following, open the copy read-write, ship it to a new replica."""
    database, replica = shipped
    copy = tmp_path / "standby.db"
    followed = walship("--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--duration", "0.5")
    assert followed.returncode == 0, followed.stderr
    once = walship("--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--once")
    assert once.returncode == 0, once.stderr
    record = read_copy_record(copy)
    assert record is not None
    assert f"position {record.position}; lag " in once.stdout, once.stdout
    new = f"file://{tmp_path / 'new-replica'}"
    _ship_once(copy, new, "--database-id", "app.db")
    app_commits(copy, 10)  # the application now writes to the promoted copy
    _ship_once(copy, new, "--database-id", "app.db")
    restored = tmp_path / "from-new.db"
    result = walship("--no-prefect", "restore", "--replica", new, "--output", str(restored))
    assert result.returncode == 0, result.stderr
    assert content_digest(restored) == content_digest(copy) != content_digest(database)
    with sqlite3.connect(restored) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
