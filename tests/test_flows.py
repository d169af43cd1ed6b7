"""The flows under a real Prefect API: runs, artifacts, retries."""

from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from bench.workload import content_digest
from flows._report import artifact_key
from flows.restore import restore_flow
from flows.snapshot import snapshot_flow
from tests.conftest import use_credentials
from tests.helpers import rewrite_object
from tests.prefect_api import artifacts
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError, TransientStorageError
from walship.models import RetryPolicy
from walship.storage import open_store

FAST_RETRY = RetryPolicy(attempts=2, backoff_seconds=0.05, jitter=0)


def _artifacts(run_id: UUID) -> list[Any]:
    """The run's markdown artifacts (its progress artifact is tested in test_events)."""
    return artifacts(run_id, "markdown")


def _task_runs(run_id: UUID) -> dict[str, TaskRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return {run.task_key.rsplit("-", 1)[0]: run for run in runs}


def _flow_run_name(state: State[Any]) -> str:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id).name  # type: ignore[arg-type]


@pytest.mark.usefixtures("prefect_api")
class TestSnapshotAndRestoreFlows:
    """The flows compose the tasks, publish artifacts and return small models."""

    def test_roundtrip_with_artifacts(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        state = snapshot_flow(database=database, replica=replica_url, level=5, return_state=True)
        assert state.is_completed()
        info = state.result()
        assert info.level == 5
        assert _flow_run_name(state).startswith("snapshot-app.db-")
        [artifact] = _artifacts(state.state_details.flow_run_id)  # type: ignore[arg-type]
        assert artifact.key == artifact_key("snapshot", "app.db", replica_url)
        assert info.key in artifact.data
        assert info.sha256 in artifact.data

        output = tmp_path / "restored.db"
        state = restore_flow(replica=replica_url, output=output, return_state=True)
        assert state.is_completed()
        assert state.result().snapshot.key == info.key
        assert content_digest(output) == content_digest(database)
        [artifact] = _artifacts(state.state_details.flow_run_id)  # type: ignore[arg-type]
        assert "integrity_check | ok" in artifact.data

    def test_damaged_snapshot_fails_the_run(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        info = snapshot_flow(database=database, replica=replica_url)
        rewrite_object(open_store(replica_url), info.key, "flip")
        state = restore_flow(replica=replica_url, output=tmp_path / "out.db", retry=FAST_RETRY, return_state=True)
        assert state.is_failed()
        with pytest.raises((ChecksumMismatchError, CorruptObjectError), match=info.key):
            state.result()
        runs = _task_runs(state.state_details.flow_run_id)  # type: ignore[arg-type]
        assert runs["restore_snapshot"].run_count == 1  # a checksum mismatch is never retried
        assert not (tmp_path / "out.db").exists()


@pytest.mark.usefixtures("prefect_api")
class TestRetries:
    """Tasks retry transient storage errors, and only those."""

    def test_unreachable_storage_is_retried(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        # Port 9 (discard) on loopback: nothing listens, so connections are refused.
        replica = "s3://walship-down/x?endpoint=http://127.0.0.1:9"
        state = restore_flow(replica=replica, output=tmp_path / "out.db", retry=FAST_RETRY, return_state=True)
        assert state.is_failed()
        with pytest.raises(TransientStorageError):
            state.result()
        runs = _task_runs(state.state_details.flow_run_id)  # type: ignore[arg-type]
        assert runs["describe_generations"].run_count == 1 + FAST_RETRY.attempts

    def test_missing_bucket_is_not_retried(
        self, moto_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        use_credentials(monkeypatch, moto_server)
        replica = f"s3://walship-missing/x?endpoint={moto_server.endpoint}"
        state = restore_flow(replica=replica, output=tmp_path / "out.db", retry=FAST_RETRY, return_state=True)
        with pytest.raises(NotFoundError, match="does not exist"):
            state.result()
        assert _task_runs(state.state_details.flow_run_id)["describe_generations"].run_count == 1  # type: ignore[arg-type]


def test_flow_rejects_out_of_range_level(database: Path, tmp_path: Path, prefect_api: str) -> None:
    """Parameters are validated by pydantic before anything runs."""
    state = snapshot_flow(database=database, replica=f"file://{tmp_path}/r", level=40, return_state=True)
    assert state.is_failed()
    assert not (tmp_path / "r").exists()
