"""WAL shipping through the core: capture, upload, continuity, point-in-time restore."""

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard

from bench.workload import committed_counts, content_digest, expected_state
from flows.ship import wal_ship_flow
from tests.conftest import Writers
from walship.catalog import select_snapshot
from walship.chain import list_segment_sequences
from walship.errors import UsageError
from walship.index import current_snapshots, read_index
from walship.lease import holder_for
from walship.models import SnapshotInfo
from walship.restore import restore_snapshot
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.status import replica_status
from walship.storage import ObjectStore, open_store
from walship.upload import upload_pending

SEED = 11


class Running:
    """An in-process shipper (apsw) over a database that writer processes change."""

    def __init__(self, database: Path, store: ObjectStore, spool_dir: Path, **config: Any) -> None:
        self.database, self.store = database, store
        self.spool = Spool(spool_dir)
        self.shipper = Shipper(database, self.spool, ShipConfig(database_id="app.db", **config))
        self.opened = self.shipper.open()
        self.generations = [self.opened.new_generation] if self.opened.new_generation else []
        self.checkpoints = 0
        self.reasons: list[str] = []

    def step(self) -> None:
        result = self.shipper.sync()
        if result.new_generation:
            self.generations.append(result.new_generation)
            self.reasons.append(result.reason or "")
        self.checkpoints += result.checkpointed
        if self.spool.pending():
            upload_pending(self.store, self.spool, holder=holder_for(self.database))

    def run(self, seconds: float, interval: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.step()
            time.sleep(interval)

    def run_while_writing(self, seconds: float, count: int, rate: float, interval: float = 0.2) -> None:
        """Ship for ``seconds`` while writer processes commit, stop them, then end the run."""
        writers = Writers(self.database, seed=SEED, count=count, rate=rate)
        try:
            self.run(seconds, interval)
        finally:
            writers.stop()
        self.close()

    def close(self) -> None:
        """End as the flow ends a run: capture and checkpoint everything, upload, let go."""
        result = self.shipper.finish()
        self.checkpoints += result.checkpointed
        if self.spool.pending():
            upload_pending(self.store, self.spool, holder=holder_for(self.database))
        self.shipper.close()
        self.spool.close()


def _checkpoint_truncate(database: Path) -> None:
    """The application checkpoints with TRUNCATE (in its own process)."""
    code = f"import sqlite3; sqlite3.connect({str(database)!r}).execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchall()"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _restore(store: ObjectStore, output: Path, **kwargs: Any) -> Any:
    snapshots = current_snapshots(store)
    chosen = select_snapshot(
        snapshots,
        generation=kwargs.get("generation"),
        sequence=kwargs.get("until_sequence"),
        before=kwargs.get("until_time"),
    )
    return restore_snapshot(store, chosen, output, **{k: v for k, v in kwargs.items() if k != "generation"})


class TestShippingUnderLoad:
    """Writers commit while the shipper runs; the restore equals the source exactly."""

    def test_restore_equals_source(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        running = Running(database, store, tmp_path / "spool", checkpoint_pages=300)
        running.run_while_writing(4.0, count=3, rate=250)
        assert len(running.generations) == 1, running.generations

        restored = tmp_path / "restored.db"
        result = _restore(store, restored)
        assert result.segments_applied > 3
        assert committed_counts(restored) == committed_counts(database)
        assert content_digest(restored) == content_digest(database)
        # The shipper owned checkpointing along the way (and the chain survived its WAL restarts).
        assert running.checkpoints > 0

    def test_an_idle_database_ships_nothing(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        running = Running(database, store, tmp_path / "spool")
        running.step()  # the generation's snapshot
        before = sorted(o.key for o in store.list())
        for _ in range(20):
            result = running.shipper.sync()
            assert (result.segments, result.new_generation) == (0, None)
            assert running.spool.pending() == []
        running.close()
        assert sorted(o.key for o in store.list()) == before


class TestContinuity:
    """A restarted shipper continues its generation when it can prove it, and starts a new one when not."""

    def test_restart_continues_the_generation(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        # Three runs; writers commit during the first only.
        Running(database, store, tmp_path / "spool", checkpoint_pages=200).run_while_writing(1.5, count=2, rate=200)
        for _ in range(2):
            running = Running(database, store, tmp_path / "spool", checkpoint_pages=200)
            running.run(1.5)
            running.close()
        snapshots = current_snapshots(store)
        assert len({s.generation for s in snapshots}) == 1
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)

    def test_wal_reset_while_down_without_a_map_starts_a_generation(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        # A spool written before page digest maps existed: no resync (tests/test_resync.py), a new generation.
        writers = Writers(database, seed=SEED, count=2, rate=200)
        running = Running(database, store, tmp_path / "spool")
        running.run(1.0)
        running.close()
        time.sleep(0.5)
        writers.stop()
        _checkpoint_truncate(database)
        shutil.rmtree(tmp_path / "spool" / "pages")
        running = Running(database, store, tmp_path / "spool")
        assert running.opened.new_generation is not None
        assert running.opened.resync is None
        assert running.opened.reason == (
            "the WAL was checkpointed and removed while nobody watched "
            "(the spool has no page digest map (first run of this walship version?), so no resync)"
        )
        running.close()
        generations = {s.generation for s in current_snapshots(store)}
        assert len(generations) == 2
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)


class TestEmergencyCheckpoint:
    """Past the emergency limit the shipper truncates the WAL and starts a generation, losing nothing."""

    def test_truncate_then_new_generation(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        running = Running(database, store, tmp_path / "spool", checkpoint_pages=100, emergency_wal_bytes=1 << 20)
        running.run_while_writing(2.0, count=2, rate=200)
        assert len(running.generations) > 1
        assert running.reasons
        assert all(reason == "the WAL passed 1048576 bytes" for reason in running.reasons), running.reasons
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)


class TestSnapshotBesideCapture:
    """A snapshot within the generation is copied beside capture: segments keep coming while it is made."""

    def test_segments_while_a_snapshot_is_copied(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        # zstd level 19 makes the snapshot's compression take seconds on this 4 MiB database.
        running = Running(database, store, tmp_path / "spool", snapshot_seconds=0.5, level=19)
        writers = Writers(database, seed=SEED, count=2, rate=200)
        during = 0
        try:
            deadline = time.monotonic() + 60
            while not running.shipper.snapshot_in_progress and time.monotonic() < deadline:
                running.step()
                time.sleep(0.1)
            assert running.shipper.snapshot_in_progress, "no snapshot began within 60 s"
            while running.shipper.snapshot_in_progress:
                during += running.shipper.sync().segments
                time.sleep(0.2)
        finally:
            writers.stop()
        running.close()
        print(f"\n{during} segments captured while the snapshot was copied and compressed")
        assert during > 0
        snapshots = current_snapshots(store)
        assert snapshots[0].sequence == 0
        assert any(s.sequence > 0 for s in snapshots), snapshots
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)


class TestPointInTime:
    """Every shipped point restores to exactly one consistent committed state."""

    def test_every_sequence_and_its_time(
        self, store: ObjectStore, database: Path, base_database: Path, tmp_path: Path
    ) -> None:
        running = Running(database, store, tmp_path / "spool", checkpoint_pages=150)
        running.run_while_writing(3.0, interval=0.3, count=2, rate=200)
        [snapshot] = current_snapshots(store)
        sequences = list_segment_sequences(store, snapshot.generation)
        assert sequences == list(range(1, len(sequences) + 1))
        assert len(sequences) >= 5
        status = replica_status(store)
        assert (status.segments_in_generation, status.newest_segment_sequence) == (len(sequences), sequences[-1])

        previous: dict[int, int] = {}
        for sequence in sorted({0, *sequences[:: max(1, len(sequences) // 5)], sequences[-1]}):
            out = tmp_path / f"at-{sequence}.db"
            result = _restore(store, out, until_sequence=sequence, generation=snapshot.generation)
            assert result.position.sequence == sequence
            counts = committed_counts(out)
            assert all(counts.get(w, 0) >= n for w, n in previous.items())
            expected = tmp_path / f"expected-{sequence}.db"
            expected_state(base_database, expected, SEED, counts)
            assert content_digest(out) == content_digest(expected)
            previous = counts

        # By time: the segment captured at T is the newest state at T.
        middle = sequences[len(sequences) // 2]
        by_sequence = _restore(store, tmp_path / "seq.db", until_sequence=middle, generation=snapshot.generation)
        info = _segment_time(store, snapshot, middle)
        by_time = _restore(store, tmp_path / "time.db", until_time=info)
        assert by_time.position == by_sequence.position
        assert content_digest(tmp_path / "time.db") == content_digest(tmp_path / "seq.db")


def _segment_time(store: ObjectStore, snapshot: SnapshotInfo, sequence: int) -> Any:
    from walship.chain import read_segment_info
    from walship.layout import format_segment_key

    return read_segment_info(store, format_segment_key(snapshot.generation, sequence)).captured_at


@pytest.mark.usefixtures("prefect_api")
class TestShipFlow:
    """The flow ships once, records the position, and publishes its artifact."""

    def test_once(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        report = wal_ship_flow(database=database, replica=replica_url, once=True, spool_dir=tmp_path / "spool")
        assert len(report.generations_started) == 1
        assert report.snapshots_uploaded
        # Fewer pages than the application's autocheckpoint (1,000): the
        # database file stays untouched, so the next run can prove continuity.
        writers = Writers(database, seed=SEED, count=1, rate=100)
        time.sleep(0.5)
        writers.stop()
        report = wal_ship_flow(database=database, replica=replica_url, once=True, spool_dir=tmp_path / "spool")
        assert report.generations_started == []
        assert report.segments_uploaded == 1
        assert report.position is not None
        metadata, _ = read_index(open_store(replica_url))
        assert metadata is not None
        assert metadata.latest_wal_sequence == report.position.sequence


class TestSnapshotsWithinGeneration:
    """The shipper snapshots its own generation periodically, so restores start from a recent state."""

    def test_periodic_snapshots(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """Snapshots at exact WAL positions: the newest restore replays only the WAL after the last one."""
        from walship.verify import verify_replica

        running = Running(database, store, tmp_path / "spool", checkpoint_pages=200, snapshot_seconds=0.5)
        running.run_while_writing(3.0, count=2, rate=200)
        snapshots = current_snapshots(store)
        assert len({s.generation for s in snapshots}) == 1
        assert len(snapshots) >= 3, [s.key for s in snapshots]
        assert [s.sequence for s in snapshots] == sorted({s.sequence for s in snapshots})
        assert all(s.wal_position is not None and s.wal_position.sequence == s.sequence for s in snapshots)
        newest_sequence = list_segment_sequences(store, snapshots[0].generation)[-1]

        restored = tmp_path / "restored.db"
        result = _restore(store, restored)
        assert result.snapshot.key == snapshots[-1].key
        assert result.segments_applied == newest_sequence - snapshots[-1].sequence
        assert content_digest(restored) == content_digest(database)
        # A point before the newest snapshot restores from an earlier one.
        early = tmp_path / "early.db"
        before_third = snapshots[2].sequence - 1
        point = _restore(store, early, generation=snapshots[1].generation, until_sequence=before_third)
        assert point.snapshot.key == snapshots[1].key
        # The drill rebuilds the newest snapshot's state from an earlier one and finds them equal.
        report = verify_replica(store)
        assert report.passed, report.failed
        assert any(check.name == "recorded-state" and check.ok for check in report.checks)


class TestSealedSpool:
    """Segments are compressed once, at capture, and uploaded as spooled; raw ones from older spools are refused."""

    def _capture_under_writes(self, database: Path, store: ObjectStore, spool_dir: Path) -> Running:
        running = Running(database, store, spool_dir, checkpoint_pages=100_000)
        upload_pending(store, running.spool, holder=holder_for(database))  # the generation's snapshot
        writers = Writers(database, seed=SEED, count=2, rate=200)
        try:
            time.sleep(1.0)
        finally:
            writers.stop()
        running.shipper.sync()
        return running

    def test_segments_are_uploaded_byte_for_byte_as_spooled(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        running = self._capture_under_writes(database, store, tmp_path / "spool")
        segments = [entry for entry in running.spool.pending() if entry.segment is not None]
        assert segments
        spooled = {}
        for entry in segments:
            assert entry.segment is not None
            data = running.spool.data_path(entry).read_bytes()
            assert data[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame
            assert len(data) == entry.segment.compressed_size < entry.segment.raw_size
            spooled[entry.segment.key] = data
        upload_pending(store, running.spool, holder=holder_for(database))
        for key, data in spooled.items():
            with store.open(key) as stream:
                assert stream.read() == data
        running.close()
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)

    def test_a_spool_holding_raw_segments_is_refused_until_moved_aside(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        """Raw WAL as an older walship spooled it (``<seq>.wal``, ``compressed_size: 0``) is never uploaded:
        one line names the fix, and a spool moved aside lets the next run start a new generation."""
        spool_dir = tmp_path / "spool"
        running = self._capture_under_writes(database, store, spool_dir)
        raw_files = []
        for entry in [e for e in running.spool.pending() if e.segment is not None]:
            assert entry.segment is not None
            sealed = running.spool.data_path(entry)
            raw = sealed.with_name(f"{entry.sequence:020d}.wal")
            raw.write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(sealed.read_bytes()))
            sealed.unlink()
            older = entry.model_copy(
                update={
                    "segment": entry.segment.model_copy(update={"compressed_size": 0, "level": 0}),
                    "stored_sha256": "",
                }
            )
            raw.with_suffix(".json").write_text(older.model_dump_json())
            raw_files.append(raw)
        assert raw_files
        running.shipper.close()
        running.spool.close()

        with pytest.raises(UsageError) as refused:
            Running(database, store, spool_dir)
        message = str(refused.value)
        assert "\n" not in message
        assert f"holds {len(raw_files)} WAL segments an older walship spooled uncompressed" in message
        assert "move the spool aside" in message
        assert all(raw.exists() for raw in raw_files)
        assert list_segment_sequences(store, running.generations[0]) == []

        spool_dir.rename(tmp_path / "older-spool")
        again = Running(database, store, spool_dir)
        assert again.generations
        assert again.generations[0] != running.generations[0]
        again.close()
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)

    def test_spooled_segments_survive_a_restart(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        # A shipper killed before its upload: the next one must find the sealed segments it spooled.
        running = self._capture_under_writes(database, store, tmp_path / "spool")
        spooled = [entry for entry in running.spool.pending() if entry.segment is not None]
        assert spooled
        running.shipper.close()
        running.spool.close()
        again = Running(database, store, tmp_path / "spool")
        for entry in spooled:
            assert again.spool.data_path(entry).exists(), entry.segment
        again.close()
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)
