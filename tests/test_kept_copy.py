"""A restored copy brought up to date (``restore --delta``) and kept there (``follow``), with real processes.

Each copy ends byte for byte as a fresh restore of the same point, checked by
the replica's own record of it (the state digest walship takes of a sealed
copy) and by its rows; what cannot be proven a copy of this replica is
refused, and what changed locally is rebuilt with a line saying so.
"""

import hashlib
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.workload import content_digest
from tests.conftest import use_credentials
from tests.helpers import WALSHIP, walship
from tests.s3servers import MotoS3
from tests.shipping import Ship, WriterGroup, app_commits, replica_generations, wait_until
from tests.tcpproxy import TcpProxy
from walship.copies import read_copy_record
from walship.layout import parse_segment_key
from walship.standby import follow
from walship.storage import open_store

pytestmark = pytest.mark.timeout(180)


def _ship_once(database: Path, replica: str, *options: str) -> None:
    result = walship("--no-prefect", "ship", str(database), "--replica", replica, "--once", *options)
    assert result.returncode == 0, result.stderr


def _restore(replica: str, output: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return walship("--no-prefect", "restore", "--replica", replica, "--output", str(output), *options)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def shipped(database: Path, tmp_path: Path) -> tuple[Path, str]:
    """A database shipped once with its WAL kept (segments, not a resync), and a copy of that point."""
    replica = f"file://{tmp_path / 'replica'}"
    app_commits(database, 50)
    _ship_once(database, replica)
    return database, replica


def _fresh(replica: str, tmp_path: Path, name: str, *options: str) -> Path:
    fresh = tmp_path / name
    result = _restore(replica, fresh, *options)
    assert result.returncode == 0, result.stderr
    return fresh


def test_delta_applies_only_the_segments_after_the_copy(shipped: tuple[Path, str], tmp_path: Path) -> None:
    database, replica = shipped
    copy = _fresh(replica, tmp_path, "copy.db")
    before = read_copy_record(copy)
    assert before is not None
    assert before.file is not None
    app_commits(database, 200)
    _ship_once(database, replica)
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert "segments applied" in result.stdout, result.stdout
    assert "rebuilt" not in result.stdout, result.stdout
    counted = re.search(r"downloaded (\d+) bytes, [\d.]+ % of a full restore's (\d+)", result.stdout)
    assert counted is not None, result.stdout
    assert int(counted[1]) < int(counted[2]), result.stdout
    fresh = _fresh(replica, tmp_path, "fresh.db")
    assert _file_digest(copy) == _file_digest(fresh)
    assert _rows(copy) == _rows(database)
    after = read_copy_record(copy)
    assert after is not None
    assert after.sequence > before.sequence
    assert after.file is not None
    assert not Path(f"{copy}-wal").exists() or Path(f"{copy}-wal").stat().st_size == 0


def test_a_copy_changed_locally_is_rebuilt_from_the_pages_that_differ(
    shipped: tuple[Path, str], tmp_path: Path
) -> None:
    database, replica = shipped
    copy = _fresh(replica, tmp_path, "copy.db")
    with sqlite3.connect(copy) as local:
        local.execute("CREATE TABLE local_only (x)")
    app_commits(database, 20)
    _ship_once(database, replica)
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert "rebuilt by comparing pages" in result.stdout, result.stdout
    assert _file_digest(copy) == _file_digest(_fresh(replica, tmp_path, "fresh.db"))
    assert content_digest(copy) == content_digest(database)


def test_a_copy_that_cannot_be_proven_is_refused_and_left_alone(shipped: tuple[Path, str], tmp_path: Path) -> None:
    _database, replica = shipped
    stranger = tmp_path / "stranger.db"
    with sqlite3.connect(stranger) as other:
        other.execute("PRAGMA journal_mode=WAL")
        other.execute("CREATE TABLE t (x)")
    untouched = _file_digest(stranger)
    result = _restore(replica, stranger, "--delta")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "holds no walship record" in result.stderr
    assert "Traceback" not in result.stderr
    assert _file_digest(stranger) == untouched

    # A copy of another database, with its own record.
    other_replica = f"file://{tmp_path / 'other-replica'}"
    _ship_once(stranger, other_replica, "--database-id", "other")
    theirs = _fresh(other_replica, tmp_path, "theirs.db")
    kept = _file_digest(theirs)
    result = _restore(replica, theirs, "--delta")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "is a copy of database 'other'" in result.stderr
    assert _file_digest(theirs) == kept


def test_delta_to_an_earlier_point_and_to_a_new_generation(shipped: tuple[Path, str], tmp_path: Path) -> None:
    database, replica = shipped
    app_commits(database, 30)
    _ship_once(database, replica)
    copy = _fresh(replica, tmp_path, "copy.db")
    # Back to sequence 0: the copy is past it, so it is rebuilt; equal to a fresh restore of that point.
    result = _restore(replica, copy, "--delta", "--sequence", "0")
    assert result.returncode == 0, result.stderr
    assert "past the point asked" in result.stdout
    assert _file_digest(copy) == _file_digest(_fresh(replica, tmp_path, "at0.db", "--sequence", "0"))
    # The spool gone: the next ship starts a new generation, which the copy takes by its pages.
    for leftover in database.parent.glob(f"{database.name}-walship*"):
        subprocess.run(["rm", "-rf", str(leftover)], check=True)
    app_commits(database, 10)
    _ship_once(database, replica)
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert "rebuilt by comparing pages: the replica's point is in generation" in result.stdout, result.stdout
    assert content_digest(copy) == content_digest(database)


def test_a_rebuild_fetches_only_the_snapshot_frames_that_differ(database: Path, tmp_path: Path) -> None:
    """A new generation's snapshot differs from the copy in one table's pages: the rebuild takes every other
    frame of it from the copy, and the copy still ends equal to a fresh restore."""
    replica = f"file://{tmp_path / 'replica'}"
    with sqlite3.connect(database) as app:
        app.execute("CREATE TABLE bulk (id INTEGER PRIMARY KEY, data BLOB)")
        app.executemany("INSERT INTO bulk (data) VALUES (?)", ((os.urandom(8000),) for _ in range(3000)))
        app.execute("CREATE TABLE hot (id INTEGER PRIMARY KEY, n INTEGER)")
        app.executemany("INSERT INTO hot (n) VALUES (?)", ((0,) for _ in range(200)))
    _ship_once(database, replica)
    copy = _fresh(replica, tmp_path, "copy.db")
    for leftover in database.parent.glob(f"{database.name}-walship*"):
        subprocess.run(["rm", "-rf", str(leftover)], check=True)  # the next ship starts a new generation
    with sqlite3.connect(database) as app:
        app.execute("UPDATE hot SET n = n + 1")
    _ship_once(database, replica)
    record = read_copy_record(copy)
    assert record is not None
    [new] = replica_generations(replica) - {record.generation}
    snapshot_bytes = sum(o.size for o in open_store(replica).list(f"generations/{new}/snapshots/"))
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert f"rebuilt by comparing pages: the replica's point is in generation {new}" in result.stdout, result.stdout
    counted = re.search(r"downloaded (\d+) bytes", result.stdout)
    assert counted is not None, result.stdout
    assert snapshot_bytes > 20 << 20
    assert int(counted[1]) < snapshot_bytes // 10, result.stdout
    assert _file_digest(copy) == _file_digest(_fresh(replica, tmp_path, "fresh.db"))
    assert content_digest(copy) == content_digest(database)


def test_follow_keeps_a_readable_copy_and_survives_sigkill(shipped: tuple[Path, str], tmp_path: Path) -> None:
    database, replica = shipped
    copy = tmp_path / "standby.db"
    argv = [WALSHIP, "--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--interval", "0.2"]
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: read_copy_record(copy) is not None, "the first restore")
        for _ in range(3):
            app_commits(database, 40)
            _ship_once(database, replica)
        wanted = _rows(database)
        wait_until(lambda: _readable_counts(copy) == wanted, "the follower to catch up", timeout=60)
        follower.send_signal(signal.SIGKILL)
        follower.wait(timeout=30)
        app_commits(database, 40)
        _ship_once(database, replica)
        follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wanted = _rows(database)
        wait_until(lambda: _readable_counts(copy) == wanted, "the restarted follower to converge", timeout=60)
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
        assert "integrity ok" in out
    finally:
        if follower.poll() is None:
            os.kill(follower.pid, signal.SIGKILL)
            follower.wait()
    assert content_digest(copy) == content_digest(database)
    record = read_copy_record(copy)
    assert record is not None
    assert record.state_digest is not None

    # Stopped, it was sealed with its pages' digest: a stat change alone (chmod) is proven harmless by it...
    copy.chmod(0o640)
    app_commits(database, 10)
    _ship_once(database, replica)
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert "segments applied" in result.stdout, result.stdout
    assert "rebuilt" not in result.stdout, result.stdout
    # ... and a local write is not.
    with sqlite3.connect(copy) as local:
        local.execute("DELETE FROM late WHERE id = 1")
    result = _restore(replica, copy, "--delta")
    assert result.returncode == 0, result.stderr
    assert "rebuilt by comparing pages: it changed since walship last wrote it" in result.stdout, result.stdout
    assert content_digest(copy) == content_digest(database)


