"""walship as a Prefect citizen, under a real Prefect API: failure events and artifacts of every flow,
artifacts per replica, one-line logs for known failures, credentials from an AwsCredentials block."""

import shutil
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters

from bench.workload import content_digest
from flows._events import resource_id
from flows._report import artifact_key
from flows.restore import restore_flow
from flows.retention import retention_flow
from flows.ship import wal_ship_flow
from flows.snapshot import snapshot_flow
from flows.snapshot_many import snapshot_many_flow
from flows.verify import verify_flow
from tests.helpers import rewrite_object
from tests.prefect_api import artifacts, flow_run, read_events, run_id
from tests.s3servers import SeaweedS3
from walship.errors import PermanentStorageError
from walship.models import RetryPolicy
from walship.retention import RetentionPolicy

FAST_RETRY = RetryPolicy(attempts=1, backoff_seconds=0.05, jitter=0)


def _latest(key: str) -> Any:
    """The newest artifact of ``key``: what the Artifacts page shows."""
    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert len(found) == 1, found
    return found[0]


def _logs(flow_run_id: UUID) -> list[str]:
    """The run's log lines as the API stored them, once its final line (the state it ended in) is there."""
    APILogWorker.drain_all(timeout=30)
    deadline = time.monotonic() + 60
    while True:
        with get_client(sync_client=True) as client:
            records = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        ended = [r for r in records if r.task_run_id is None and r.message.startswith("Finished in state")]
        if ended or time.monotonic() > deadline:
            return [record.message for record in records]
        time.sleep(0.5)


