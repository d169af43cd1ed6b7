"""prefect.yaml is valid: entrypoints import, parameters validate, serve builds from it."""

import pytest
from prefect import Flow

from deployments.config import load_deployments, load_flow
from deployments.serve import build

DEPLOYMENTS = load_deployments()


class TestPrefectYaml:
    """Every deployment in prefect.yaml can run."""

    @pytest.mark.parametrize("spec", DEPLOYMENTS, ids=[d["name"] for d in DEPLOYMENTS])
    def test_parameters_validate_against_the_flow(self, spec: dict[str, object]) -> None:
        flow = load_flow(str(spec["entrypoint"]))
        assert isinstance(flow, Flow)
        validated = flow.validate_parameters(dict(spec["parameters"]))  # type: ignore[call-overload]
        assert validated["retry"].attempts == 4

    def test_bad_parameters_are_rejected(self) -> None:
        flow = load_flow("flows/snapshot.py:snapshot_flow")
        with pytest.raises(Exception, match="level"):
            flow.validate_parameters({"database": "/x.db", "replica": "file:///r", "level": 99})

    def test_no_credentials_in_the_file(self) -> None:
        from deployments.config import PREFECT_YAML

        text = PREFECT_YAML.read_text().lower()
        assert "secret_access_key" not in text
        assert "aws_access_key_id" not in text

    def test_serve_builds_every_deployment_with_its_schedule(self) -> None:
        built = {d.name: d for d in build()}
        assert set(built) == {d["name"] for d in DEPLOYMENTS}
        assert built["snapshot-hourly"].schedules[0].schedule.cron == "0 * * * *"  # type: ignore[union-attr]
        assert not built["restore-adhoc"].schedules
        ship = built["wal-ship"]
        assert ship.schedules[0].schedule.interval.total_seconds() == ship.parameters["duration"]  # type: ignore[union-attr]
        assert ship.concurrency_limit == 1
        assert ship.concurrency_options is not None
        assert ship.concurrency_options.collision_strategy == "CANCEL_NEW"
