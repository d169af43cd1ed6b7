"""A standby takes a segment's pages as one atomic step: readers in other processes never see a torn state,
a killed apply leaves the old state or the new one, and the result is the bytes a fresh restore gives."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from tests.shipping import app_commits
from tests.standby_source import CONSISTENT, Pages, Source
from walship.chain import list_segment_keys
from walship.errors import StandbyBusyError, StandbyChangedError, UsageError
from walship.index import current_snapshots
from walship.lease import holder_for
from walship.restore import restore_snapshot
from walship.segment import WalSegment, download_segment, restored_state
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.sqlite import integrity_check
from walship.standby import Standby, segment_pages
from walship.storage import open_store
from walship.upload import upload_pending

ROOT = Path(__file__).resolve().parent.parent


def _state(path: Path) -> tuple[int, int, int]:
    """(consistent, n, filler bytes) of a database file, read by a fresh connection of this process's SQLite."""
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        consistent, n, size = connection.execute(CONSISTENT).fetchall()[0]
        return int(consistent), int(n), int(size or 0)
    finally:
        connection.close()


def _digest(path: Path) -> str:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        page_size, pages = (connection.execute(f"PRAGMA {p}").fetchall()[0][0] for p in ("page_size", "page_count"))
    finally:
        connection.close()
    with path.open("rb") as database:
        return restored_state(database, page_size, pages)


@pytest.fixture
def source(tmp_path: Path) -> Source:
    """A source at its first state, and the standby beside it a copy of that state (``tmp_path / 'standby.db'``)."""
    made = Source(tmp_path / "source.db")
    (tmp_path / "standby.db").write_bytes(made.path.read_bytes())
    return made


def _rounds(source: Source, count: int) -> list[tuple[Pages, int, int]]:
    """``count`` rounds of commits (every fifth ends with a shrink), each as (pages, page count, n)."""
    rounds = []
    for number in range(1, count + 1):
        source.commit(source.rng.randint(5, 40))
        if number % 5 == 0:
            source.shrink()
        pages, page_count = source.take()
        rounds.append((pages, page_count, source.n))
    return rounds


class TestApply:
    def test_shipped_segments_applied_equal_a_fresh_restore(self, database: Path, tmp_path: Path) -> None:
        """Segments of a real shipper (a VACUUM among them) applied to a restore of the first one give, byte for
        byte, what a fresh restore of the last one gives."""
        store = open_store(f"file://{tmp_path / 'replica'}")
        spool = Spool(tmp_path / "spool")
        shipper = Shipper(database, spool, ShipConfig(database_id="app.db"))
        shipper.open()
        vacuum = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM late WHERE id % 3'); "
        vacuum += "c.commit(); c.execute('VACUUM'); c.close()"
        for step in (lambda: app_commits(database, 30), lambda: app_commits(database, 400)) * 2 + (
            lambda: subprocess.run([sys.executable, "-c", vacuum, str(database)], check=True),
        ):
            step()
            shipper.sync()
            upload_pending(store, spool, holder=holder_for(database))
        shipper.close()
        spool.close()
        [snapshot] = current_snapshots(store)
        keys = list_segment_keys(store, snapshot.generation)
        assert sorted(keys) == list(range(1, len(keys) + 1))
        assert len(keys) >= 5

        standby = tmp_path / "standby.db"
        restore_snapshot(store, snapshot, standby, until_sequence=1)
        counts = []
        with Standby(standby) as applying:
            for sequence in sorted(keys)[1:]:
                raw = tmp_path / f"{sequence}.wal"
                with raw.open("wb") as out:
                    segment = download_segment(store, keys[sequence], out, None)
                assert isinstance(segment, WalSegment)
                with segment_pages(raw, segment, tmp_path) as pages:
                    assert pages.page_count == segment.db_size_pages
                    counts.append(pages.page_count)
                    applying.apply(pages.pages(), pages.page_count)
            assert applying.checkpoint()
        fresh = tmp_path / "fresh.db"
        restore_snapshot(store, snapshot, fresh)
        assert standby.read_bytes() == fresh.read_bytes()
        assert _digest(standby) == _digest(fresh)
        assert counts[-1] < max(counts)  # the VACUUM shrank it
        integrity_check(standby)

    def test_a_shrink_leaves_the_source_bytes(self, source: Source, tmp_path: Path) -> None:
        standby = tmp_path / "standby.db"
        source.commit(200)
        grown = source.take()
        source.shrink()
        shrunk = source.take()
        assert shrunk[1] < grown[1]
        with Standby(standby) as applying:
            applying.apply(*grown)
            applied = applying.apply(*shrunk)
            assert applied.page_count == shrunk[1]
            assert _state(standby) == source.state()  # read through the WAL, before any checkpoint
            assert applying.checkpoint()
        assert standby.read_bytes() == source.path.read_bytes()
        assert standby.stat().st_size == shrunk[1] * 4096

    def test_a_long_wal_is_checkpointed_and_begun_again(self, source: Source, tmp_path: Path) -> None:
        standby = tmp_path / "standby.db"
        with Standby(standby, checkpoint_frames=20) as applying:
            done = [applying.apply(pages, count) for pages, count, _ in _rounds(source, 12)]
            assert any(a.checkpointed for a in done)
            assert _state(standby) == source.state()
        assert _state(standby) == source.state()
        integrity_check(standby)


