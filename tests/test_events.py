"""Events and progress artifacts, read back from a real Prefect API."""

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

from flows._ship_events import LagWatch, ShippedBatch
from flows.restore import restore_flow
from flows.ship import wal_ship_flow
from flows.snapshot import snapshot_flow
from tasks import finish_progress, start_progress
from tasks._progress import ArtifactProgress
from tests.conftest import Writers
from tests.prefect_api import artifacts, database_resource_id, read_events, run_id
from walship.index import current_snapshots
from walship.segment import WalSegment
from walship.spool import PendingEntry, new_entry
from walship.storage import open_store


def _segments(generation: str, first: int, last: int) -> list[PendingEntry]:
    now = datetime.now(UTC)
    return [
        new_entry(
            WalSegment(
                generation=generation,
                sequence=sequence,
                salt1=1,
                salt2=2,
                big_endian=False,
                page_size=4096,
                start_offset=32,
                end_offset=4152,
                checksum_start1=0,
                checksum_start2=0,
                checksum_end1=1,
                checksum_end2=1,
                frames=1,
                commits=1,
                db_size_pages=1,
                wal_restarted=False,
                committed_after=now,
                captured_at=now,
                raw_size=4120,
                sha256="0" * 64,
            )
        )
        for sequence in range(first, last + 1)
    ]


class TestShippedBatch:
    """Uploads are summed into one event per window, not one per segment."""

    def test_one_payload_per_window(self) -> None:
        """Uploads inside the window return nothing; the one that closes it returns their sum."""
        batch = ShippedBatch(every=30)
        assert batch.add(_segments("g1", 1, 2), size=100, lag=0.5, now=0) is None
        assert batch.add(_segments("g1", 3, 3), size=50, lag=1.5, now=10) is None
        payload = batch.add(_segments("g1", 4, 5), size=70, lag=0.2, now=31)
        assert payload == {
            "count": 5,
            "bytes": 220,
            "first_generation": "g1",
            "first_sequence": 1,
            "last_generation": "g1",
            "last_sequence": 5,
            "max_lag_seconds": 1.5,
        }
        assert batch.flush() is None

    def test_flush_returns_the_open_batch(self) -> None:
        """The end of a run flushes what the window had not yet reported."""
        batch = ShippedBatch(every=30)
        batch.add(_segments("g1", 7, 7), size=10, lag=0.1, now=0)
        batch.add(_segments("g2", 1, 1), size=10, lag=0.1, now=1)
        payload = batch.flush()
        assert payload is not None
        assert (payload["first_generation"], payload["first_sequence"]) == ("g1", 7)
        assert (payload["last_generation"], payload["last_sequence"]) == ("g2", 1)
        assert payload["count"] == 2

    def test_upload_of_snapshots_only_is_not_counted(self) -> None:
        """An upload that carried no segment adds nothing."""
        batch = ShippedBatch(every=30)
        assert batch.add([], size=0, lag=0.0, now=0) is None
        assert batch.flush() is None


class TestLagWatch:
    """The lag is reported when it crosses the threshold, once per crossing."""

    def test_once_per_crossing(self) -> None:
        """Staying above is silent; dropping below and rising again is a new crossing."""
        watch = LagWatch(threshold=10)
        seen = [watch.observe(lag) for lag in (1, 11, 12, 50, 9, 10, 10.5, 11)]
        assert seen == [False, True, False, False, False, False, True, False]


