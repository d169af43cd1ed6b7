"""metadata.json under concurrent writers, and rebuilt when missing or corrupt, on every backend."""

import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import ROOT, described_snapshot, take_and_upload
from walship.catalog import select_snapshot
from walship.chain import list_segment_sequences
from walship.errors import CorruptObjectError
from walship.index import add_snapshot, current_snapshots, read_index, rebuild_index, update_index
from walship.layout import METADATA_KEY
from walship.models import ReplicaMetadata, SnapshotInfo
from walship.restore import restore_snapshot
from walship.storage import ObjectStore

THREADS, PER_THREAD = 8, 5
PROCESSES, PER_PROCESS = 4, 5
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic(writer: int, n: int) -> SnapshotInfo:
    """A distinct index entry for writer ``writer``'s ``n``-th update (no object behind it)."""
    created = _EPOCH + timedelta(hours=writer, seconds=n)
    generation = f"{created:%Y%m%dT%H%M%SZ}-{writer:08x}"  # deterministic, unlike new_generation
    return described_snapshot(generation, n, created, size=100 + n, sha256=f"{writer:032x}{n:032x}")


# A writer process: says it is ready, waits for the start signal so that all
# of them race from the same moment, then records its entries one by one.
_WORKER = """
import sys, time
from pathlib import Path
from tests.test_index import synthetic
from walship.index import add_snapshot
from walship.storage import open_store
store, writer, count, signals = open_store(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
(signals / f"ready-{writer}").touch()
while not (signals / "go").exists():
    time.sleep(0.005)
for n in range(count):
    add_snapshot(store, synthetic(writer, n))
"""


def _recorded_keys(store: ObjectStore) -> set[str]:
    metadata, _ = read_index(store)
    assert metadata is not None
    assert metadata.snapshot_count == len(metadata.snapshots)
    return {s.key for s in metadata.snapshots}


class TestConcurrentWriters:
    """Writers racing on metadata.json never lose each other's update."""

    def test_threads(self, store: ObjectStore) -> None:
        """8 threads adding 5 entries each, all at once: the index holds all 40."""
        start = threading.Barrier(THREADS)
        errors: list[BaseException] = []

        def write(writer: int) -> None:
            try:
                start.wait()
                for n in range(PER_THREAD):
                    add_snapshot(store, synthetic(writer, n))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        expected = {synthetic(w, n).key for w in range(THREADS) for n in range(PER_THREAD)}
        assert _recorded_keys(store) == expected

    def test_processes(self, replica_url: str, store: ObjectStore, tmp_path: Path) -> None:
        """4 processes adding 5 entries each, released together: the index holds all 20."""
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", _WORKER, replica_url, str(w), str(PER_PROCESS), str(tmp_path)], cwd=ROOT
            )
            for w in range(PROCESSES)
        ]
        try:
            deadline = time.monotonic() + 120
            while not all((tmp_path / f"ready-{w}").exists() for w in range(PROCESSES)):
                assert time.monotonic() < deadline, "writer processes did not start"
                assert all(p.poll() is None for p in workers), "a writer process died before the start"
                time.sleep(0.02)
            (tmp_path / "go").touch()
            assert [p.wait(timeout=300) for p in workers] == [0] * PROCESSES
        finally:
            for process in workers:
                process.kill()
        expected = {synthetic(w, n).key for w in range(PROCESSES) for n in range(PER_PROCESS)}
        assert _recorded_keys(store) == expected

    def test_a_write_between_read_and_put_is_kept(self, store: ObjectStore) -> None:
        """Another writer that wins between our read and our put is re-read, not overwritten."""
        add_snapshot(store, synthetic(0, 0))
        calls = 0

        def change(metadata: ReplicaMetadata) -> ReplicaMetadata:
            nonlocal calls
            calls += 1
            if calls == 1:
                add_snapshot(store, synthetic(1, 0))  # the racing writer
            return metadata.model_copy(update={"latest_wal_sequence": 42})

        update_index(store, change)
        metadata, _ = read_index(store)
        assert metadata is not None
        assert calls == 2
        assert {s.key for s in metadata.snapshots} == {synthetic(0, 0).key, synthetic(1, 0).key}
        assert metadata.latest_wal_sequence == 42


