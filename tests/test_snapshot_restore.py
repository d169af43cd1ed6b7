"""Snapshot and restore through the core, on every backend, with live writers."""

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bench.workload import committed_counts, content_digest, expected_state
from tests.conftest import Writers
from tests.helpers import rewrite_object, take_and_upload
from tests.shipping import wait_until
from walship.catalog import list_snapshots, select_snapshot
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError, UsageError
from walship.index import current_snapshots, read_index, rebuild_index
from walship.layout import METADATA_KEY
from walship.restore import restore_snapshot
from walship.status import replica_status
from walship.storage import ObjectStore


def _restore_newest(store: ObjectStore, output: Path, **kwargs: object) -> None:
    restore_snapshot(store, select_snapshot(current_snapshots(store)), output, **kwargs)  # type: ignore[arg-type]


class TestSnapshotOfALiveDatabase:
    """A snapshot taken while writer processes commit restores to exactly one committed state."""

    def test_restore_equals_source_at_snapshot_point(
        self, store: ObjectStore, database: Path, base_database: Path, writers: Writers, tmp_path: Path
    ) -> None:
        # Under load the writers' processes take a while to start: wait for each one's first commit.
        wait_until(lambda: all(committed_counts(database).get(w, 0) > 0 for w in (1, 2, 3)), "three writers", 60)
        info = take_and_upload(store, database)
        time.sleep(0.5)
        writers.stop()
        restored = tmp_path / "restored.db"
        _restore_newest(store, restored)
        assert not Path(f"{restored}-wal").exists()

        counts = committed_counts(restored)
        source_counts = committed_counts(database)
        # The writers were really running on both sides of the snapshot.
        assert all(counts.get(w, 0) > 0 for w in (1, 2, 3))
        assert sum(source_counts.values()) > sum(counts.values())
        expected = tmp_path / "expected.db"
        expected_state(base_database, expected, 11, counts)
        assert content_digest(restored) == content_digest(expected)
        assert info.page_count * info.page_size == restored.stat().st_size

    def test_index_records_every_snapshot(self, store: ObjectStore, database: Path) -> None:
        first = take_and_upload(store, database)
        second = take_and_upload(store, database)
        metadata, _ = read_index(store)
        assert metadata is not None
        assert (metadata.snapshot_count, metadata.latest_snapshot, metadata.database_id) == (2, second.key, "app.db")
        assert [s.key for s in metadata.snapshots] == [first.key, second.key]
        assert metadata.latest_snapshot_time == second.created_at
        assert rebuild_index(store).snapshots == metadata.snapshots
        # The objects' own descriptions: all but the SHA-256, which is at their end.
        assert list_snapshots(store) == [s.model_copy(update={"sha256": ""}) for s in metadata.snapshots]

    def test_restore_by_time_picks_the_snapshot_of_that_time(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        first = take_and_upload(store, database)
        take_and_upload(store, database)
        chosen = select_snapshot(current_snapshots(store), before=first.created_at + timedelta(microseconds=1))
        assert chosen.key == first.key
        with pytest.raises(NotFoundError, match="no snapshot taken at or before"):
            select_snapshot(current_snapshots(store), before=first.created_at - timedelta(days=1))

    def test_status_rebuilds_a_missing_index(self, store: ObjectStore, database: Path) -> None:
        take_and_upload(store, database)
        take_and_upload(store, database)
        store.delete([METADATA_KEY])
        status = replica_status(store)
        assert (status.index, status.snapshot_count, status.database_id) == ("missing", 2, "app.db")


class TestBadInput:
    """Bad input is refused before anything is written."""

    def test_missing_database(self, store: ObjectStore, tmp_path: Path) -> None:
        with pytest.raises(UsageError, match="does not exist"):
            take_and_upload(store, tmp_path / "nope.db")
        assert list(store.list()) == []

    def test_not_a_database(self, store: ObjectStore, tmp_path: Path) -> None:
        path = tmp_path / "notes.txt"
        path.write_text("hello, I am not SQLite\n" * 10)
        with pytest.raises(UsageError, match="not a SQLite database"):
            take_and_upload(store, path)
        assert list(store.list()) == []

    def test_another_database_in_the_same_replica(self, store: ObjectStore, database: Path) -> None:
        take_and_upload(store, database, database_id="app.db")
        with pytest.raises(UsageError, match=r"holds database 'app\.db'"):
            take_and_upload(store, database, database_id="other.db")

    def test_restore_refuses_wrong_database_id(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        take_and_upload(store, database)
        with pytest.raises(UsageError, match=r"holds database 'app\.db', not 'billing\.db'"):
            _restore_newest(store, tmp_path / "out.db", expected_database_id="billing.db")
        assert list(tmp_path.glob("out.db*")) == []

    def test_restore_refuses_existing_target_without_force(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        take_and_upload(store, database)
        target = tmp_path / "existing.db"
        target.write_bytes(b"precious")
        with pytest.raises(UsageError, match="--force"):
            _restore_newest(store, target)
        assert target.read_bytes() == b"precious"

    def test_force_replaces_and_drops_a_stale_wal(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        take_and_upload(store, database)
        target = tmp_path / "existing.db"
        target.write_bytes(b"precious")
        Path(f"{target}-wal").write_bytes(b"stale wal that must not be replayed")
        _restore_newest(store, target, force=True)
        assert not Path(f"{target}-wal").exists()
        assert content_digest(target) == content_digest(database)

    def test_empty_replica(self, store: ObjectStore, tmp_path: Path) -> None:
        with pytest.raises(NotFoundError, match="no snapshot"):
            _restore_newest(store, tmp_path / "out.db")


class TestDamagedObjects:
    """A damaged snapshot stops the restore with an error naming it, and writes nothing."""

    @pytest.mark.parametrize("change", ["flip", "truncate"])
    def test_damage_is_detected(self, store: ObjectStore, database: Path, tmp_path: Path, change: str) -> None:
        info = take_and_upload(store, database)
        rewrite_object(store, info.key, change)
        out_dir = tmp_path / "out"
        out_dir.mkdir()
        with pytest.raises((ChecksumMismatchError, CorruptObjectError), match=info.key):
            _restore_newest(store, out_dir / "restored.db")
        assert os.listdir(out_dir) == []

    @pytest.mark.parametrize("lie", [{"sha256": "0" * 64}, {"raw_size": 4096}], ids=["checksum", "size"])
    def test_index_that_lies_about_the_object(
        self, lie: dict[str, object], store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        info = take_and_upload(store, database)
        lying = info.model_copy(update=lie)
        told = "the index and the object disagree on its checksum \\(the object records "
        with pytest.raises(ChecksumMismatchError, match=f"verify {info.key}: {told}"):
            restore_snapshot(store, lying, tmp_path / "out.db")
        assert not (tmp_path / "out.db").exists()