_READER = """
import json, sys, os
path, stop, consistent_query, library = sys.argv[1:5]
if library == "apsw":
    import apsw
    c = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    c.set_busy_timeout(10_000)
    failure = apsw.Error
else:
    import sqlite3
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10)
    failure = sqlite3.Error
reads = torn = 0
errors, seen = [], set()
print("reading", flush=True)
while not os.path.exists(stop):
    try:
        c.execute("BEGIN")
        consistent, n, _ = c.execute(consistent_query).fetchone()
        c.execute("COMMIT")
    except failure as exc:
        errors = [*errors, str(exc)][:5]  # the first few say why
        continue
    reads += 1
    seen.add(n)
    torn += not consistent
print(json.dumps({"reads": reads, "torn": torn, "errors": errors, "states": len(seen)}))
"""


def _locks_held_by_us(path: Path) -> int:
    """How many POSIX locks this process holds on ``path`` (Linux's /proc/locks)."""
    inode, pid = str(path.stat().st_ino), str(os.getpid())
    held = 0
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and fields[1] == "POSIX" and fields[4] == pid and fields[5].rsplit(":", 1)[-1] == inode:
            held += 1
    return held


class TestLocks:
    def test_applies_keep_sqlites_locks(self, source: Source, tmp_path: Path) -> None:
        """Writing and growing the WAL index never closes a descriptor of it (Python's mmap closes the duplicate
        it keeps when the mapping is closed, which would drop the process's locks, SQLite's included)."""
        standby = tmp_path / "standby.db"
        source.commit(60)
        pages, count = source.take()
        with Standby(standby, checkpoint_frames=1 << 20) as applying:
            held = _locks_held_by_us(Path(f"{standby}-shm")), _locks_held_by_us(standby)
            for _ in range(4200 // len(pages) + 1):  # past the index's first block of 4062 frames
                applying.apply(pages, count)
            assert Path(f"{standby}-shm").stat().st_size > 32768
            assert (_locks_held_by_us(Path(f"{standby}-shm")), _locks_held_by_us(standby)) == held
            assert min(held) >= 1
        assert _state(standby) == source.state()


class TestReaders:
    def test_readers_never_see_a_torn_state(self, source: Source, tmp_path: Path) -> None:
        """Two readers in other processes, one with Python's SQLite and one with apsw's, loop over the
        consistency query while 40 applies, shrinks and checkpoints go on: no error, no inconsistent state, and
        they saw the states move."""
        standby, stop = tmp_path / "standby.db", tmp_path / "stop"
        rounds = _rounds(source, 40)
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", _READER, str(standby), str(stop), CONSISTENT, library],
                stdout=subprocess.PIPE,
                text=True,
            )
            for library in ("sqlite3", "apsw")
        ]
        try:
            for reader in readers:
                assert reader.stdout is not None
                assert reader.stdout.readline().strip() == "reading"
            with Standby(standby, checkpoint_frames=150) as applying:
                for pages, count, _ in rounds:
                    applying.apply(pages, count)
                    time.sleep(0.01)  # a few reads per state
            stop.touch()
            seen = [json.loads(reader.communicate(timeout=30)[0]) for reader in readers]
        finally:
            for reader in readers:
                reader.kill()
        for one in seen:
            assert one["errors"] == []
            assert one["torn"] == 0
            assert one["reads"] > 40
            assert one["states"] > 10
        assert _state(standby) == source.state()


