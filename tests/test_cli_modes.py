"""How the CLI runs a command: the core directly, or as a Prefect flow run when an API is configured."""

import os
import re
import signal
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

from bench.workload import content_digest
from tests.helpers import walship
from tests.shipping import Ship, WriterGroup, wait_until
from walship.models import utcnow
from walship_cli._mode import prefect_api_configured

# A `prefect` that cannot be imported: a command that needs Prefect fails with it.
_NO_PREFECT = "raise ImportError('this test forbids importing prefect')\n"


def _python_path(fake: Path) -> str:
    """``fake`` first on the path, then whatever the session's path holds (a checkout not installed, say)."""
    return os.pathsep.join(p for p in (str(fake), os.environ.get("PYTHONPATH", "")) if p)


def _flow_runs_of(replica: str, since: object) -> list[str]:
    """Names of the flow runs started since ``since`` whose ``replica`` parameter is ``replica``."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
    return [run.name for run in runs if run.parameters.get("replica") == replica]


class TestDirectMode:
    """Without a Prefect API, every command runs the core and never imports Prefect."""

    def test_every_command_works_without_prefect(self, database: Path, tmp_path: Path) -> None:
        fake = tmp_path / "site" / "prefect"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(_NO_PREFECT)
        env = {"PYTHONPATH": _python_path(fake.parent), "PREFECT_API_URL": "", "PREFECT_HOME": str(tmp_path / "home")}
        replica = f"file://{tmp_path / 'replica'}"
        shipped = f"file://{tmp_path / 'shipped'}"
        output = tmp_path / "restored.db"
        commands = [
            ("snapshot", str(database), "--replica", replica),
            ("restore", "--replica", replica, "--output", str(output)),
            ("verify", "--replica", replica),
            ("retention", "--replica", replica, "--keep-last", "1", "--dry-run"),
            ("ship", str(database), "--replica", shipped, "--once"),
            ("status", "--replica", shipped),
            ("query", "--replica", shipped, "SELECT count(*) FROM accounts"),
        ]
        for command in commands:
            result = walship(*command, env=env)
            assert result.returncode == 0, (command, result.stderr)
            assert "prefect" not in result.stderr.lower(), (command, result.stderr)
        assert content_digest(output) == content_digest(database)

    def test_sigterm_ends_the_window_with_everything_shipped(
        self, database: Path, tmp_path: Path, spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        writers = WriterGroup(database, [1, 2], rate=200)
        spawned.append(writers)
        ship = Ship(database, replica, "--duration", "600", env={"PREFECT_API_URL": ""})
        spawned.append(ship)
        wait_until(lambda: any((tmp_path / "replica").rglob("*.wal.zst")), "the first shipped segment")
        writers.stop()
        ship.process.send_signal(signal.SIGTERM)
        assert ship.wait(timeout=60) == 0, ship.output
        assert re.search(r"shipped [1-9]\d* segments", ship.output), ship.output
        output = tmp_path / "restored.db"
        restored = walship("restore", "--replica", replica, "--output", str(output))
        assert restored.returncode == 0, restored.stderr
        assert content_digest(output) == content_digest(database)


class TestPrefectMode:
    """With an API configured the command is a flow run there; --no-prefect and --prefect override."""

    def test_api_in_environment_makes_a_flow_run(self, api_env: dict[str, str], database: Path, tmp_path: Path) -> None:
        since = utcnow()
        as_flow, direct = f"file://{tmp_path / 'flow'}", f"file://{tmp_path / 'direct'}"
        assert walship("snapshot", str(database), "--replica", as_flow, env=api_env).returncode == 0
        assert walship("--no-prefect", "snapshot", str(database), "--replica", direct, env=api_env).returncode == 0
        time.sleep(0.5)  # the run's start time is set by the server; nothing is timed here
        assert len(_flow_runs_of(as_flow, since)) == 1
        assert _flow_runs_of(direct, since) == []

    def test_runs_without_a_credentials_block_never_import_prefect_aws(
        self, api_env: dict[str, str], database: Path, tmp_path: Path
    ) -> None:
        """prefect-aws (its ECS worker, aiobotocore, aiohttp) is loaded only by a run that names a block."""
        fake = tmp_path / "site" / "prefect_aws"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('this test forbids importing prefect_aws')\n")
        env = {**api_env, "PYTHONPATH": str(fake.parent)}
        replica, output = f"file://{tmp_path / 'replica'}", tmp_path / "restored.db"
        for command in (
            ("snapshot", str(database), "--replica", replica),
            ("restore", "--replica", replica, "--output", str(output)),
            ("verify", "--replica", replica),
        ):
            result = walship("--prefect", *command, env=env)
            assert result.returncode == 0, (command, result.stderr)
        assert content_digest(output) == content_digest(database)

    def test_query_reads_storage_directly_with_an_api_too(
        self, api_env: dict[str, str], database: Path, tmp_path: Path
    ) -> None:
        """A query is an interactive read, not a flow run: with an API configured it still never imports Prefect."""
        replica = f"file://{tmp_path / 'replica'}"
        assert walship("--no-prefect", "snapshot", str(database), "--replica", replica).returncode == 0
        fake = tmp_path / "site" / "prefect"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(_NO_PREFECT)
        env = {**api_env, "PYTHONPATH": _python_path(fake.parent)}
        since = utcnow()
        result = walship("query", "--replica", replica, "SELECT count(*) FROM accounts", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "count(*)"
        time.sleep(0.5)  # the run's start time is set by the server; nothing is timed here
        assert _flow_runs_of(replica, since) == []

    def test_api_in_active_profile_makes_a_flow_run(self, prefect_api: str, database: Path, tmp_path: Path) -> None:
        since = utcnow()
        replica = f"file://{tmp_path / 'forced'}"
        profiles = tmp_path / "home" / "profiles.toml"
        profiles.parent.mkdir()
        profiles.write_text(f'active = "site"\n[profiles.site]\nPREFECT_API_URL = "{prefect_api}"\n')
        env = {"PREFECT_HOME": str(profiles.parent)}
        if "PREFECT_API_URL" in os.environ:
            pytest.skip("the session's environment sets PREFECT_API_URL")
        assert walship("snapshot", str(database), "--replica", replica, env=env).returncode == 0
        assert len(_flow_runs_of(replica, since)) == 1


class TestApiDetection:
    """The API is found where Prefect finds it: the environment, then the active profile."""

    def test_sources(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
        monkeypatch.delenv("PREFECT_PROFILE", raising=False)
        monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
        monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
        assert not prefect_api_configured()  # no profiles file: a fresh machine
        (tmp_path / "profiles.toml").write_text(
            'active = "local"\n[profiles.local]\n[profiles.site]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
        )
        assert not prefect_api_configured()
        monkeypatch.setenv("PREFECT_PROFILE", "site")
        assert prefect_api_configured()
        monkeypatch.setenv("PREFECT_API_URL", "")
        assert not prefect_api_configured()  # set but empty: no API, as for Prefect
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
        monkeypatch.delenv("PREFECT_PROFILE")
        assert prefect_api_configured()
        (tmp_path / "profiles.toml").write_text("not toml [")
        monkeypatch.delenv("PREFECT_API_URL")
        assert not prefect_api_configured()
