"""prefect.yaml is valid: entrypoints import, parameters validate, serve builds from it, site values override."""

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.utilities.schema_tools import validate

from deployments.config import PREFECT_YAML, SiteError, load_deployments, load_flow, site_values, with_site
from deployments.local_server import site_overrides
from deployments.serve import build, main
from flows._subject import generated_name
from tests.test_fleet_hosts import host_deployment

DEPLOYMENTS = load_deployments()
NAMES = [d["name"] for d in DEPLOYMENTS]
SCHEDULED = {"snapshot-hourly", "wal-ship", "standby", "retention-daily", "verify-daily"}


def _schema(flow: Flow[Any, Any]) -> dict[str, Any]:
    """The parameter schema Prefect registers with a deployment (what the server enforces)."""
    return flow.parameters.model_dump()


class TestPrefectYaml:
    """Every deployment in prefect.yaml can run."""

    def test_the_expected_deployments_are_declared(self) -> None:
        """Snapshot, shipping, retention and verify are scheduled; restore is ad hoc."""
        assert set(NAMES) >= SCHEDULED | {"restore-adhoc"}
        scheduled = {d["name"] for d in DEPLOYMENTS if d.get("schedules")}
        assert scheduled >= SCHEDULED
        assert "restore-adhoc" not in scheduled

    @pytest.mark.parametrize("spec", DEPLOYMENTS, ids=NAMES)
    def test_entrypoint_imports_a_flow(self, spec: dict[str, Any]) -> None:
        """The entrypoint names a Prefect flow that imports."""
        assert isinstance(load_flow(spec["entrypoint"]), Flow)

    @pytest.mark.parametrize("spec", DEPLOYMENTS, ids=NAMES)
    def test_parameters_validate_against_the_flow(self, spec: dict[str, Any]) -> None:
        """The flow's pydantic model accepts the deployment's parameters, retry policy included."""
        flow = load_flow(spec["entrypoint"])
        validated = flow.validate_parameters(dict(spec["parameters"]))
        assert validated["retry"].attempts == 4

    @pytest.mark.parametrize("spec", DEPLOYMENTS, ids=NAMES)
    def test_parameters_validate_against_the_schema_the_server_enforces(self, spec: dict[str, Any]) -> None:
        """The JSON schema the server checks at run creation accepts them, and enforcement is on."""
        flow = load_flow(spec["entrypoint"])
        validate(spec["parameters"], _schema(flow), raise_on_error=True)
        assert spec["enforce_parameter_schema"] is True
        assert spec["work_pool"]["name"] == "walship"

    @pytest.mark.parametrize(
        ("entrypoint", "parameters", "field"),
        [
            ("flows/snapshot.py:snapshot_flow", {"database": "/x.db", "replica": "file:///r", "level": 99}, "level"),
            ("flows/ship.py:wal_ship_flow", {"database": "/x.db", "replica": "file:///r", "interval": 0}, "interval"),
            ("flows/ship.py:wal_ship_flow", {"database": "/x.db", "replica": "file:///r", "coalesce": 0}, "coalesce"),
            (
                "flows/fleet.py:ship_fleet_flow",
                {"databases": ["/x.db"], "replica": "file:///r", "coalesce": -1},
                "coalesce",
            ),
            (
                "flows/restore.py:restore_flow",
                {"replica": "file:///r", "output": "/o", "retry": {"attempts": 99}},
                "20",
            ),
            ("flows/standby.py:standby_flow", {"replica": "file:///r", "output": "/o", "interval": 0}, "interval"),
            ("flows/standby.py:standby_flow", {"replica": "file:///r", "output": "/o", "duration": -1}, "duration"),
            (
                "flows/standby.py:standby_flow",
                {"replica": "file:///r", "output": "/o", "lag_threshold_seconds": 0},
                "lag_threshold_seconds",
            ),
        ],
    )
    def test_bad_parameters_are_rejected(self, entrypoint: str, parameters: dict[str, Any], field: str) -> None:
        """Both the flow's model and the server's schema refuse an out-of-range value."""
        flow = load_flow(entrypoint)
        with pytest.raises(Exception, match=field):
            flow.validate_parameters(parameters)
        with pytest.raises(Exception, match="|".join((field, "less than", "greater than"))):
            validate(parameters, _schema(flow), raise_on_error=True)

    def test_no_credentials_in_the_file(self) -> None:
        """Credentials come from boto3's chain, never from prefect.yaml."""
        text = PREFECT_YAML.read_text().lower()
        for word in ("secret_access_key", "aws_access_key_id", "session_token", "password"):
            assert word not in text

    def test_shipping_runs_overlap(self) -> None:
        """wal-ship runs overlap by more than start-up varies, never three at once; the next waits to take over."""
        [ship] = [d for d in DEPLOYMENTS if d["name"] == "wal-ship"]
        window, duration = ship["schedules"][0]["interval"], ship["parameters"]["duration"]
        # Start-up (pick-up, process, imports) varied by 20-40 s when measured.
        assert window + 40 <= duration <= 2 * window - 60
        # The next run waits at most for the overlap plus the start-up difference and the final drain.
        assert ship["parameters"]["handover_wait"] >= duration - window + 60
        assert ship["concurrency_limit"] == {"limit": 2, "collision_strategy": "CANCEL_NEW"}

    def test_standby_runs_overlap_as_shipping_runs_do(self) -> None:
        """The standby follows in wal-ship's windows: the same schedule, duration, hand-over wait and concurrency,
        and the site's replica and database id; its copy is a site value of its own."""
        specs = {d["name"]: d for d in DEPLOYMENTS}
        ship, standby = specs["wal-ship"], specs["standby"]
        assert standby["schedules"] == ship["schedules"]
        assert standby["concurrency_limit"] == ship["concurrency_limit"]
        for name in ("duration", "handover_wait", "replica", "database_id", "progress_interval"):
            assert standby["parameters"][name] == ship["parameters"][name], name
        assert standby["parameters"]["output"] == site_values(PREFECT_YAML.read_text())["standby_output"]
        [served] = [
            d for d in load_deployments(PREFECT_YAML, {"standby_output": "/srv/s.db"}) if d["name"] == "standby"
        ]
        assert served["parameters"]["output"] == "/srv/s.db"

    def test_a_hosts_copy_of_the_fleet_deployment(self) -> None:
        """prefect.yaml's example of a host's copy of wal-ship-fleet: its own name and work queue, its own patterns
        and replica, the shipping schedule, and the rest (concurrency, parameters) wal-ship-fleet's; site values
        reach it; the flow accepts its parameters."""
        copy_of_db7 = host_deployment("db7", "/srv/db1/*.db", "s3://b/fleet/db7/{name}")
        specs = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text() + copy_of_db7)["deployments"]}
        fleet, copy = specs["wal-ship-fleet"], specs["wal-ship-fleet-db7"]
        assert copy["work_pool"] == {"name": "walship", "work_queue_name": "db7"}
        assert copy["schedules"] == [{"interval": site_values(PREFECT_YAML.read_text())["ship_window"]}]
        assert {k: v for k, v in copy.items() if k not in ("name", "work_pool", "schedules", "parameters")} == {
            k: v for k, v in fleet.items() if k not in ("name", "work_pool", "parameters")
        }
        assert copy["parameters"] == {
            **fleet["parameters"],
            "databases": ["/srv/db1/*.db"],
            "replica": "s3://b/fleet/db7/{name}",
        }
        validate(copy["parameters"], _schema(load_flow(copy["entrypoint"])), raise_on_error=True)
        changed = yaml.safe_load(with_site(PREFECT_YAML.read_text() + copy_of_db7, {"ship_window": 300}))
        [served] = [d for d in changed["deployments"] if d["name"] == "wal-ship-fleet-db7"]
        assert served["schedules"] == [{"interval": 300}]