_APPLIER = """
import pickle, sys, time
from pathlib import Path
from walship.standby import Standby
rounds = pickle.loads(Path(sys.argv[2]).read_bytes())
pause_in = int(sys.argv[3])
def paused(pages):
    for at, page in enumerate(pages):
        if at == len(pages) // 2:
            print("midway", flush=True)
            time.sleep(60)
        yield page
with Standby(Path(sys.argv[1])) as standby:
    print("open", flush=True)
    for number, (pages, count, _) in enumerate(rounds, start=1):
        standby.apply(paused(pages) if number == pause_in else pages, count)
        print(number, flush=True)
"""


class TestKilled:
    def _applier(self, standby: Path, rounds: Path, pause_in: int) -> subprocess.Popen[str]:
        command = [sys.executable, "-c", _APPLIER, str(standby), str(rounds), str(pause_in)]
        return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    def _finish(self, standby: Path, rounds: list[tuple[Pages, int, int]], source: Source) -> None:
        """A new applier goes on from the state found: it ends where the source is."""
        _, n, _ = _state(standby)
        left = [r for r in rounds if r[2] > n]
        with Standby(standby) as applying:
            for pages, count, _ in left:
                applying.apply(pages, count)
        assert _state(standby) == source.state()
        integrity_check(standby)

    def test_killed_while_writing_frames_leaves_the_old_state(self, source: Source, tmp_path: Path) -> None:
        standby, kept = tmp_path / "standby.db", tmp_path / "rounds.pickle"
        rounds = _rounds(source, 6)
        kept.write_bytes(pickle.dumps(rounds))
        applier = self._applier(standby, kept, pause_in=4)
        assert applier.stdout is not None
        lines = [applier.stdout.readline().strip() for _ in range(5)]
        assert lines == ["open", "1", "2", "3", "midway"]
        applier.send_signal(signal.SIGKILL)
        applier.wait()
        integrity_check(standby)
        assert _state(standby) == (1, rounds[2][2], _state(standby)[2])
        self._finish(standby, rounds, source)

    @pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
    def test_killed_at_any_moment_leaves_a_committed_state(self, source: Source, tmp_path: Path, delay: float) -> None:
        standby, kept = tmp_path / "standby.db", tmp_path / "rounds.pickle"
        rounds = _rounds(source, 30)
        kept.write_bytes(pickle.dumps(rounds))
        applier = self._applier(standby, kept, pause_in=0)
        assert applier.stdout is not None
        assert applier.stdout.readline().strip() == "open"
        time.sleep(delay)
        applier.send_signal(signal.SIGKILL)
        applier.wait()
        integrity_check(standby)
        consistent, n, _ = _state(standby)
        assert consistent == 1
        assert n in {0, *(r[2] for r in rounds)}
        self._finish(standby, rounds, source)


_HOLDER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute(sys.argv[2])
print("done", flush=True)
time.sleep(float(sys.argv[3]))
"""


class TestRefused:
    def _other(self, standby: Path, sql: str, hold: float) -> subprocess.Popen[str]:
        other = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(standby), sql, str(hold)], stdout=subprocess.PIPE, text=True
        )
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "done"
        return other

    def test_another_writer_holding_the_lock(self, source: Source, tmp_path: Path) -> None:
        standby = tmp_path / "standby.db"
        source.commit(3)
        pages, count = source.take()
        with Standby(standby, busy_seconds=0.1) as applying:
            other = self._other(standby, "BEGIN IMMEDIATE", 30)
            try:
                with pytest.raises(StandbyBusyError, match="open a standby read-only"):
                    applying.apply(pages, count)
            finally:
                other.kill()
                other.wait()
            applying.apply(pages, count)
        assert _state(standby) == source.state()

    def test_a_commit_of_someone_else(self, source: Source, tmp_path: Path) -> None:
        standby = tmp_path / "standby.db"
        source.commit(3)
        pages, count = source.take()
        with Standby(standby) as applying:
            self._other(standby, "UPDATE meta SET n = n + 1000", 0).wait()
            with pytest.raises(StandbyChangedError, match="did not apply"):
                applying.apply(pages, count)

    def test_not_a_wal_database(self, tmp_path: Path) -> None:
        plain = tmp_path / "plain.db"
        connection = apsw.Connection(str(plain))
        connection.execute("CREATE TABLE t (x)")
        connection.close()
        with pytest.raises(UsageError, match="not WAL"):
            Standby(plain)
        (tmp_path / "text.db").write_text("not a database\n" * 200)
        with pytest.raises(UsageError, match="cannot be opened as a SQLite database"):
            Standby(tmp_path / "text.db")
        with pytest.raises(UsageError, match="does not exist"):
            Standby(tmp_path / "missing.db")
