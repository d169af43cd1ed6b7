"""A bad parameter value: refused at creation with a 409 naming the field; if it reaches a run anyway (the Python
API, or a deployment whose schema is not enforced), the run fails with one plain line naming the field and the fix.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError

from flows.ship import wal_ship_flow
from flows.snapshot import snapshot_flow
from tests.prefect_api import flow_run

_PROJECT = Path(__file__).resolve().parent.parent


def _one_plain_line(message: str | None, *fragments: str) -> None:
    assert message is not None
    assert "\n" not in message.strip(), message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.usefixtures("prefect_api")
class TestBadValuesReachingARun:
    def test_from_the_python_api(self, database: Path, tmp_path: Path) -> None:
        state = snapshot_flow(database=database, replica=f"file://{tmp_path / 'r'}", level=40, return_state=True)
        assert state.is_failed()
        _one_plain_line(state.message, "level", "less than or equal to 22")
        assert not (tmp_path / "r").exists()

    def test_on_a_worker_without_schema_enforcement(self, prefect_api: str, database: Path, tmp_path: Path) -> None:
        """Run as a worker runs it: no traceback, no dump of every parameter, one line in the run's state."""
        parameters: dict[str, Any] = {
            "database": str(database),
            "replica": f"file://{tmp_path / 'r'}",
            "duration": "ten",
            "interval": 0,
        }
        with get_client(sync_client=True) as client:
            created = client.create_flow_run(wal_ship_flow, parameters=parameters)
        env = {
            **os.environ,
            "PREFECT_API_URL": prefect_api,
            "PREFECT__FLOW_RUN_ID": str(created.id),
            "PREFECT__FLOW_ENTRYPOINT": "flows/ship.py:wal_ship_flow",
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
        assert "Parameters: {" not in output, output
        state = flow_run(created.id).state
        assert state is not None
        assert state.is_failed(), state
        _one_plain_line(state.message, "duration should be a valid number", "interval should be greater than 0")
        assert not (tmp_path / "r").exists()


@pytest.mark.usefixtures("prefect_api")
def test_the_409_names_the_field(tmp_path: Path) -> None:
    """A deployment with its schema enforced refuses the run at creation, naming the field."""
    with get_client(sync_client=True) as client:
        deployment = client.create_deployment(
            client.create_flow(wal_ship_flow),
            "ship-validation",
            parameter_openapi_schema=wal_ship_flow.parameters.model_dump_for_openapi(),
            enforce_parameter_schema=True,
        )
        parameters = {"database": str(tmp_path / "app.db"), "replica": f"file://{tmp_path}", "interval": 0}
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(deployment, parameters=parameters)
    assert refused.value.response.status_code == 409
    assert "field 'interval'" in refused.value.response.json()["detail"]
