"""The spool's own faults and what a run reports of it: damaged entries and cursors, outages at the start of a
window, and the summary's counts (issue 21). The CLI runs in direct mode; the spool is filled by an in-process
shipper where a test needs entries that were captured but not uploaded."""

import contextlib
import logging
import re
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import walship
from tests.shipping import Ship, WriterGroup, assert_one_line_error, pending_files, replica_generations, wait_until
from tests.tcpproxy import TcpProxy
from walship.chain import list_segment_sequences, read_segment_info
from walship.errors import TransientStorageError
from walship.fleet import RetryingSteps
from walship.models import RetryPolicy
from walship.ship import LoggingObserver, ShipConfig, Shipper, ShippingRun
from walship.spool import PendingEntry, Spool, default_spool_dir, read_cursor
from walship.storage import open_store

DIRECT: dict[str, str] = {"PREFECT_API_URL": ""}


@contextlib.contextmanager
def application(database: Path) -> Iterator[sqlite3.Connection]:
    """The application's connection, open throughout: its last close would checkpoint and delete the WAL."""
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    try:
        yield connection
    finally:
        connection.close()


def commit(connection: sqlite3.Connection, count: int) -> None:
    for n in range(count):
        connection.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n} " * 20,))


def spool_segments(database: Path, connection: sqlite3.Connection, batches: int) -> list[PendingEntry]:
    """Capture ``batches`` segments of the application's commits into the spool, as a run cut off from storage
    would, and upload none."""
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id=database.name))
    try:
        shipper.open()
        for _ in range(batches):
            commit(connection, 5)
            shipper.sync()
    finally:
        shipper.close()
        spool.close()
    return [entry for entry in Spool(default_spool_dir(database), lock=False).pending() if entry.segment]


def ship_once(database: Path, replica: str, env: dict[str, str] = DIRECT) -> subprocess.CompletedProcess[str]:
    return walship("ship", str(database), "--replica", replica, "--once", env=env)