class TestSiteValues:
    """Site values are overridden once and reach every deployment that uses them."""

    def test_an_override_reaches_every_alias(self) -> None:
        """Replacing the replica changes it in every deployment that uses the site's; nothing else changes."""
        text = with_site(PREFECT_YAML.read_text(), {"replica": "s3://bucket/app", "database": "/srv/my app.db"})
        changed = {d["name"]: d for d in yaml.safe_load(text)["deployments"]}
        site = site_values(PREFECT_YAML.read_text())
        users = [d for d in DEPLOYMENTS if d["parameters"].get("replica") == site["replica"]]
        assert {"wal-ship", "retention-daily", "verify-daily", "restore-adhoc"} <= {d["name"] for d in users}
        for original in users:
            params = changed[original["name"]]["parameters"]
            assert params["replica"] == "s3://bucket/app"
            assert params.get("database") in (None, "/srv/my app.db")
            # Another database is another id: the id follows the file name unless overridden too.
            assert params.get("database_id") in (None, "my app.db")
            assert changed[original["name"]].get("schedules") == original.get("schedules")
            moved = ("replica", "database", "database_id")
            rest = {k: v for k, v in params.items() if k not in moved}
            assert rest == {k: v for k, v in original["parameters"].items() if k not in moved}

    def test_the_ship_window_and_duration_are_numbers(self) -> None:
        """ship_window sets the schedule's interval and ship_duration the run's, both read back as ints."""
        site = {"ship_window": 5, "ship_duration": "2"}
        [ship] = [d for d in load_deployments(PREFECT_YAML, site) if d["name"] == "wal-ship"]
        assert ship["schedules"] == [{"interval": 5}]
        assert ship["parameters"]["duration"] == 2

    def test_the_generated_file_keeps_site_values_readable(self, tmp_path: Path) -> None:
        """A generated prefect.yaml reads back with the overridden site values."""
        copy = tmp_path / "prefect.yaml"
        copy.write_text(with_site(PREFECT_YAML.read_text(), {"restore_output": "/tmp/out.db"}))
        assert site_values(copy.read_text())["restore_output"] == "/tmp/out.db"
        assert site_values(copy.read_text())["database"] == site_values(PREFECT_YAML.read_text())["database"]

    def test_an_unknown_site_value_is_refused(self) -> None:
        """A typo in an override names the values that exist."""
        with pytest.raises(SiteError, match=r"unknown site value 'databse'.*database"):
            with_site(PREFECT_YAML.read_text(), {"databse": "/x.db"})