@pytest.mark.usefixtures("prefect_api")
class TestSnapshotAndRestoreObservability:
    """A snapshot emits its completed event; snapshot and restore runs publish progress."""

    @pytest.mark.parametrize("backend", ["local"])
    def test_snapshot_completed_event(self, replica_url: str, database: Path) -> None:
        """The event names the database as its resource and carries key, sizes and duration."""
        state = snapshot_flow(database=database, replica=replica_url, database_id="events-app.db", return_state=True)
        info = state.result()
        [event] = read_events("walship.snapshot.completed", flow_run_id=run_id(state))
        assert event.resource.id == database_resource_id("events-app.db", replica_url)
        assert event.resource["walship.replica"] == replica_url
        assert event.payload["key"] == info.key
        assert (event.payload["raw_size"], event.payload["compressed_size"]) == (info.raw_size, info.compressed_size)
        assert event.payload["duration_seconds"] > 0

    @pytest.mark.parametrize("backend", ["local", "moto"])
    def test_progress_artifacts_reach_100(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        """Both runs leave a progress artifact at 100 %."""
        snapshot = snapshot_flow(database=database, replica=replica_url, return_state=True)
        [progress] = artifacts(run_id(snapshot), "progress")
        assert progress.data == 100
        assert progress.key is None  # a failed run must not leave a 0 % as the newest of a key
        restore = restore_flow(replica=replica_url, output=tmp_path / "restored.db", return_state=True)
        [progress] = artifacts(run_id(restore), "progress")
        assert progress.data == 100
        assert progress.key is None


@pytest.mark.usefixtures("prefect_api")
class TestArtifactProgress:
    """The core's byte counts move a progress artifact within its share of the run."""

    def test_bytes_map_onto_the_range(self) -> None:
        """Half the bytes of a 0-90 % step is 45 %; a step under a percent is skipped; the flow ends at 100."""
        assert _progress_steps() == [45, 45, 90, 100]


@flow
def _progress_steps() -> list[float]:
    """What the artifact shows after each step (artifacts belong to a run)."""
    artifact_id = start_progress("walship-test-progress", "test")
    progress = ArtifactProgress(artifact_id, 0.0, 90.0, every=0.0)
    seen = []
    for done in (50, 51, 100):  # 51 % of 90 is 45.9 %: under a percent more than 45
        progress(done, 100)
        seen.append(_progress_of(artifact_id))
    finish_progress(artifact_id)
    return [*seen, _progress_of(artifact_id)]


def _progress_of(artifact_id: UUID) -> float:
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[artifact_id])))
    assert isinstance(artifact.data, float | int)
    return artifact.data


@pytest.mark.usefixtures("prefect_api")
class TestShipEvents:
    """A shipping run emits a generation event, batched shipped events and lag crossings."""

    @pytest.mark.parametrize("backend", ["local"])
    def test_events_of_a_busy_run(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        """Under live writers: fewer shipped events than segments, summing to all of them."""
        writers = Writers(database, seed=11, count=2, rate=200)
        try:
            state = wal_ship_flow(
                database=database,
                replica=replica_url,
                duration=4,
                interval=0.2,
                spool_dir=tmp_path / "spool",
                database_id="events-ship.db",
                lag_threshold_seconds=0.001,
                return_state=True,
            )
        finally:
            writers.stop()
        report = state.result()
        assert report.segments_uploaded > 3
        resource = database_resource_id("events-ship.db", replica_url)

        [started] = read_events("walship.generation.started", flow_run_id=run_id(state))
        assert started.resource.id == resource
        assert started.payload["generation"] == report.generations_started[0]
        assert started.payload["reason"] == report.generation_reasons[0]

        shipped = read_events("walship.segment.shipped", flow_run_id=run_id(state))
        assert 1 <= len(shipped) < report.segments_uploaded
        assert sum(e.payload["count"] for e in shipped) == report.segments_uploaded
        [snapshot] = current_snapshots(open_store(replica_url))  # the generation's, also uploaded by the run
        assert sum(e.payload["bytes"] for e in shipped) == report.bytes_uploaded - snapshot.compressed_size
        assert report.position is not None
        assert shipped[-1].payload["last_sequence"] == report.position.sequence
        assert shipped[0].payload["first_sequence"] == 1

        # Every upload takes longer than 1 ms, so the lag crossed at once and
        # stayed above: far fewer events than syncs (one per crossing).
        crossed = read_events("walship.lag.exceeded", flow_run_id=run_id(state))
        assert 1 <= len(crossed) < report.syncs / 2
        assert crossed[0].payload["lag_seconds"] > crossed[0].payload["threshold_seconds"] == 0.001

    @pytest.mark.parametrize("backend", ["local"])
    def test_a_gap_bridged_by_a_resync(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        """After a TRUNCATE nobody watched: a resynced event and an artifact row, no new generation."""
        writers = Writers(database, seed=11, count=2, rate=200)
        try:
            first = wal_ship_flow(database=database, replica=replica_url, once=True, spool_dir=tmp_path / "spool")
        finally:
            writers.stop()  # their last connection checkpoints and removes the WAL: a gap nobody watched
        state = wal_ship_flow(
            database=database, replica=replica_url, once=True, spool_dir=tmp_path / "spool", return_state=True
        )
        report = state.result()
        assert report.generations_started == []
        [resync] = report.resyncs
        [event] = read_events("walship.generation.resynced", flow_run_id=run_id(state))
        assert event.payload["key"] == resync.key
        assert event.payload["pages"] == resync.pages < event.payload["page_count"]
        summaries = [str(a.data) for a in artifacts(run_id(state), "markdown")]
        sequence = resync.key.rsplit("/", 1)[1].split(".")[0].lstrip("0")
        shown = f"{resync.pages:,} of {resync.page_count:,} pages"
        assert any(shown in s and f"as sequence {sequence} " in s for s in summaries), summaries
        assert first.generations_started
