"""One name per database under a real Prefect API, and parameters refused when the run is created.

Run names, artifact keys and event resources all name a database by the id
recorded in its replica (else the database's file name), whether the run
came from the CLI or a deployment; each run's name is its own; a name
someone typed is kept. A timestamp that is no real date is refused with a
409 naming the field, and one that still reaches a run ends it in one line.
"""

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.flow_engine import run_flow_sync

from flows._events import resource_id
from flows._params import TIMESTAMP
from flows._report import artifact_key
from flows.restore import restore_flow
from flows.snapshot import snapshot_flow
from tests.helpers import walship
from tests.prefect_api import artifacts, flow_run, read_events, run_id
from walship.models import utcnow

_PROJECT = Path(__file__).resolve().parent.parent


def _replica_named_app(database: Path, tmp_path: Path) -> str:
    """A replica of app.db whose last folder is ``app``: the two names the issue saw."""
    replica = f"file://{tmp_path / 'backups' / 'app'}"
    assert snapshot_flow(database=database, replica=replica, return_state=True).is_completed()
    return replica


def _restore_deployment(name: str) -> UUID:
    """A deployment of the restore flow with its parameter schema enforced (no worker runs it)."""
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(restore_flow)
        return client.create_deployment(
            flow_id,
            name,
            parameter_openapi_schema=restore_flow.parameters.model_dump_for_openapi(),
            enforce_parameter_schema=True,
        )


@pytest.mark.usefixtures("prefect_api")
class TestOneDatabaseId:
    def test_cli_restore_names_the_recorded_id(self, api_env: dict[str, str], database: Path, tmp_path: Path) -> None:
        """`walship restore` in flow mode: run name, artifact key and failure event all say app.db, not app."""
        replica = _replica_named_app(database, tmp_path)
        since = utcnow()
        result = walship("restore", "--replica", replica, "--output", str(tmp_path / "restored.db"), env=api_env)
        assert result.returncode == 0, result.stderr
        with get_client(sync_client=True) as client:
            [run] = [
                r
                for r in client.read_flow_runs()
                if r.parameters.get("replica") == replica and r.start_time and r.start_time >= since
            ]
        assert run.name.startswith("restore-app.db-"), run.name
        keys = [a.key for a in artifacts(run.id, "markdown")]
        assert keys == [artifact_key("restore", "app.db", replica)]

    def test_failure_event_names_the_recorded_id(self, database: Path, tmp_path: Path) -> None:
        replica = _replica_named_app(database, tmp_path)
        existing = tmp_path / "exists.db"
        existing.write_bytes(b"precious")
        state = restore_flow(replica=replica, output=existing, return_state=True)
        assert state.is_failed()
        [event] = read_events("walship.restore.failed", flow_run_id=run_id(state))
        assert event.resource.id == resource_id("app.db", replica)

    def test_runs_in_the_same_minute_have_their_own_names(self, database: Path, tmp_path: Path) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        states = [snapshot_flow(database=database, replica=replica, return_state=True) for _ in range(2)]
        names = {flow_run(run_id(state)).name for state in states}
        assert len(names) == 2, names
        assert all(name.startswith("snapshot-app.db-") for name in names), names

    @pytest.mark.parametrize("typed", ["nightly-drill", "before-upgrade"])
    def test_a_typed_name_is_kept(self, typed: str, database: Path, tmp_path: Path) -> None:
        """A run created with a name (as the UI's custom-run form does) keeps it, two plain words included."""
        replica = _replica_named_app(database, tmp_path)
        parameters = {"replica": replica, "output": str(tmp_path / "restored.db")}
        with get_client(sync_client=True) as client:
            created = client.create_flow_run(restore_flow, name=typed, parameters=parameters)
        state: Any = run_flow_sync(restore_flow, flow_run=created, parameters=parameters, return_type="state")
        assert state.is_completed()
        assert flow_run(created.id).name == typed


@pytest.mark.usefixtures("prefect_api")
class TestTimestampValidation:
    @pytest.mark.parametrize("bad", ["2026-13-45T25:99Z", "2026-02-29T10:00Z", "2026-04-31", "2026-01-01T24:00Z"])
    def test_an_impossible_date_is_refused_at_creation(self, bad: str, tmp_path: Path) -> None:
        deployment = _restore_deployment("restore-validation")
        parameters = {"replica": f"file://{tmp_path}", "output": str(tmp_path / "out.db"), "timestamp": bad}
        with get_client(sync_client=True) as client, pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment, parameters=parameters)
        assert refused.value.response.status_code == 409
        assert "timestamp" in refused.value.response.json()["detail"]

    @pytest.mark.parametrize(
        "good", ["2024-02-29T10:00Z", "2026-11-29T14:16:00.5+01:00", "2000-02-29", "2026-12-31 23:59:59"]
    )
    def test_a_real_date_is_accepted(self, good: str, tmp_path: Path) -> None:
        deployment = _restore_deployment("restore-validation")
        parameters = {"replica": f"file://{tmp_path}", "output": str(tmp_path / "out.db"), "timestamp": good}
        with get_client(sync_client=True) as client:
            created = client.create_flow_run_from_deployment(deployment, parameters=parameters)
        assert created.parameters["timestamp"] == good
        assert re.match(TIMESTAMP, good)

    def test_a_bad_timestamp_that_reaches_a_run_ends_it_in_one_line(self, prefect_api: str, tmp_path: Path) -> None:
        """A run created without the schema enforced, run as a worker runs it: one plain line, no traceback."""
        parameters = {
            "replica": f"file://{tmp_path}",
            "output": str(tmp_path / "out.db"),
            "timestamp": "2026-13-45T25:99Z",
        }
        with get_client(sync_client=True) as client:
            created = client.create_flow_run(restore_flow, parameters=parameters)
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "PREFECT__FLOW_RUN_ID": str(created.id),
            "PREFECT__FLOW_ENTRYPOINT": "flows/restore.py:restore_flow",
        }
        engine = subprocess.run(
            [sys.executable, "-m", "prefect.engine"],
            check=False,
            env=env,
            cwd=_PROJECT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = engine.stdout + engine.stderr
        assert "Traceback" not in output, output
        assert "2026-13-45T25:99Z" in output, output
        run = flow_run(created.id)
        assert run.name.startswith(f"restore-{tmp_path.name}-"), run.name  # its own name, not a random one
        state = run.state
        assert state is not None
        assert state.is_failed(), state
        assert state.message is not None
        assert "timestamp" in state.message, state
        assert "\n" not in state.message.strip(), state.message
