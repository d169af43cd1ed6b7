"""Each operation composed once: the core's runs with the core's own steps, and the verdicts both runners share."""

import contextlib
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import take_and_upload, walship
from walship.catalog import list_snapshots
from walship.errors import IncompleteError, UsageError
from walship.fleet import RetryingSteps, SharedStores
from walship.generations import ReplicaGenerations
from walship.models import RestoreResult, RestoreTarget, SnapshotInfo
from walship.original import OriginalRestoreResult
from walship.restore import StoreRestoreSteps, run_restore
from walship.retention import RetentionPolicy, StoreRetentionSteps, run_retention
from walship.snapshot import StoreSnapshotSteps, run_snapshot
from walship.storage import ObjectStore, open_store


class _Recorded(StoreRestoreSteps):
    """The core's restore steps, noting which ran."""

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store)
        self.ran: list[str] = []

    def read_snapshot(self, key: str) -> SnapshotInfo:
        self.ran.append("read_snapshot")
        return super().read_snapshot(key)

    def describe_generations(self) -> ReplicaGenerations:
        self.ran.append("describe_generations")
        return super().describe_generations()

    def restore_original(
        self, output: Path, *, force: bool, before: datetime | None, key: str | None, database_id: str | None
    ) -> OriginalRestoreResult:
        self.ran.append("restore_original")
        return super().restore_original(output, force=force, before=before, key=key, database_id=database_id)

    def restore_snapshot(
        self, snapshot: SnapshotInfo, output: Path, *, force: bool, target: RestoreTarget
    ) -> RestoreResult:
        self.ran.append("restore_snapshot")
        return super().restore_snapshot(snapshot, output, force=force, target=target)


class TestRunRestore:
    """``run_restore`` chooses the start and hands the work to its steps."""

    def test_newest_data(self, database: Path, tmp_path: Path) -> None:
        store = open_store(f"file://{tmp_path / 'replica'}")
        take_and_upload(store, database)
        steps = _Recorded(store)
        result = run_restore(steps, tmp_path / "restored.db")
        assert isinstance(result, RestoreResult)
        assert steps.ran == ["describe_generations", "restore_snapshot"]
        assert content_digest(tmp_path / "restored.db") == content_digest(database)

    def test_one_snapshot_is_described_from_its_object(self, database: Path, tmp_path: Path) -> None:
        store = open_store(f"file://{tmp_path / 'replica'}")
        info = take_and_upload(store, database)
        steps = _Recorded(store)
        result = run_restore(steps, tmp_path / "restored.db", snapshot_key=info.key)
        assert isinstance(result, RestoreResult)
        assert steps.ran == ["read_snapshot", "restore_snapshot"]
        assert result.segments_applied == 0

    def test_a_negative_sequence_is_refused_before_any_step(self, tmp_path: Path) -> None:
        steps = _Recorded(open_store(f"file://{tmp_path / 'replica'}"))
        with pytest.raises(UsageError, match="--sequence -1"):
            run_restore(steps, tmp_path / "restored.db", sequence=-1)
        assert steps.ran == []


class TestRunSnapshot:
    def test_taken_recorded_and_restorable(self, database: Path, tmp_path: Path) -> None:
        store = open_store(f"file://{tmp_path / 'replica'}")
        report = run_snapshot(StoreSnapshotSteps(store), database, level=3)
        assert report.info.database_id == database.name
        assert report.metadata.snapshot_count == 1
        assert [s.key for s in list_snapshots(store)] == [report.info.key]
        restored = run_restore(StoreRestoreSteps(store), tmp_path / "restored.db")
        assert isinstance(restored, RestoreResult)
        assert content_digest(tmp_path / "restored.db") == content_digest(database)

    def test_a_replica_of_another_database_is_refused(self, database: Path, tmp_path: Path) -> None:
        store = open_store(f"file://{tmp_path / 'replica'}")
        take_and_upload(store, database, database_id="other.db")
        with pytest.raises(UsageError, match=r"holds database 'other\.db'"):
            run_snapshot(StoreSnapshotSteps(store), database, level=3)
        assert len(list_snapshots(store)) == 1


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """``path`` cannot be deleted, even by root, while the block runs (ext4's immutable attribute)."""
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("this filesystem or user cannot make a file immutable (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


class TestRetentionVerdict:
    """A delete that was not confirmed fails the run in both modes, after the report is handed over."""

    def _replica(self, database: Path, tmp_path: Path) -> tuple[ObjectStore, str, Path]:
        root = tmp_path / "replica"
        store = open_store(f"file://{root}")
        for _ in range(3):
            take_and_upload(store, database)
        oldest = list_snapshots(store)[0].key
        return store, f"file://{root}", root / oldest

    def test_run_retention_raises_after_publishing(self, database: Path, tmp_path: Path) -> None:
        store, _, stuck = self._replica(database, tmp_path)
        published: list[int] = []
        with _immutable(stuck), pytest.raises(IncompleteError, match="1 of 2 deletes not confirmed"):
            run_retention(
                StoreRetentionSteps(store),
                RetentionPolicy(keep_last=1),
                publish=lambda plan, result: published.append(len(result.failed)),
            )
        assert published == [1]
        assert len(list_snapshots(store)) == 2

    def test_direct_mode_exits_1(self, database: Path, tmp_path: Path) -> None:
        """Direct mode once printed the plan and exited 0 where the flow failed the run."""
        _, replica, stuck = self._replica(database, tmp_path)
        with _immutable(stuck):
            result = walship("--no-prefect", "retention", "--replica", replica, "--keep-last", "1")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "deletes not confirmed" in result.stderr


class _CountingStores(SharedStores):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def open(self, replica: str) -> ObjectStore:
        self.opened.append(replica)
        return super().open(replica)


def test_shipping_steps_open_each_replica_once(tmp_path: Path) -> None:
    """The lease, the drain, the position and the release of a run share one store."""
    stores = _CountingStores()
    steps = RetryingSteps(stores=stores)
    replica = f"file://{tmp_path / 'replica'}"
    spool = tmp_path / "spool"
    spool.mkdir()
    steps.acquire_lease(replica, spool, "host:/app.db#1")
    steps.release_lease(replica, spool)
    steps.release_lease(replica, spool)
    assert stores.opened == [replica]