@pytest.mark.usefixtures("prefect_api")
class TestFailureEvents:
    """Every flow that fails emits walship.<flow>.failed about its database and replica, and leaves a FAILED
    artifact under its own key (never a stale 0 % progress as the newest of a key)."""

    @pytest.mark.parametrize(
        ("kind", "run"),
        [
            ("snapshot", lambda d, r, o: snapshot_flow(database=d.parent / "missing.db", replica=r, return_state=True)),
            (
                "ship",
                lambda d, r, o: wal_ship_flow(
                    database=d.parent / "missing.db", replica=r, once=True, return_state=True
                ),
            ),
            ("restore", lambda d, r, o: restore_flow(replica=r, output=o, database_id="app.db", return_state=True)),
            ("verify", lambda d, r, o: verify_flow(replica=r, database_id="app.db", return_state=True)),
            (
                "retention",
                lambda d, r, o: retention_flow(
                    replica=r, policy=RetentionPolicy(keep_last=1), database_id="other.db", return_state=True
                ),
            ),
            (
                "snapshot-many",
                lambda d, r, o: snapshot_many_flow(
                    databases=[str(d.parent / "none-*.db")], replica=r, return_state=True
                ),
            ),
        ],
        ids=lambda v: v if isinstance(v, str) else "",
    )
    def test_each_flow_emits_its_failure(self, kind: str, run: Any, database: Path, tmp_path: Path) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        if kind == "retention":  # a replica of app.db, refused as other.db's
            assert snapshot_flow(database=database, replica=replica, return_state=True).is_completed()
        state = run(database, replica, tmp_path / "restored.db")
        assert state.is_failed()
        events = read_events(f"walship.{kind}.failed", flow_run_id=run_id(state))
        assert len(events) == 1, events
        [event] = events
        assert event.resource["walship.replica"] == replica
        assert event.resource.id.startswith("walship.database.")
        assert event.payload["reason"], event.payload
        assert "\n" not in event.payload["reason"]
        markdown = [a for a in artifacts(run_id(state), "markdown") if a.key and a.key.startswith(f"walship-{kind}-")]
        assert markdown, artifacts(run_id(state))
        assert "FAILED" in _latest(markdown[-1].key).data
        assert all(a.key is None for a in artifacts(run_id(state), "progress"))

    def test_refused_parameters_are_a_failure_too(self, database: Path, tmp_path: Path) -> None:
        """A run whose parameters pydantic refuses never starts; its event and artifact still say why."""
        replica = f"file://{tmp_path / 'replica'}"
        state = snapshot_flow(database=database, replica=replica, level=40, return_state=True)
        assert state.is_failed()
        [event] = read_events("walship.snapshot.failed", flow_run_id=run_id(state))
        assert "level" in event.payload["reason"]
        [artifact] = artifacts(run_id(state), "markdown")
        assert artifact.key == artifact_key("snapshot", "app.db", replica)
        assert "FAILED" in artifact.data

    def test_a_failed_restore_leaves_no_stale_progress(self, database: Path, tmp_path: Path) -> None:
        """A restore that fails after its progress started: the newest artifact of its key says FAILED."""
        replica = f"file://{tmp_path / 'replica'}"
        snapshot_flow(database=database, replica=replica)
        output = tmp_path / "exists.db"
        output.write_bytes(b"precious")
        state = restore_flow(replica=replica, output=output, retry=FAST_RETRY, return_state=True)
        assert state.is_failed()
        assert output.read_bytes() == b"precious"
        [progress] = artifacts(run_id(state), "progress")
        assert progress.key is None  # never the newest of a key, whatever it shows
        latest = _latest(artifact_key("restore", "app.db", replica))
        assert "FAILED" in latest.data
        assert "force" in latest.data

    def test_storage_failure_logs_one_line(self, database: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Storage that refuses connections: the run's log says so in lines without a traceback."""
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        replica = "s3://walship-down/app?endpoint=http://127.0.0.1:9"
        state = snapshot_flow(database=database, replica=replica, retry=FAST_RETRY, return_state=True)
        assert state.is_failed()
        logs = _logs(run_id(state))
        assert any("127.0.0.1:9" in line for line in logs), logs
        assert not [line for line in logs if "Traceback" in line], logs


@pytest.mark.usefixtures("prefect_api")
class TestArtifactsPerReplica:
    """Two replicas of one database keep their artifacts and events apart."""

    def test_a_drill_of_a_copy_never_overwrites_the_main_replica(self, database: Path, tmp_path: Path) -> None:
        main = f"file://{tmp_path / 'main'}"
        snapshot_flow(database=database, replica=main)
        shutil.copytree(tmp_path / "main", tmp_path / "copy")
        copy = f"file://{tmp_path / 'copy'}"
        [key] = [p.relative_to(tmp_path / "copy") for p in (tmp_path / "copy").rglob("*.sqlite.zst")]
        from walship.storage import open_store

        rewrite_object(open_store(copy), str(key), "flip")

        good = verify_flow(replica=main, database_id="app.db", return_state=True)
        bad = verify_flow(replica=copy, database_id="app.db", return_state=True)
        assert good.is_completed()
        assert bad.is_failed()
        main_key, copy_key = artifact_key("verify", "app.db", main), artifact_key("verify", "app.db", copy)
        assert main_key != copy_key
        assert "passed" in _latest(main_key).data
        assert "FAILED" in _latest(copy_key).data
        [passed] = read_events("walship.verify.passed", flow_run_id=run_id(good))
        [failed] = read_events("walship.verify.failed", flow_run_id=run_id(bad))
        assert passed.resource.id == resource_id("app.db", main)
        assert failed.resource.id == resource_id("app.db", copy) != passed.resource.id
        assert failed.resource.name == passed.resource.name == "app.db"


@pytest.mark.seaweedfs
@pytest.mark.usefixtures("prefect_api")
class TestCredentialsBlock:
    """An AwsCredentials block, saved through the API, is what a run uses against SeaweedFS (which checks
    signatures); the environment holds no credentials at all."""

    @pytest.fixture
    def no_env_credentials(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION"):
            monkeypatch.delenv(name, raising=False)
        # No ~/.aws either: boto3's chain finds nothing.
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    def _block(self, server: SeaweedS3, name: str, secret: str) -> None:
        AwsCredentials(
            aws_access_key_id=server.access_key,
            aws_secret_access_key=secret,
            region_name=server.region,
            aws_client_parameters=AwsClientParameters(endpoint_url=server.endpoint),
        ).save(name, overwrite=True)

    @pytest.mark.usefixtures("no_env_credentials")
    def test_snapshot_and_restore_with_a_block(self, seaweed_server: SeaweedS3, database: Path, tmp_path: Path) -> None:
        seaweed_server.create_bucket("walship-block")
        self._block(seaweed_server, "walship-seaweed", seaweed_server.secret_key)
        replica = "s3://walship-block/app"  # no ?endpoint=: the block's endpoint applies
        state = snapshot_flow(
            database=database, replica=replica, credentials_block="walship-seaweed", return_state=True
        )
        assert state.is_completed(), state
        output = tmp_path / "restored.db"
        restored = restore_flow(replica=replica, output=output, credentials_block="walship-seaweed", return_state=True)
        assert restored.is_completed(), restored
        assert content_digest(output) == content_digest(database)
        # The secret is nowhere the run recorded: parameters, artifacts, logs.
        for run in (state, restored):
            recorded = [str(flow_run(run_id(run)).parameters), *(a.data for a in artifacts(run_id(run)))]
            recorded += _logs(run_id(run))
            assert not [text for text in recorded if seaweed_server.secret_key in str(text)]

    @pytest.mark.usefixtures("no_env_credentials")
    def test_a_wrong_secret_is_refused_with_a_clear_message(self, seaweed_server: SeaweedS3, database: Path) -> None:
        seaweed_server.create_bucket("walship-wrong")
        self._block(seaweed_server, "walship-wrong-secret", "not-the-secret")
        replica = "s3://walship-wrong/app"
        state = snapshot_flow(
            database=database, replica=replica, credentials_block="walship-wrong-secret", return_state=True
        )
        assert state.is_failed()
        with pytest.raises(PermanentStorageError, match=r"access denied .*block 'walship-wrong-secret'"):
            state.result()
        [event] = read_events("walship.snapshot.failed", flow_run_id=run_id(state))
        assert "walship-wrong-secret" in event.payload["reason"]
        assert not [line for line in _logs(run_id(state)) if "Traceback" in line]

    def test_a_missing_block_is_bad_input(self, database: Path, tmp_path: Path) -> None:
        state = snapshot_flow(
            database=database, replica="s3://walship-x/app", credentials_block="no-such-block", return_state=True
        )
        with pytest.raises(Exception, match="credentials block 'no-such-block' does not exist"):
            state.result()
