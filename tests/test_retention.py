"""Retention against real storage: apply a plan, and every promised point still restores."""

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bench.workload import content_digest
from flows._report import artifact_key
from tests.conftest import BACKENDS, Writers
from tests.helpers import take_and_upload, walship
from tests.s3servers import MotoS3
from tests.tcpproxy import TcpProxy
from tests.test_ship import Running
from walship.catalog import list_snapshots
from walship.index import read_index
from walship.layout import format_segment_key, new_generation, parse_segment_key
from walship.models import utcnow
from walship.restore import restore_snapshot
from walship.retention import RetentionPolicy, apply_retention, list_history, plan_retention
from walship.storage import DELETE_BATCH_LIMIT, ObjectStore, open_store


def _history(store: ObjectStore, database: Path, tmp_path: Path) -> list[str]:
    """Two shipped generations and two standalone snapshots, oldest first; returns the snapshot keys."""
    Running(database, store, tmp_path / "spool-a", checkpoint_pages=200).run_while_writing(1.5, count=2, rate=200)
    take_and_upload(store, database)
    Running(database, store, tmp_path / "spool-c", checkpoint_pages=200).run_while_writing(1.5, count=2, rate=200)
    take_and_upload(store, database)
    return _snapshot_keys(store)


def _snapshot_keys(store: ObjectStore) -> list[str]:
    """Oldest first by the time taken (generation names tie within a second)."""
    return [s.key for s in list_snapshots(store)]


def _segments(store: ObjectStore) -> list[str]:
    return [o.key for o in store.list("generations/") if parse_segment_key(o.key) is not None]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
