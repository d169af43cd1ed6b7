"""Restore, status and verify through the CLI where issue 10 found them going back in time or failing.

Only the public CLI and the replica's objects are used here (no new core API),
so these tests ran, and failed, on the code before the fix.
"""

import io
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from bench.workload import content_digest
from flows.restore import restore_flow
from tests.helpers import WALSHIP, rewrite_object, take_and_upload, walship
from tests.test_ship import Running
from walship.chain import list_segment_sequences
from walship.layout import LEASE_KEY, format_segment_key, format_snapshot_key
from walship.storage import ObjectStore, open_store

STRAY = "generations/20990101T000000Z-deadbeef/snapshots/00000000000000000000.sqlite.zst"


def commit(database: Path, tag: str, rows: int) -> None:
    """Commit ``rows`` rows in another process (as the application would)."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('CREATE TABLE IF NOT EXISTS notes(tag TEXT, n INTEGER)'); "
        "c.executemany('INSERT INTO notes VALUES (?, ?)', [(sys.argv[2], n) for n in range(int(sys.argv[3]))]); "
        "c.commit()"
    )
    subprocess.run([sys.executable, "-c", code, str(database), tag, str(rows)], check=True)


def two_shippers(store: ObjectStore, database: Path, tmp_path: Path) -> tuple[str, str, Path, Path]:
    """Shipper A starts a generation; C, on another copy, starts a newer one and stops; A ships on.

    Returns (A's generation, C's generation, A's database, C's database).
    """
    other = tmp_path / "other.db"
    shutil.copyfile(database, other)
    a = Running(database, store, tmp_path / "spool-a")
    commit(database, "a", 50)
    a.step()
    time.sleep(1.1)  # C's generation name is a later second than A's
    # The second shipper's lease check is what issue 10 found missing: here it is bypassed on purpose.
    store.delete([LEASE_KEY])
    c = Running(other, store, tmp_path / "spool-c")
    commit(other, "c", 10)
    c.step()
    c.close()
    commit(database, "a2", 200)
    a.step()
    a.close()
    [gen_a], [gen_c] = a.generations, c.generations
    return gen_a, gen_c, database, other


def newest_generation_without_snapshot(store: ObjectStore, database: Path, tmp_path: Path) -> tuple[str, str]:
    """A standalone snapshot, then a shipped generation whose snapshot is deleted; returns (older, newest)."""
    older = take_and_upload(store, database).generation
    running = Running(database, store, tmp_path / "spool")
    commit(database, "x", 30)
    running.step()
    commit(database, "y", 30)
    running.step()
    running.close()
    [newest] = running.generations
    store.delete([format_snapshot_key(newest, 0)])
    return older, newest


def shipped(store: ObjectStore, database: Path, spool: Path, batches: int) -> str:
    """One generation of ``batches`` segments; returns its name."""
    running = Running(database, store, spool)
    for number in range(batches):
        commit(database, f"batch-{number}", 20)
        running.step()
    running.close()
    [generation] = running.generations
    return generation


def restore(replica: str, output: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return walship("restore", "--replica", replica, "--output", str(output), *options, env=env)


def assert_error(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("walship: "), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr


@pytest.fixture
def replica(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'replica'}"


@pytest.fixture
def env(prefect_api: str) -> dict[str, str]:
    return {"PREFECT_API_URL": prefect_api}


class TestNewestData:
    """Issue 10, cases 1 and 2: restore never quietly restores older data than the replica holds."""

    def test_two_shippers_restore_the_newest_data(
        self, replica: str, env: dict[str, str], database: Path, tmp_path: Path
    ) -> None:
        _, _, db_a, db_c = two_shippers(open_store(replica), database, tmp_path)
        result = restore(replica, tmp_path / "out.db", env)
        assert result.returncode == 0, result.stderr
        assert content_digest(tmp_path / "out.db") == content_digest(db_a)
        assert content_digest(tmp_path / "out.db") != content_digest(db_c)

    def test_newest_snapshot_deleted(self, replica: str, env: dict[str, str], database: Path, tmp_path: Path) -> None:
        older, newest = newest_generation_without_snapshot(open_store(replica), database, tmp_path)
        result = restore(replica, tmp_path / "out.db", env)
        assert_error(result, 1, newest, "snapshot is missing", f"--generation {older}", "--timestamp")
        assert not (tmp_path / "out.db").exists()
        assert walship("verify", "--replica", replica, env=env).returncode == 1
        status = walship("status", "--replica", replica)
        assert status.returncode == 0, status.stderr
        assert "NOT restorable" in status.stdout
        assert f"problem:      generation {newest}" in status.stdout
        assert restore(replica, tmp_path / "older.db", env, "--generation", older).returncode == 0


class TestStrays:
    """Issue 10, case 3: one stray object no longer blocks status, verify or any restore."""

    def test_stray_snapshot_key(self, replica: str, env: dict[str, str], database: Path, tmp_path: Path) -> None:
        store = open_store(replica)
        info = take_and_upload(store, database)
        store.put_stream(STRAY, io.BytesIO(b"not walship's"), metadata={})
        status = walship("status", "--replica", replica)
        assert status.returncode == 0, status.stderr
        assert STRAY in status.stdout
        verify = walship("verify", "--replica", replica, env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert STRAY in verify.stdout
        for options in ((), ("--snapshot", info.key)):
            output = tmp_path / f"out{len(options)}.db"
            result = restore(replica, output, env, *options)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"restored {output} at ")


class TestPointInTime:
    """Issue 10, case 5: a point-in-time restore says what it holds, and warns when it may lack commits."""

    def test_asked_time_inside_a_long_segment(
        self, replica: str, env: dict[str, str], database: Path, tmp_path: Path
    ) -> None:
        store = open_store(replica)
        running = Running(database, store, tmp_path / "spool")
        commit(database, "first", 10)
        running.step()  # snapshot and segment 1
        commit(database, "second", 10)
        time.sleep(7)  # the next capture comes 7 s after the last one: one segment spans them
        running.step()
        running.close()
        [generation] = running.generations
        sequences = list_segment_sequences(store, generation)
        last = format_segment_key(generation, sequences[-1])
        captured = store.head(last).metadata["walship-captured-at"]
        asked = _seconds_before(captured, 1)
        result = restore(replica, tmp_path / "out.db", env, "--timestamp", asked)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"restored {tmp_path / 'out.db'} at ")
        assert "asked for " in result.stdout
        assert "holds every commit up to" in result.stdout
        warning = result.stderr.strip().splitlines()
        assert len(warning) == 1, result.stderr
        assert warning[0].startswith("walship: warning: the restore may be missing commits made between")
        assert f"--sequence {sequences[-1]}" in warning[0]
        # Asked at the segment's own capture: nothing is missing, nothing to warn about.
        exact = restore(replica, tmp_path / "exact.db", env, "--timestamp", captured)
        assert exact.returncode == 0, exact.stderr
        assert exact.stderr == ""
        # The flow's result and artifact say the same.
        state = restore_flow(
            replica=replica, output=tmp_path / "flow.db", timestamp=datetime.fromisoformat(asked), return_state=True
        )
        result = state.result()
        assert result.asked_time == datetime.fromisoformat(asked)
        assert result.next_sequence == sequences[-1]
        assert result.complete_until is not None
        assert result.complete_until < result.asked_time
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
                )
            )
        [artifact] = [a for a in artifacts if a.type == "markdown"]
        assert "| holds every commit up to |" in artifact.data
        assert "may be missing commits" in artifact.data


class TestSmallerItems:
    """Issue 10, case 6."""

    def test_negative_sequence_is_bad_input(self, replica: str, tmp_path: Path) -> None:
        result = walship("restore", "--replica", replica, "--output", str(tmp_path / "o.db"), "--sequence", "-1")
        assert_error(result, 2, "--sequence -1")

    def test_unknown_generation(self, replica: str, env: dict[str, str], database: Path, tmp_path: Path) -> None:
        take_and_upload(open_store(replica), database)
        result = restore(replica, tmp_path / "o.db", env, "--generation", "nosuchgen", "--sequence", "5")
        assert_error(result, 1, "generation nosuchgen does not exist in the replica", "walship status")

    @pytest.mark.parametrize("change", ["truncate", "flip"])
    def test_damaged_middle_segment_gives_the_sequence_hint(
        self, replica: str, env: dict[str, str], database: Path, tmp_path: Path, change: str
    ) -> None:
        store = open_store(replica)
        generation = shipped(store, database, tmp_path / "spool", 4)
        sequences = list_segment_sequences(store, generation)
        middle = sequences[len(sequences) // 2]
        rewrite_object(store, format_segment_key(generation, middle), change)
        result = restore(replica, tmp_path / "o.db", env)
        assert_error(result, 1, format_segment_key(generation, middle), f"--sequence {middle - 1}")
        assert restore(replica, tmp_path / "ok.db", env, "--sequence", str(middle - 1)).returncode == 0

    def test_status_flags_a_missing_middle_segment(self, replica: str, database: Path, tmp_path: Path) -> None:
        store = open_store(replica)
        generation = shipped(store, database, tmp_path / "spool", 4)
        sequences = list_segment_sequences(store, generation)
        gone = format_segment_key(generation, sequences[1])
        store.delete([gone])
        status = walship("status", "--replica", replica)
        assert status.returncode == 0, status.stderr
        assert f"problem:      {gone}" in status.stdout or (gone in status.stdout and "problem:" in status.stdout)

    def test_status_into_a_closed_pipe(self, replica: str, database: Path) -> None:
        """``walship status --json | head -1``: the reader is gone before the output is written."""
        take_and_upload(open_store(replica), database)
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write now fails with EPIPE, deterministically
        try:
            done = subprocess.run(
                [WALSHIP, "status", "--replica", replica, "--json"],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
                timeout=120,
            )
        finally:
            os.close(write_end)
        assert done.stderr == "", done.stderr
        assert done.returncode == 141


def _seconds_before(iso: str, seconds: float) -> str:
    return (datetime.fromisoformat(iso) - timedelta(seconds=seconds)).isoformat()