class TestRebuild:
    """A missing or corrupt index is rebuilt from a listing of the objects."""

    def test_missing_index_is_rebuilt(self, store: ObjectStore, database: Path) -> None:
        """With metadata.json deleted, rebuild_index and the next update both restore every entry."""
        first, second = take_and_upload(store, database), take_and_upload(store, database)
        store.delete([METADATA_KEY])
        rebuilt = rebuild_index(store)
        assert [s.key for s in rebuilt.snapshots] == [first.key, second.key]
        assert (rebuilt.database_id, rebuilt.latest_snapshot, rebuilt.snapshot_count) == ("app.db", second.key, 2)
        third = take_and_upload(store, database)
        assert _recorded_keys(store) == {first.key, second.key, third.key}

    def test_corrupt_index_is_rebuilt_on_the_next_update(self, store: ObjectStore, database: Path) -> None:
        """Garbage in metadata.json is replaced at the next update by the listing's snapshots plus the update."""
        first = take_and_upload(store, database)
        store.put_bytes(METADATA_KEY, b"\x00\xffnot json{{")
        with pytest.raises(CorruptObjectError, match="--rebuild-index"):
            read_index(store)
        add_snapshot(store, synthetic(0, 0))
        assert _recorded_keys(store) == {first.key, synthetic(0, 0).key}

    def test_a_snapshot_repairs_a_corrupt_index(self, store: ObjectStore, database: Path) -> None:
        """The snapshot pipeline checks the database id from the objects and rewrites the index whole."""
        first = take_and_upload(store, database)
        store.put_bytes(METADATA_KEY, b"garbage")
        second = take_and_upload(store, database)
        assert _recorded_keys(store) == {first.key, second.key}

    def test_an_index_from_a_newer_walship_is_not_overwritten(self, store: ObjectStore, database: Path) -> None:
        """An index of a newer format is refused, never rebuilt over (that would drop what it added)."""
        take_and_upload(store, database)
        newer = b'{"format_version": 99, "snapshots": []}'
        store.put_bytes(METADATA_KEY, newer)
        with pytest.raises(CorruptObjectError, match="upgrade walship"):
            add_snapshot(store, synthetic(0, 0))
        assert store.get_bytes(METADATA_KEY, max_size=1 << 10)[0] == newer

    def test_an_index_of_format_1_is_written_back_as_format_2(self, store: ObjectStore, database: Path) -> None:
        """Format 2 may hold snapshots whose SHA-256 is at their end: an older walship refuses it."""
        take_and_upload(store, database)
        older = read_index(store)[0]
        assert older is not None
        store.put_bytes(METADATA_KEY, older.model_copy(update={"format_version": 1}).model_dump_json().encode())
        add_snapshot(store, synthetic(0, 0))
        written = read_index(store)[0]
        assert written is not None
        assert written.format_version == 2
        assert any(s.sha256_at_end for s in written.snapshots)


class TestRestoreWithoutTheIndex:
    """Restore chooses from a listing: a missing, corrupt or stale index changes nothing."""

    def test_restore_ignores_a_missing_corrupt_or_stale_index(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        """Snapshot plus shipped segments restore to the source whatever metadata.json says."""
        # Imported here: the writer processes above import this module, and test_ship imports Prefect.
        from tests.test_ship import Running

        running = Running(database, store, tmp_path / "spool")
        running.run_while_writing(1.5, count=2, rate=200)
        [snapshot] = current_snapshots(store)
        expected = content_digest(database)
        # A rebuild also finds the newest shipped segment (this loop, unlike the flow, never recorded it).
        assert rebuild_index(store).latest_wal_sequence == list_segment_sequences(store, snapshot.generation)[-1]
        lying = ReplicaMetadata(snapshots=[synthetic(0, 0)]).model_dump_json().encode()
        for damage, body in (("missing", None), ("corrupt", b"garbage"), ("stale", lying)):
            store.delete([METADATA_KEY])
            if body is not None:
                store.put_bytes(METADATA_KEY, body)
            chosen = select_snapshot(current_snapshots(store))
            assert chosen == snapshot, damage
            result = restore_snapshot(store, chosen, tmp_path / f"{damage}.db")
            assert result.segments_applied > 0, damage
            assert content_digest(tmp_path / f"{damage}.db") == expected, damage