class TestApply:
    """A plan applied to real storage deletes exactly what it says, and what it keeps restores."""

    def test_keep_last_two(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        """keep-last 2 over four generations: the two oldest go with their WAL; the rest restore to the source."""
        store = open_store(replica_url)
        keys = _history(store, database, tmp_path)
        assert len(keys) == 4
        first_generation_segments = [k for k in _segments(store) if k.startswith(keys[0].rsplit("/", 2)[0])]
        assert first_generation_segments, "the first generation shipped segments"

        plan = plan_retention(RetentionPolicy(keep_last=2), *list_history(store), utcnow())
        assert set(plan.delete_keys) == {keys[0], keys[1], *first_generation_segments}
        result = apply_retention(store, plan)

        assert result.ok, result.errors
        assert set(result.deleted) == set(plan.delete_keys)
        assert result.bytes_freed == plan.bytes_to_free > 0
        assert _snapshot_keys(store) == keys[2:]
        assert not set(_segments(store)) & set(first_generation_segments)
        index, _ = read_index(store)
        assert index is not None
        assert [s.key for s in index.snapshots] == keys[2:]
        assert index.snapshot_count == 2
        # Both kept points restore: the shipped generation with all its WAL, and the standalone snapshot.
        for number, snapshot in enumerate(index.snapshots):
            restored = tmp_path / f"restored-{number}.db"
            restore_snapshot(store, snapshot, restored)
            assert content_digest(restored) == content_digest(database)
        # Applying the same policy again finds nothing more to do.
        again = plan_retention(RetentionPolicy(keep_last=2), *list_history(store), utcnow())
        assert again.delete_keys == []

    def test_dry_run_deletes_nothing(self, replica_url: str, database: Path) -> None:
        """A dry run reports the plan and leaves every object in place."""
        store = open_store(replica_url)
        for _ in range(3):
            take_and_upload(store, database)
        before = sorted(o.key for o in store.list())
        plan = plan_retention(RetentionPolicy(keep_last=1), *list_history(store), utcnow())
        result = apply_retention(store, plan, dry_run=True)
        assert (result.dry_run, result.planned, result.deleted) == (True, 2, ())
        assert sorted(o.key for o in store.list()) == before


class _CountingStore:
    """A real store that records the size of every delete request it is asked to make."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.batches: list[int] = []

    def delete(self, keys: Sequence[str]) -> None:
        self.batches.append(len(keys))
        self._store.delete(keys)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class TestBatches:
    """Deletes go out in batches of at most 1,000 keys (the S3 DeleteObjects limit)."""

    def test_batches(self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path) -> None:
        """2,001 doomed segments take three requests, none over the limit, and all are gone."""
        from tests.conftest import use_credentials

        use_credentials(monkeypatch, moto_server)
        moto_server.create_bucket("walship-batches")
        store = open_store(f"s3://walship-batches/app?endpoint={moto_server.endpoint}")
        old = new_generation(utcnow().replace(year=2025))
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: store.put_bytes(format_segment_key(old, n), b"x"), range(1, 2002)))
        take_and_upload(store, database)
        counting = _CountingStore(store)
        plan = plan_retention(RetentionPolicy(keep_last=1), *list_history(store), utcnow())
        result = apply_retention(counting, plan)  # type: ignore[arg-type]
        assert counting.batches == [DELETE_BATCH_LIMIT, DELETE_BATCH_LIMIT, 1]
        assert len(result.deleted) == 2001
        assert _segments(store) == []


class TestFailedDeletes:
    """A delete that fails is reported and left for the next run, never counted as done."""

    def test_outage_during_apply(self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path) -> None:
        """With storage unreachable nothing counts as deleted; the next apply finishes the job."""
        from tests.conftest import use_credentials

        use_credentials(monkeypatch, moto_server)
        moto_server.create_bucket("walship-outage")
        moto = urlsplit(moto_server.endpoint)
        assert moto.hostname is not None
        assert moto.port is not None
        with TcpProxy(moto.hostname, moto.port) as proxy:
            store = open_store(f"s3://walship-outage/app?endpoint={proxy.endpoint}")
            for _ in range(3):
                take_and_upload(store, database)
            plan = plan_retention(RetentionPolicy(keep_last=1), *list_history(store), utcnow())
            proxy.stop()
            failed = apply_retention(store, plan)
            proxy.start()
            assert not failed.ok
            assert failed.deleted == ()
            assert set(failed.failed) == set(plan.delete_keys)
            assert any("delete" in error for error in failed.errors)
            assert len(_snapshot_keys(store)) == 3

            retried = apply_retention(
                store, plan_retention(RetentionPolicy(keep_last=1), *list_history(store), utcnow())
            )
            assert retried.ok
            assert len(retried.deleted) == 2
            assert len(_snapshot_keys(store)) == 1


class TestRetentionCommand:
    """`walship retention`: bad policies are refused before anything runs; a real run deletes and reports."""

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--keep-within", "7x"], "duration '7x' is not understood"),
            (["--keep-last", "-1"], "--keep-last: Input should be greater than or equal to 0"),
            (["--keep-last", "0"], "keeps nothing"),
            ([], "keeps nothing"),
        ],
    )
    def test_bad_policy(self, tmp_path: Path, argv: list[str], message: str) -> None:
        """Exit 2 with one plain line naming the problem; the replica is not touched."""
        replica = tmp_path / "replica"
        result = walship("retention", "--replica", f"file://{replica}", *argv)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2
        assert not replica.exists()

    def test_dry_run_then_apply(self, prefect_api: str, database: Path, tmp_path: Path) -> None:
        """The dry run lists decisions and deletes nothing; the real run deletes and leaves an artifact."""
        replica = f"file://{tmp_path / 'replica'}"
        store = open_store(replica)
        for _ in range(3):
            take_and_upload(store, database)
        keys = _snapshot_keys(store)
        env = {"PREFECT_API_URL": prefect_api}

        dry = walship("retention", "--replica", replica, "--keep-last", "2", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert f"would delete  {keys[0]}" in dry.stdout
        assert f"keep    {keys[2]}" in dry.stdout
        assert "nothing deleted" in dry.stdout
        assert _snapshot_keys(store) == keys

        real = walship("retention", "--replica", replica, "--keep-within", "1h", "--keep-last", "1", env=env)
        assert real.returncode == 0, real.stderr
        assert "deleted 0 objects" in real.stdout  # all three are within the hour
        real = walship("retention", "--replica", replica, "--keep-last", "1", env=env)
        assert real.returncode == 0, real.stderr
        assert "deleted 2 objects" in real.stdout
        assert _snapshot_keys(store) == keys[2:]
        assert (
            _artifact_markdown(prefect_api, artifact_key("retention", "app.db", replica)).count(
                "| deleted | outside the policy |"
            )
            == 2
        )


def _artifact_markdown(api: str, key: str) -> str:
    """The newest version of the artifact ``key``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key}"
    return str(max(found, key=lambda a: a.created or 0).data)


class TestWhileShipping:
    """Retention between a live shipper's syncs never breaks the chain it is extending."""

    def test_retention_during_shipping(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        """Old generations go while the current one keeps growing; the newest point restores to the source."""
        store = open_store(replica_url)
        take_and_upload(store, database)
        take_and_upload(store, database)
        running = Running(database, store, tmp_path / "spool", checkpoint_pages=200)
        writers = Writers(database, seed=11, count=2, rate=200)
        try:
            running.run(1.0)
            result = apply_retention(
                store, plan_retention(RetentionPolicy(keep_last=1), *list_history(store), utcnow())
            )
            running.run(1.0)
        finally:
            writers.stop()
        running.close()
        assert result.ok
        assert len(result.deleted) == 2
        snapshots = list_snapshots(store)
        assert len(snapshots) == 1
        restored = tmp_path / "restored.db"
        restore_snapshot(store, snapshots[0], restored)
        assert content_digest(restored) == content_digest(database)
