"""Restore drills: a healthy replica passes; damage, gaps and a lying index are caught."""

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from prefect.events.schemas.events import ResourceSpecification

from flows._events import resource_id
from flows._report import artifact_key
from flows.verify import verify_flow
from tests.helpers import rewrite_object, take_and_upload, walship
from tests.test_cli import assert_plain_error
from tests.test_ship import Running
from walship import index, snapshot, sqlite
from walship.catalog import list_snapshots
from walship.chain import list_segment_sequences
from walship.envelope import Sealing, seal_file
from walship.errors import NotFoundError, TransientStorageError, VerificationFailedError
from walship.layout import METADATA_KEY, format_segment_key
from walship.models import ReplicaMetadata, RetryPolicy, WalPosition
from walship.storage import ObjectStore, open_store
from walship.verify import VerifyReport, verify_replica

FAST_RETRY = RetryPolicy(attempts=1, backoff_seconds=0.05, jitter=0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the drill restores: it must be empty again afterwards."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def build_replica(store: ObjectStore, database: Path, spool: Path) -> None:
    """A standalone snapshot, then a shipped generation (snapshot + segments) while writers commit."""
    take_and_upload(store, database)
    Running(database, store, spool, checkpoint_pages=150).run_while_writing(1.5, count=2, rate=200)


def checks(report: VerifyReport) -> dict[str, tuple[bool, str]]:
    return {check.name: (check.ok, check.detail) for check in report.checks}


def failed(report: VerifyReport) -> dict[str, str]:
    return {check.name: check.detail for check in report.failed}


def write_index(store: ObjectStore, metadata: ReplicaMetadata) -> None:
    store.put_bytes(METADATA_KEY, metadata.model_dump_json().encode())


def read_metadata(store: ObjectStore) -> ReplicaMetadata:
    metadata, _ = index.read_index(store)
    assert metadata is not None
    return metadata


class TestHealthyReplica:
    """A replica written by the snapshot and shipping code passes every check."""

    def test_passes_with_newest_and_older_point(
        self, store: ObjectStore, database: Path, tmp_path: Path, workdir: Path
    ) -> None:
        """The newest point is the shipped generation's last segment; an older point restores too."""
        build_replica(store, database, tmp_path / "spool")
        newest = list_snapshots(store)[-1]
        sequences = list_segment_sequences(store, newest.generation)
        assert len(sequences) >= 2

        report = verify_replica(store, older=True, seed=3, workdir=workdir)
        assert report.passed, report.failed
        names = [check.name for check in report.checks]
        assert names[:4] == ["snapshots", "database-id", "restore-newest", "restore-older"]
        assert {"index", "index-snapshots", "index-complete", "index-position"} <= set(names)
        [first, second] = report.points
        assert (first.role, first.snapshot) == ("newest", newest.key)
        assert first.position == WalPosition(generation=newest.generation, sequence=sequences[-1])
        assert second.role == "older"
        assert (second.snapshot, second.position.sequence) != (newest.key, sequences[-1])
        assert report.database_id == "app.db"
        assert os.listdir(workdir) == []

    def test_seed_picks_the_same_older_point(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """The older point is random, but a seed makes the drill repeatable."""
        build_replica(store, database, tmp_path / "spool")
        picks = [
            [(p.snapshot, p.position) for p in verify_replica(store, older=True, seed=seed).points if p.role == "older"]
            for seed in (5, 5)
        ]
        assert picks[0] == picks[1]
        assert len(picks[0]) == 1


def _snapshot_at(store: ObjectStore, database: Path, position: WalPosition, scratch: Path) -> None:
    """A later snapshot of the generation, copied by SQLite's backup API, recording the WAL position it holds."""
    source = sqlite.take_snapshot(database, scratch / "copy.db")
    compressed = seal_file(source.path, scratch / "copy.db.zst", Sealing())
    info = snapshot.upload_snapshot(
        store, source, compressed, database_id="app.db", generation=position.generation, position=position
    )
    index.add_snapshot(store, info)


class TestRecordedState:
    """A snapshot that records its WAL position must equal an earlier snapshot plus segments up to it."""

    def test_backup_copy_matches_the_rebuilt_state(self, database: Path, tmp_path: Path) -> None:
        """After a shipping run ends (all captured, checkpointed), a backup-API copy equals the shipped chain."""
        store = open_store(f"file://{tmp_path / 'replica'}")
        Running(database, store, tmp_path / "spool", checkpoint_pages=150).run_while_writing(1.5, count=2, rate=200)
        [first] = list_snapshots(store)
        last = list_segment_sequences(store, first.generation)[-1]
        _snapshot_at(store, database, WalPosition(generation=first.generation, sequence=last), tmp_path)

        report = verify_replica(store)
        assert report.passed, report.failed
        ok, detail = checks(report)["recorded-state"]
        assert ok
        # Byte equality holds except for page-1 counters: see docs/FORMAT.md.
        assert "the same pages" in detail
        assert [p.role for p in report.points] == ["newest", "state"]
        assert report.points[1].position.sequence == last

    def test_same_content_in_other_pages_passes(self, database: Path, tmp_path: Path) -> None:
        """A later snapshot of the same content laid out differently (VACUUM) passes on the logical digest."""
        store = open_store(f"file://{tmp_path / 'replica'}")
        Running(database, store, tmp_path / "spool", checkpoint_pages=150).run_while_writing(1.5, count=2, rate=200)
        [first] = list_snapshots(store)
        last = list_segment_sequences(store, first.generation)[-1]
        vacuumed = tmp_path / "vacuumed.db"
        connection = sqlite3.connect(database)
        connection.execute("VACUUM INTO ?", (str(vacuumed),))
        connection.close()
        _snapshot_at(store, vacuumed, WalPosition(generation=first.generation, sequence=last), tmp_path)

        report = verify_replica(store)
        assert report.passed, report.failed
        assert "the same content (pages differ)" in checks(report)["recorded-state"][1]

    def test_a_snapshot_of_another_state_is_caught(self, database: Path, tmp_path: Path) -> None:
        """A snapshot claiming a position it does not hold fails the comparison."""
        store = open_store(f"file://{tmp_path / 'replica'}")
        Running(database, store, tmp_path / "spool", checkpoint_pages=150).run_while_writing(1.5, count=2, rate=200)
        [first] = list_snapshots(store)
        sequences = list_segment_sequences(store, first.generation)
        # The database is at the last sequence; claim it is at the one before.
        _snapshot_at(store, database, WalPosition(generation=first.generation, sequence=sequences[-2]), tmp_path)

        report = verify_replica(store)
        assert not report.passed
        assert "differ from" in failed(report)["recorded-state"]


class TestDrillCatches:
    """Damage, gaps and a lying index fail the drill, each named in its own check."""

    def test_flipped_byte_in_snapshot(self, store: ObjectStore, database: Path, tmp_path: Path, workdir: Path) -> None:
        """A flipped byte in the newest snapshot fails the newest restore, naming the object."""
        build_replica(store, database, tmp_path / "spool")
        newest = list_snapshots(store)[-1]
        rewrite_object(store, newest.key, "flip")
        report = verify_replica(store, workdir=workdir)
        assert not report.passed
        assert list(failed(report)) == ["restore-newest"]
        assert newest.key in failed(report)["restore-newest"]
        assert checks(report)["index-snapshots"][0]  # the index was right: the object is damaged
        assert os.listdir(workdir) == []

    def test_truncated_snapshot(self, store: ObjectStore, database: Path, tmp_path: Path, workdir: Path) -> None:
        """A snapshot shorter than the size its own metadata records fails the snapshots check, naming it."""
        build_replica(store, database, tmp_path / "spool")
        shipped = list_snapshots(store)[-1]
        assert "walship-compressed-size" in store.head(shipped.key).metadata  # the case under test
        rewrite_object(store, shipped.key, "truncate")
        report = verify_replica(store, workdir=workdir)
        assert shipped.key in failed(report)["snapshots"]
        assert os.listdir(workdir) == []

    def test_truncated_streamed_snapshot(self, store: ObjectStore, database: Path, workdir: Path) -> None:
        """A streamed snapshot records no size of its own: its restore and the index's size catch a cut."""
        info = take_and_upload(store, database)
        assert "walship-compressed-size" not in store.head(info.key).metadata  # the case under test
        rewrite_object(store, info.key, "truncate")
        report = verify_replica(store, workdir=workdir)
        assert info.key in failed(report)["restore-newest"]
        assert info.key in failed(report)["index-snapshots"]
        assert "snapshots" not in failed(report)
        assert os.listdir(workdir) == []

    def test_missing_segment(self, store: ObjectStore, database: Path, tmp_path: Path, workdir: Path) -> None:
        """A segment deleted from the middle of the chain breaks the newest restore."""
        build_replica(store, database, tmp_path / "spool")
        newest = list_snapshots(store)[-1]
        sequences = list_segment_sequences(store, newest.generation)
        gone = format_segment_key(newest.generation, sequences[len(sequences) // 2])
        store.delete([gone])
        report = verify_replica(store, workdir=workdir)
        assert not report.passed
        assert gone in failed(report)["restore-newest"]
        assert os.listdir(workdir) == []

    def test_index_with_a_wrong_checksum(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """An index entry whose sha256 disagrees with the object is a lie; the restore itself still passes."""
        build_replica(store, database, tmp_path / "spool")
        metadata = read_metadata(store)
        lied = metadata.snapshots[0].model_copy(update={"sha256": "0" * 64})
        write_index(store, metadata.model_copy(update={"snapshots": [lied, *metadata.snapshots[1:]]}))
        report = verify_replica(store)
        assert list(failed(report)) == ["index-snapshots"]
        assert f"the index and {lied.key} disagree on sha256" in failed(report)["index-snapshots"]

    def test_index_omitting_a_snapshot(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A snapshot in the replica that the index lacks is reported."""
        build_replica(store, database, tmp_path / "spool")
        metadata = read_metadata(store)
        omitted = metadata.snapshots[0]
        write_index(store, metadata.model_copy(update={"snapshots": metadata.snapshots[1:], "snapshot_count": 1}))
        report = verify_replica(store)
        assert list(failed(report)) == ["index-complete"]
        assert omitted.key in failed(report)["index-complete"]

    def test_index_claiming_segments_that_do_not_exist(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        """latest_wal_sequence past the last shipped segment claims objects the replica lacks.

        The index is written after what it records was uploaded, so the
        newest point it claims is lost: the newest restore fails as well.
        """
        build_replica(store, database, tmp_path / "spool")
        metadata = read_metadata(store)
        assert metadata.current_generation is not None
        last = list_segment_sequences(store, metadata.current_generation)[-1]
        write_index(store, metadata.model_copy(update={"latest_wal_sequence": last + 2}))
        report = verify_replica(store)
        assert list(failed(report)) == ["restore-newest", "index-position"]
        missing = format_segment_key(metadata.current_generation, last + 1)
        assert missing in failed(report)["index-position"]
        assert missing in failed(report)["restore-newest"]
        assert f"--sequence {last}" in failed(report)["restore-newest"]

    def test_index_listing_a_deleted_snapshot(self, store: ObjectStore, database: Path) -> None:
        """An index entry whose object is gone is reported; the newest point still restores."""
        take_and_upload(store, database)
        [info] = list_snapshots(store)
        take_and_upload(store, database)
        store.delete([info.key])
        report = verify_replica(store)
        assert "index-snapshots" in failed(report)
        assert f"{info.key} is in the index but not in the replica" in failed(report)["index-snapshots"]
        assert checks(report)["restore-newest"][0]

    def test_empty_replica(self, store: ObjectStore, workdir: Path) -> None:
        """Nothing at the location: no list of failed checks, one error saying no replica is there."""
        with pytest.raises(NotFoundError, match=f"no replica at {re.escape(store.location)}: check the URL"):
            verify_replica(store, workdir=workdir)
        assert os.listdir(workdir) == []

    def test_index_alone(self, store: ObjectStore, database: Path, workdir: Path) -> None:
        """A replica whose snapshots are all gone is still a replica: the drill fails its checks."""
        info = take_and_upload(store, database)
        store.delete([info.key])
        report = verify_replica(store, workdir=workdir)
        assert not report.passed
        assert report.failed[0].name == "snapshots"
        assert "holds no snapshot" in report.failed[0].detail

    def test_another_database(self, store: ObjectStore, database: Path) -> None:
        """--database-id names a database the replica does not hold."""
        take_and_upload(store, database)
        report = verify_replica(store, database_id="other.db")
        assert list(failed(report)) == ["database-id"]
        assert "'app.db'" in failed(report)["database-id"]


@pytest.fixture
def local_replica(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'replica'}"


class TestVerifyCLI:
    """``walship verify`` prints every check and exits 0 on a good drill, 1 on a failed one, 2 on bad usage."""

    def test_good_then_damaged(self, prefect_api: str, local_replica: str, database: Path, tmp_path: Path) -> None:
        """One line per check and a summary; after damage, a plain two-line error naming the check."""
        store = open_store(local_replica)
        info = take_and_upload(store, database)
        env = {"PREFECT_API_URL": prefect_api, "TMPDIR": str(tmp_path / "tmp")}
        (tmp_path / "tmp").mkdir()
        good = walship("verify", "--replica", local_replica, "--older", env=env)
        assert good.returncode == 0, good.stderr
        lines = good.stdout.strip().splitlines()
        assert lines[-1].startswith("verify passed:")
        assert all(line.startswith("ok ") for line in lines[:-1])
        assert any("restore-newest" in line for line in lines)

        rewrite_object(store, info.key, "flip")
        bad = walship("verify", "--replica", local_replica, env=env)
        assert_plain_error(bad, 1, "restore-newest failed")
        assert info.key in bad.stderr
        assert any(line.startswith("FAILED  restore-newest") for line in bad.stdout.splitlines())
        assert "verify failed: 1 of" in bad.stdout
        assert [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("walship-verify-")] == []

    def test_bad_usage(self, tmp_path: Path) -> None:
        """A malformed URL or a missing work directory exits 2 before any flow starts."""
        assert_plain_error(walship("verify", "--replica", "ftp://host/x"), 2, "replica URL")
        result = walship("verify", "--replica", f"file://{tmp_path}/r", "--workdir", str(tmp_path / "nope"))
        assert_plain_error(result, 2, "--workdir")


def _artifacts(run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))


def _events(name: str, replica: str, *, wait: bool = True) -> list[Any]:
    """Events the Prefect API stored about ``replica``; they arrive asynchronously, so poll (up to a minute)."""
    deadline = time.monotonic() + 60
    while True:
        # A new filter each time: its "until" defaults to the moment it is made.
        event_filter = EventFilter(
            event=EventNameFilter(name=[name]),
            resource=EventResourceFilter(labels=ResourceSpecification({"walship.replica": replica})),
        )
        with get_client(sync_client=True) as client:
            # The client's default limit (100) is above what the server accepts (50).
            events = client.read_events(filter=event_filter, limit=50).events
        if events or not wait or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


@pytest.mark.usefixtures("prefect_api")
class TestVerifyFlow:
    """The flow publishes every check, and a failed drill turns the run red and emits an event."""

    def test_failed_drill(self, local_replica: str, database: Path, workdir: Path) -> None:
        """A damaged replica: the run fails, the artifact lists every check, walship.verify.failed is stored."""
        store = open_store(local_replica)
        info = take_and_upload(store, database)
        rewrite_object(store, info.key, "flip")
        state = verify_flow(replica=local_replica, workdir=workdir, return_state=True)
        assert state.is_failed()
        with pytest.raises(VerificationFailedError, match="restore-newest failed"):
            state.result()
        run_id = state.state_details.flow_run_id
        assert run_id is not None
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(run_id).name.startswith("verify-app.db-")
        # A failed flow also records its pickled exception as a result artifact: Prefect's own.
        [artifact] = [a for a in _artifacts(run_id) if a.type == "markdown"]
        assert artifact.key == artifact_key("verify", "app.db", local_replica)
        for name in ("restore-newest", "index-snapshots", "index-complete", "index-position"):
            assert f"| {name} |" in artifact.data
        assert "**FAILED**" in artifact.data

        [event] = _events("walship.verify.failed", local_replica)
        assert event.resource.id == resource_id("app.db", local_replica)
        assert [check["name"] for check in event.payload["failed"]] == ["restore-newest"]
        assert info.key in json.dumps(event.payload)
        assert os.listdir(workdir) == []

    def test_unreachable_storage(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Storage that stays unreachable after retries fails the run and still emits the failure event."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        # Port 9 (discard) on loopback: nothing listens, so connections are refused.
        replica = f"s3://walship-down/{tmp_path.name}?endpoint=http://127.0.0.1:9"
        state = verify_flow(replica=replica, retry=FAST_RETRY, return_state=True)
        assert state.is_failed()
        with pytest.raises(TransientStorageError):
            state.result()
        [event] = _events("walship.verify.failed", replica)
        assert [check["name"] for check in event.payload["failed"]] == ["storage"]

    def test_passed_drill(self, local_replica: str, database: Path) -> None:
        """A healthy replica: the run completes and returns the report; no failure event."""
        take_and_upload(open_store(local_replica), database, database_id="orders")
        state = verify_flow(replica=local_replica, database_id="orders", older=True, return_state=True)
        assert state.is_completed()
        report = state.result()
        assert report.passed
        # One standalone snapshot is the only point there is.
        assert [p.role for p in report.points] == ["newest"]
        assert "nothing older" in checks(report)["restore-older"][1]
        [event] = _events("walship.verify.passed", local_replica)
        assert event.resource.id == resource_id("orders", local_replica)
        assert _events("walship.verify.failed", local_replica, wait=False) == []