class TestServe:
    """serve.py builds the deployments from prefect.yaml."""

    def test_serve_builds_every_deployment_with_its_schedule(self) -> None:
        """Each deployment keeps its schedules, concurrency and schema enforcement."""
        built = {d.name: d for d in build()}
        assert set(built) == set(NAMES)
        assert built["snapshot-hourly"].schedules[0].schedule.cron == "0 * * * *"
        assert not built["restore-adhoc"].schedules
        ship = built["wal-ship"]
        assert ship.schedules[0].schedule.interval.total_seconds() < ship.parameters["duration"]
        assert ship.parameters["handover_wait"] > 0
        assert ship.concurrency_limit == 2
        assert ship.concurrency_options is not None
        assert ship.concurrency_options.collision_strategy == "CANCEL_NEW"
        assert all(d.enforce_parameter_schema for d in built.values())

    def test_serve_applies_overrides_and_selects(self) -> None:
        """--set and --only: one deployment, pointed at another database."""
        [ship] = build(site={"database": "/srv/app.db", "ship_window": 30}, only=["wal-ship"])
        assert ship.parameters["database"] == "/srv/app.db"
        assert ship.schedules[0].schedule.interval.total_seconds() == 30

    def test_serve_refuses_unknown_names_with_status_2(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A misspelt deployment or site value is a usage error, reported in one line."""
        for argv in (["--only", "wal-shipp"], ["--set", "replca=s3://b/p"]):
            with pytest.raises(SystemExit) as exited:
                main(argv)
            assert exited.value.code == 2
            assert capsys.readouterr().err.startswith("error: ")


class TestForms:
    """What the deployment form shows, and what the server's schema check refuses, for every deployed flow."""

    @pytest.mark.parametrize("spec", DEPLOYMENTS, ids=NAMES)
    def test_every_field_has_a_title_and_a_description(self, spec: dict[str, Any]) -> None:
        """No raw identifier as a label, no field without a line of help, no "X | None" toggle."""
        properties = _schema(load_flow(spec["entrypoint"]))["properties"]
        for name, field in properties.items():
            assert field["title"] != name, name
            assert field.get("description"), name
            assert "\n" not in field["description"], name
            assert "anyOf" not in field, (name, field)
            # The UI fills a null default in, then refuses it against the plain type.
            assert field.get("default", "absent") is not None, (name, field)

    @pytest.mark.parametrize(
        ("parameters", "field"),
        [
            ({"timestamp": "yesterday 8am"}, "timestamp"),
            ({"timestamp": "2026-11-29T14"}, "timestamp"),
            ({"snapshot_key": "snapshots/latest"}, "snapshot_key"),
            ({"sequence": -1}, "sequence"),
            ({"generation": "newest"}, "generation"),
            ({"database_id": "var/app.db"}, "database_id"),
            ({"replica": "/var/backups/app"}, "replica"),
        ],
    )
    def test_the_server_schema_refuses_bad_restore_values(self, parameters: dict[str, Any], field: str) -> None:
        """What the server checks at creation (it ignores format: date-time, hence patterns)."""
        flow = load_flow("flows/restore.py:restore_flow")
        good = {"replica": "file:///r", "output": "/o"}
        errors = validate({**good, **parameters}, _schema(flow))
        assert errors, parameters
        assert field in str(errors[0].path) or field in str(errors[0].message) or field in str(errors)

    def test_an_empty_or_null_optional_value_means_none(self) -> None:
        """What the form sends for a field left empty (nothing, "", or null) reaches the flow as None."""
        flow = load_flow("flows/restore.py:restore_flow")
        good = {"replica": "file:///r", "output": "/o"}
        for value in ({}, {"snapshot_key": "", "timestamp": ""}, {"snapshot_key": None, "sequence": None}):
            assert validate({**good, **value}, _schema(flow)) == []
            validated = flow.validate_parameters({**good, **value})
            assert validated["snapshot_key"] is validated["timestamp"] is validated["sequence"] is None

    @pytest.mark.parametrize(
        "timestamp", ["2026-11-29", "2026-11-29T14:16", "2026-11-29 14:16:00+01:00", "2026-11-29T14:16:00.5Z"]
    )
    def test_iso_timestamps_pass_both_checks(self, timestamp: str) -> None:
        flow = load_flow("flows/restore.py:restore_flow")
        parameters = {"replica": "file:///r", "output": "/o", "timestamp": timestamp}
        assert validate(parameters, _schema(flow)) == []
        assert flow.validate_parameters(parameters)["timestamp"].year == 2026


class TestLocalServer:
    """`make serve` takes its home, port and site values from the environment or --set."""

    def test_site_values_from_the_environment_and_set(self, tmp_path: Path) -> None:
        environ = {"WALSHIP_DATABASE": "/srv/env.db", "WALSHIP_REPLICA": "s3://b/env", "WALSHIP_OTHER": "x"}
        assert site_overrides({}, environ) == {"database": "/srv/env.db", "replica": "s3://b/env"}
        chosen = site_overrides({"replica": "s3://b/set"}, environ)
        assert chosen == {"database": "/srv/env.db", "replica": "s3://b/set"}

    def test_no_database_means_the_demo(self) -> None:
        overrides = site_overrides({"credentials_block": "walship-s3"}, {})
        assert str(overrides["database"]).endswith("build/demo/app.db")
        assert overrides["credentials_block"] == "walship-s3"

    def test_prefect_home_is_honoured(self, tmp_path: Path) -> None:
        import subprocess
        import sys

        code = "import deployments.local_server as s; print(s.HOME)"
        env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == str(tmp_path / "home")


class TestRunNames:
    """Which run names are Prefect's own (replaced by `<flow>-<database id>-<time>`) and which were typed."""

    @pytest.mark.parametrize(
        "name", ["bold-okapi", "gamma5-minas-tensor", "alpha-canis-majoris", "omega12-tauri-nebula"]
    )
    def test_generated_names_are_replaced(self, name: str) -> None:
        assert generated_name(name)

    @pytest.mark.parametrize(
        "name",
        ["ops-before-migration-4711", "nightly-check-2", "before-migration-4711", "snapshot-app.db-20261129T1416"],
    )
    def test_typed_names_are_kept(self, name: str) -> None:
        assert not generated_name(name)

    def test_prefect_slugs_are_recognised(self) -> None:
        from prefect.utilities.names import generate_slug

        assert all(generated_name(generate_slug(2)) for _ in range(2000))