def _rows(database: Path) -> int:
    """The application's rows in the state ``database`` holds, read as applications must read a standby."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (count,) = connection.execute("SELECT count(*) FROM late").fetchone()
    finally:
        connection.close()
    return int(count)


def _readable_counts(copy: Path) -> int | None:
    try:
        return _rows(copy)
    except sqlite3.Error:
        return None


def test_a_standby_and_a_catch_up_follow_live_writers_across_a_hand_over(
    database: Path, tmp_path: Path, spawned: list[Ship | WriterGroup], replica_url: str
) -> None:
    """Real writers, a shipper handing over to the next window: WAL segments, applied as they come; on every
    backend (SeaweedFS checks signatures and serves real ranged GETs)."""
    replica = replica_url
    writers = WriterGroup(database, [1, 2], rate=100)
    spawned.append(writers)
    first = Ship(database, replica, "--duration", "6", "--interval", "0.3", env={})
    spawned.append(first)
    wait_until(lambda: bool(replica_generations(replica)), "the first generation", timeout=60)
    old = _fresh(replica, tmp_path, "old.db")
    copy = tmp_path / "standby.db"
    argv = [WALSHIP, "--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--interval", "0.2"]
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        second = Ship(database, replica, "--duration", "12", "--interval", "0.3", "--handover-wait", "60", env={})
        spawned.append(second)
        assert first.wait() == 0, first.output[-3000:]
        time.sleep(3)
        writers.stop()
        assert second.wait() == 0, second.output[-3000:]
        assert "started generation" not in second.output, second.output[-3000:]
        wanted = content_digest(database)
        wait_until(lambda: _readable_digest(copy) == wanted, "the standby to hold every commit", timeout=60)
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
    finally:
        if follower.poll() is None:
            os.kill(follower.pid, signal.SIGKILL)
            follower.wait()
    applied = sum(int(n) for n in re.findall(r"\((\d+) segments applied", out))
    wal_segments = [o.key for o in open_store(replica).list("generations/") if o.key.endswith(".wal.zst")]
    assert len(wal_segments) >= 5, wal_segments
    # Those after its first restore came while it followed, each as its own apply, none by a rebuild.
    assert applied >= 3, out[-2000:]
    assert "rebuilt" not in out, out[-2000:]
    record = read_copy_record(copy)
    assert record is not None
    newest = max(p.sequence for o in open_store(replica).list("generations/") if (p := parse_segment_key(o.key)))
    assert record.sequence == newest
    assert content_digest(copy) == wanted

    result = _restore(replica, old, "--delta")
    assert result.returncode == 0, result.stderr
    assert "segments applied" in result.stdout, result.stdout
    assert "rebuilt" not in result.stdout, result.stdout
    assert content_digest(old) == wanted


def _readable_digest(copy: Path) -> str | None:
    try:
        return content_digest(copy)
    except sqlite3.Error:
        return None


def test_follow_once_makes_the_copy_when_there_is_none(shipped: tuple[Path, str], tmp_path: Path) -> None:
    database, replica = shipped
    copy = tmp_path / "new.db"
    result = walship("--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--once")
    assert result.returncode == 0, result.stderr
    assert "no copy there: restored whole" in result.stdout, result.stdout
    assert content_digest(copy) == content_digest(database)
    result = walship("--no-prefect", "follow", "--replica", replica, "--output", str(copy), "--once")
    assert result.returncode == 0, result.stderr
    assert "nothing to apply" in result.stdout, result.stdout


def test_a_follower_that_cannot_reach_its_replica_says_for_how_long(
    database: Path, tmp_path: Path, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No update comes while the replica is down, so ``unreached`` is what tells a flow its standby falls behind."""
    use_credentials(monkeypatch, moto_server)
    bucket = f"walship-standby-{secrets.token_hex(4)}"
    moto_server.create_bucket(bucket)
    moto = urlsplit(moto_server.endpoint)
    assert moto.hostname is not None
    assert moto.port is not None
    heard: list[tuple[float, str]] = []
    with TcpProxy(moto.hostname, moto.port) as proxy:
        replica = f"s3://{bucket}/backups/app?endpoint={proxy.endpoint}"
        app_commits(database, 20)
        _ship_once(database, replica)
        stop = threading.Event()
        copy = tmp_path / "standby.db"
        follower = threading.Thread(
            target=follow,
            args=(open_store(replica), copy),
            kwargs={"interval": 0.2, "stop": stop, "unreached": lambda s, why: heard.append((s, why))},
        )
        follower.start()
        try:
            wait_until(lambda: bool(heard) and heard[-1][0] == 0.0, "a first round that reached the replica")
            proxy.stop()
            wait_until(lambda: heard[-1][0] > 1.0, "rounds that could not reach it", timeout=90)
            assert heard[-1][1], heard[-1]
            proxy.start()
            wait_until(lambda: heard[-1][0] == 0.0, "a round that reached it again", timeout=90)
        finally:
            stop.set()
            follower.join(timeout=120)
    assert not follower.is_alive()
    assert content_digest(copy) == content_digest(database)