@pytest.fixture(params=["direct", "flow"])
def mode_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The CLI's environment in each of its modes: no Prefect API, or the session's."""
    return DIRECT if request.param == "direct" else dict(request.getfixturevalue("api_env"))


def restored_equals_source(replica: str, database: Path, output: Path) -> None:
    result = walship("restore", "--replica", replica, "--output", str(output), env=DIRECT)
    assert result.returncode == 0, result.stderr
    assert content_digest(output) == content_digest(database)


class TestDamagedEntry:
    """A spooled entry whose bytes changed is never uploaded: the run stops naming it, a new generation starts,
    and the replica keeps the consistent state before it."""

    def test_flipped_byte_in_a_pending_segment(self, database: Path, tmp_path: Path, mode_env: dict[str, str]) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        assert ship_once(database, replica, mode_env).returncode == 0
        with application(database) as connection:
            spooled = spool_segments(database, connection, 3)
            assert len(spooled) >= 3
            damaged = spooled[1]
            spool = Spool(default_spool_dir(database), lock=False)
            path = spool.data_path(damaged)
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))

            result = ship_once(database, replica, mode_env)
        assert_one_line_error(result, path.name)
        assert "damaged" in result.stderr
        old = damaged.generation
        # Nothing from the damaged segment on went up; what came before it did.
        assert list_segment_sequences(open_store(replica), old) == [e.sequence for e in spooled[:1]]
        left = spool.pending()
        assert not [e for e in left if e.generation == old]
        cursor = read_cursor(spool.root)
        assert cursor is not None
        assert cursor.generation != old

        again = ship_once(database, replica, mode_env)
        assert again.returncode == 0, again.stderr
        assert pending_files(database) == []
        assert replica_generations(replica) == {old, cursor.generation}
        restored_equals_source(replica, database, tmp_path / "restored.db")

    def test_size_unchanged_damage_in_a_snapshot_entry(self, database: Path, tmp_path: Path) -> None:
        # The generation's first snapshot, damaged before it ever went up: no generation reaches the replica.
        spool = Spool(default_spool_dir(database))
        shipper = Shipper(database, spool, ShipConfig(database_id=database.name))
        shipper.open()
        shipper.close()
        spool.close()
        entries = Spool(default_spool_dir(database), lock=False).pending()
        snapshot = next(e for e in entries if e.kind == "snapshot")
        path = Spool(default_spool_dir(database), lock=False).data_path(snapshot)
        data = bytearray(path.read_bytes())
        data[-40] ^= 0x10
        path.write_bytes(bytes(data))
        replica = f"file://{tmp_path / 'replica'}"

        result = ship_once(database, replica)
        assert_one_line_error(result, path.name)
        assert snapshot.generation not in replica_generations(replica)
        again = ship_once(database, replica)
        assert again.returncode == 0, again.stderr
        restored_equals_source(replica, database, tmp_path / "restored.db")


class TestDamagedCursor:
    """A damaged cursor.json reads as no cursor: a new generation, never a crash."""

    @pytest.mark.parametrize("damage", [b'{"generation": "2026', b"", b"\x00\xff garbage"])
    def test_next_run_starts_a_generation(self, database: Path, tmp_path: Path, damage: bytes) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        assert ship_once(database, replica).returncode == 0
        (default_spool_dir(database) / "cursor.json").write_bytes(damage)
        assert read_cursor(default_spool_dir(database)) is None

        result = ship_once(database, replica)
        assert result.returncode == 0, result.stderr
        assert "the spool's cursor was damaged" in result.stdout
        assert len(replica_generations(replica)) == 2
        restored_equals_source(replica, database, tmp_path / "restored.db")


class TestSummary:
    """The summary line tells what the run holds and shipped."""

    def test_idle_window_reports_the_position_it_holds(self, database: Path, tmp_path: Path) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        assert ship_once(database, replica).returncode == 0
        with application(database) as connection:
            spool_segments(database, connection, 2)
            assert ship_once(database, replica).returncode == 0
            idle = ship_once(database, replica)
        assert idle.returncode == 0, idle.stderr
        cursor = read_cursor(default_spool_dir(database))
        assert cursor is not None
        assert cursor.sequence > 0
        assert f"position {cursor.generation}/{cursor.sequence}" in idle.stdout, idle.stdout

    def test_commits_count_what_the_uploaded_segments_hold(self, database: Path, tmp_path: Path) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        assert ship_once(database, replica).returncode == 0
        with application(database) as connection:
            assert spool_segments(database, connection, 4)
            result = ship_once(database, replica)
        assert result.returncode == 0, result.stderr
        # Every segment on the replica went up in this run (the first uploaded only the generation's snapshot).
        store = open_store(replica)
        commits = [read_segment_info(store, key).commits for key in _uploaded_segments(replica)]
        assert sum(commits) >= 20
        shipped = re.search(r"shipped (\d+) segments \((\d+) commits", result.stdout)
        assert shipped is not None, result.stdout
        assert (int(shipped[1]), int(shipped[2])) == (len(commits), sum(commits))


@pytest.fixture
def outage(proxied_moto: tuple[str, TcpProxy]) -> tuple[str, TcpProxy]:
    """A replica on moto behind a proxy that starts stopped: storage is unreachable until ``proxy.start()``."""
    proxied_moto[1].stop()
    return proxied_moto


class TestUnreachableAtStart:
    """Storage unreachable when a window starts: the run captures into the spool and writes nothing to the
    replica until it holds the lease."""

    def test_storage_never_comes_back(self, database: Path, tmp_path: Path, outage: tuple[str, TcpProxy]) -> None:
        replica, proxy = outage
        run = ShippingRun(
            database,
            replica,
            ShipConfig(database_id=database.name),
            spool_dir=None,
            steps=RetryingSteps(RetryPolicy(attempts=0)),
            observer=LoggingObserver(logging.getLogger("test")),
        )
        with pytest.raises(TransientStorageError, match=r"\d+ entries are still spooled"):
            run.run(duration=0, interval=0.5, once=True, handover_wait=0)
        assert pending_files(database), "nothing was captured while storage was down"
        proxy.start()
        caught_up = ship_once(database, replica)
        assert caught_up.returncode == 0, caught_up.stderr
        assert pending_files(database) == []
        restored_equals_source(replica, database, tmp_path / "restored.db")

    def test_storage_comes_back_within_the_window(
        self, database: Path, tmp_path: Path, outage: tuple[str, TcpProxy], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica, proxy = outage
        writers = WriterGroup(database, [1, 2], rate=100)
        spawned.append(writers)
        ship = Ship(database, replica, "--duration", "30", "--interval", "0.5", env=DIRECT)
        spawned.append(ship)
        # Captured while storage is down: the generation's snapshot and segments wait in the spool.
        wait_until(lambda: len(pending_files(database)) >= 6, "entries spooled during the outage", timeout=60)
        proxy.start()
        wait_until(lambda: bool(_uploaded_segments(replica)), "segments uploaded once storage was back", timeout=60)
        writers.stop()
        ship.process.send_signal(signal.SIGTERM)  # the window ends as its time would
        assert ship.wait() == 0, ship.output
        assert "upload failed" in ship.output
        restored_equals_source(replica, database, tmp_path / "restored.db")


def _uploaded_segments(replica: str) -> list[str]:
    """Keys of the WAL and resync segments on the replica."""
    return [o.key for o in open_store(replica).list("generations/") if o.key.endswith((".wal.zst", ".resync.zst"))]
