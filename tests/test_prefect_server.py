"""prefect.yaml's deployments on a real `prefect server`: a process work pool and worker, serve, schema checks.

One server per module (started as `make serve` starts it); every process a
test starts runs in its own process group and is ended, group and all, even
when the test fails.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from bench.workload import content_digest
from deployments.config import PREFECT_YAML, with_site
from deployments.local_server import prefect_env, start_server, stop_group, wait_healthy, wind_down
from flows._events import resource_id
from flows._report import artifact_key
from tests.shipping import WriterGroup
from walship.catalog import list_snapshot_keys
from walship.storage import open_store

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    """A running `prefect server start` and the environment its clients need."""

    port: int
    home: Path
    log: Path

    def env(self) -> dict[str, str]:
        # The pull step of prefect.yaml changes into the project directory.
        return {**prefect_env(self.home, self.port), "WALSHIP_PROJECT_DIR": str(ROOT)}

    def run(
        self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command to completion in its own process group (``env``: another environment than ``env()``);
        the group is ended whatever happens."""
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=self.env() if env is None else env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        finally:
            stop_group(process.pid, timeout=10)
            process.wait()
        return subprocess.CompletedProcess(argv, process.returncode, output, "")

    def prefect(
        self, *argv: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN / "prefect"), *argv, timeout=timeout, env=env)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        for attempt in range(6):
            response = httpx.request(method, f"http://127.0.0.1:{self.port}/api{path}", json=body, timeout=30)
            # A busy server (its SQLite database locked) answers 503 for a moment.
            if response.status_code not in (429, 503):
                break
            time.sleep(0.5 * 2**attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    def flow_run(self, run_id: UUID) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{run_id}")  # type: ignore[no-any-return]

    def artifacts(self, run_id: UUID) -> list[dict[str, Any]]:
        return self.api("POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}})  # type: ignore[no-any-return]

    def events(self, name: str, resource_id: str, run_id: UUID, since: datetime) -> list[dict[str, Any]]:
        """Events called ``name`` about ``resource_id`` that flow run ``run_id`` emitted."""
        body = {
            "filter": {
                "occurred": {"since": since.isoformat()},
                "event": {"name": [name]},
                "resource": {"id": [resource_id]},
                "related": {"id": [f"prefect.flow-run.{run_id}"]},
            },
            "limit": 50,
        }
        return self.api("POST", "/events/filter", body)["events"]  # type: ignore[no-any-return]

    def wait_for(self, what: str, probe: Any, timeout: float = 180) -> Any:
        """Poll ``probe`` until it returns something truthy (the server records asynchronously)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := probe():
                return found
            time.sleep(1)
        raise AssertionError(f"{what} did not happen within {timeout:.0f} s; server log: {self.log}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    process = start_server(home, port, home / "server.log")
    try:
        wait_healthy(port, process)
        yield Server(port, home, home / "server.log")
    finally:
        stop_group(process.pid)
        process.wait()


@dataclass
class Site:
    """A database and its replica, and prefect.yaml pointed at them."""

    database: Path
    replica: str
    restore_output: Path
    prefect_yaml: Path


def _site(base_database: Path, directory: Path) -> Site:
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "app.db"
    shutil.copyfile(base_database, database)
    replica = f"file://{directory / 'replica'}"
    output = directory / "restored.db"
    prefect_yaml = directory / "prefect.yaml"
    # Only the site values change: schedules, retries and parameters stay prefect.yaml's own.
    # The ad hoc restore reads what the snapshot deployment wrote: one replica for both here.
    overrides = {"database": database, "replica": replica, "snapshot_replica": replica, "restore_output": output}
    prefect_yaml.write_text(with_site(PREFECT_YAML.read_text(), overrides))
    return Site(database, replica, output, prefect_yaml)


@pytest.fixture(scope="module")
def deployed(server: Server, base_database: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A process work pool named as prefect.yaml says, and `prefect deploy --all` into it."""
    site = _site(base_database, tmp_path_factory.mktemp("pool-site"))
    created = server.prefect("work-pool", "create", "walship", "--type", "process")
    assert created.returncode == 0, created.stdout
    deploy = server.prefect("deploy", "--no-prompt", "--all", "--prefect-file", str(site.prefect_yaml))
    assert deploy.returncode == 0, deploy.stdout
    return site


def _run_deployment(server: Server, name: str, *params: str, run_name: str | None = None) -> UUID:
    argv = ["deployment", "run", name, *(["--flow-run-name", run_name] if run_name else [])]
    for param in params:
        argv += ["--param", param]
    result = server.prefect(*argv)
    assert result.returncode == 0, result.stdout
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout
    return UUID(match.group(1))


def _run_worker_once(server: Server, *run_ids: UUID) -> dict[UUID, str]:
    """One `prefect worker start --run-once` pass; the final state name of each run."""
    worker = server.prefect("worker", "start", "--pool", "walship", "--run-once", timeout=600)
    assert worker.returncode == 0, worker.stdout

    def final_states() -> dict[UUID, str] | None:
        states = {run_id: server.flow_run(run_id)["state"] for run_id in run_ids}
        if all(state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for state in states.values()):
            return {run_id: state["name"] for run_id, state in states.items()}
        return None

    return server.wait_for("the worker's runs to end", final_states)  # type: ignore[no-any-return]


class TestWorkPool:
    """`prefect deploy --all` into a process pool, ad hoc runs, one worker pass."""

    def test_every_deployment_is_registered_with_its_schema_enforced(self, server: Server, deployed: Site) -> None:
        """Each deployment of prefect.yaml exists on the server, in the pool, with its parameters schema enforced."""
        found = {d["name"]: d for d in server.api("POST", "/deployments/filter", {})}
        assert {"snapshot-hourly", "wal-ship", "retention-daily", "verify-daily", "restore-adhoc"} <= set(found)
        for deployment in found.values():
            assert deployment["work_pool_name"] == "walship"
            assert deployment["enforce_parameter_schema"] is True
        assert found["snapshot-hourly"]["parameters"]["database"] == str(deployed.database)

    def test_snapshot_then_restore_through_a_worker(self, server: Server, deployed: Site) -> None:
        """An ad hoc snapshot and restore complete on a worker, publish artifacts and emit events; the copy is equal."""
        started = datetime.now(UTC) - timedelta(seconds=5)
        snapshot = _run_deployment(server, "snapshot/snapshot-hourly", "level=5")
        assert _run_worker_once(server, snapshot) == {snapshot: "Completed"}
        run = server.flow_run(snapshot)
        assert run["name"].startswith("snapshot-app.db-")
        assert run["parameters"]["level"] == 5
        artifacts = {a["key"]: a for a in server.artifacts(snapshot)}
        assert "zstd level 5" in artifacts[artifact_key("snapshot", "app.db", deployed.replica)]["data"], artifacts

        # A name the operator typed is kept, not replaced by the flow's own.
        restore = _run_deployment(server, "restore/restore-adhoc", run_name="ops-before-migration-4711")
        assert _run_worker_once(server, restore) == {restore: "Completed"}
        assert server.flow_run(restore)["name"] == "ops-before-migration-4711"
        artifacts = {a["key"]: a for a in server.artifacts(restore)}
        assert "integrity_check | ok" in artifacts[artifact_key("restore", "app.db", deployed.replica)]["data"]
        assert content_digest(deployed.restore_output) == content_digest(deployed.database)

        [event] = server.wait_for(
            "walship.snapshot.completed",
            lambda: server.events(
                "walship.snapshot.completed", resource_id("app.db", deployed.replica), snapshot, started
            ),
        )
        assert event["resource"]["walship.replica"] == deployed.replica

    def test_a_bad_parameter_is_rejected_when_the_run_is_created(self, server: Server, deployed: Site) -> None:
        """A level outside 1-22 or a retry count over 20 is refused by the server: no run is created."""

        def ad_hoc_runs() -> int:
            # The scheduler adds auto-scheduled runs meanwhile; only ad hoc ones count here.
            query = {"deployments": {"name": {"any_": ["snapshot-hourly"]}}}
            return sum(not run["auto_scheduled"] for run in server.api("POST", "/flow_runs/filter", query))

        before = ad_hoc_runs()
        for param, field in (("level=99", "level"), ('retry={"attempts": 99}', "attempts")):
            result = server.prefect("deployment", "run", "snapshot/snapshot-hourly", "--param", param)
            assert result.returncode != 0, result.stdout
            assert "Error creating flow run: Validation failed" in result.stdout, result.stdout
            assert field in result.stdout
        assert ad_hoc_runs() == before

    def test_every_form_field_is_titled_described_and_constrained(self, server: Server, deployed: Site) -> None:
        """The schema the server holds for each deployment: every top-level field has a title other than its
        identifier and a description; optional fields have no null branch; shaped strings have a pattern."""
        found = {d["name"]: d for d in server.api("POST", "/deployments/filter", {})}
        for name in (
            "snapshot-hourly",
            "snapshot-many",
            "wal-ship",
            "retention-daily",
            "verify-daily",
            "restore-adhoc",
        ):
            properties = found[name]["parameter_openapi_schema"]["properties"]
            for field, schema in properties.items():
                assert schema.get("title") not in (None, field), (name, field, schema)
                assert schema.get("description"), (name, field)
                assert "anyOf" not in schema, (name, field, schema)
                # The UI fills a null default in and then refuses it against the plain type.
                assert schema.get("default", "absent") is not None, (name, field, schema)
            assert "pattern" in properties["replica"], name
            assert "credentials_block" in properties, name
        restore = found["restore-adhoc"]["parameter_openapi_schema"]["properties"]
        assert restore["timestamp"]["pattern"]
        assert restore["snapshot_key"]["pattern"]
        assert restore["sequence"]["minimum"] == 0

    @pytest.mark.parametrize(
        ("parameters", "field"),
        [
            ({"timestamp": "yesterday 8am"}, "timestamp"),
            ({"snapshot_key": "../../etc/passwd"}, "snapshot_key"),
            ({"sequence": -1}, "sequence"),
            ({"generation": "latest"}, "generation"),
            ({"credentials_block": "My Block"}, "credentials_block"),
        ],
    )
    def test_a_bad_restore_parameter_is_refused_with_409(
        self, server: Server, deployed: Site, parameters: dict[str, Any], field: str
    ) -> None:
        """A bad timestamp, key or sequence is refused when the run is created (HTTP 409), not on the worker."""
        [deployment] = server.api("POST", "/deployments/filter", {"deployments": {"name": {"any_": ["restore-adhoc"]}}})
        response = httpx.post(
            f"http://127.0.0.1:{server.port}/api/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": parameters},
            timeout=30,
        )
        assert response.status_code == 409, response.text
        assert field in response.json()["detail"]
        good = server.api(
            "POST",
            f"/deployments/{deployment['id']}/create_flow_run",
            {
                "parameters": {"timestamp": "2026-11-29T14:16:00Z"},
                "state": {"type": "CANCELLED", "name": "Cancelled"},
            },
        )
        assert good["parameters"]["timestamp"] == "2026-11-29T14:16:00Z"


class TestServe:
    """deployments/serve.py: schedules from prefect.yaml run with no worker."""

    def test_a_scheduled_interval_run_completes(self, server: Server, base_database: Path, tmp_path: Path) -> None:
        """wal-ship served with a 5 s window (site overrides) completes a scheduled run that ships; winding
        down leaves no run in flight and the concurrency slot free."""
        site = _site(base_database, tmp_path / "site")
        # TestWorkPool deployed wal-ship into the pool. serve.py would update that
        # deployment in place, and it would keep its work pool, so its runs would
        # wait for a worker: an operator moving to serve deletes it first, as here.
        server.prefect("deployment", "delete", "wal-ship/wal-ship")
        argv = [str(BIN / "python"), "-m", "deployments.serve", "--only", "wal-ship"]
        for setting in (f"database={site.database}", f"replica={site.replica}", "ship_window=5", "ship_duration=1"):
            argv += ["--set", setting]
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            serving = subprocess.Popen(
                argv, cwd=ROOT, env=server.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:

            def completed_run() -> dict[str, Any] | None:
                assert serving.poll() is None, log.read_text()
                runs = server.api(
                    "POST",
                    "/flow_runs/filter",
                    {
                        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                        "deployments": {"name": {"any_": ["wal-ship"]}},
                    },
                )
                mine = [r for r in runs if r["parameters"]["database"] == str(site.database)]
                return mine[0] if mine else None

            run = server.wait_for(f"a completed scheduled wal-ship run (see {log})", completed_run, timeout=300)
            wind_down(server.port)  # what `make stop` does before it ends serve
        finally:
            stop_group(serving.pid)
            serving.wait()
        active = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}}
        assert server.api("POST", "/flow_runs/filter", active) == []
        [deployment] = server.api("POST", "/deployments/filter", {"deployments": {"name": {"any_": ["wal-ship"]}}})
        assert deployment["global_concurrency_limit"]["active_slots"] == 0  # the next shipper can start
        assert run["auto_scheduled"] is True
        assert run["parameters"]["duration"] == 1
        assert run["name"].startswith("wal-ship-app.db-")
        # The first run of a replica starts a generation with a snapshot.
        assert list_snapshot_keys(open_store(site.replica))


class TestServedShipping:
    """wal-ship served with overlapping windows under writers: one generation, few task runs per window."""

    WINDOW, DURATION, WINDOWS = 30, 45, 3

    def test_windows_hand_over(self, server: Server, base_database: Path, tmp_path: Path) -> None:
        """Three 30 s windows of 45 s runs under writers with SQLite's default autocheckpoint: every run after
        the first takes over from the previous one, the replica holds one generation, and each run adds at
        most a handful of task runs (uploads inside the window are not task runs)."""
        site = _site(base_database, tmp_path / "site")
        with suppress(AssertionError):
            server.prefect("deployment", "delete", "wal-ship/wal-ship")
        argv = [str(BIN / "python"), "-m", "deployments.serve", "--only", "wal-ship"]
        settings = [f"database={site.database}", f"replica={site.replica}"]
        settings += [f"ship_window={self.WINDOW}", f"ship_duration={self.DURATION}", "ship_handover_wait=60"]
        for setting in settings:
            argv += ["--set", setting]
        writers = WriterGroup(site.database, [1, 2], rate=100)
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            serving = subprocess.Popen(
                argv, cwd=ROOT, env=server.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        mine = {"flow_runs": {"parameters": {}}, "deployments": {"name": {"any_": ["wal-ship"]}}}
        try:

            def finished_runs() -> list[dict[str, Any]]:
                assert serving.poll() is None, log.read_text()
                runs = server.api("POST", "/flow_runs/filter", {"deployments": mine["deployments"]})
                done = [r for r in runs if r["parameters"]["database"] == str(site.database)]
                done = [r for r in done if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
                return done if len(done) >= self.WINDOWS else []

            runs = server.wait_for(f"{self.WINDOWS} finished wal-ship runs (see {log})", finished_runs, timeout=400)
            wind_down(server.port)
        finally:
            writers.stop()
            stop_group(serving.pid)
            serving.wait()
        states = sorted((r["expected_start_time"], r["state_type"]) for r in runs)
        assert all(state == "COMPLETED" for _, state in states), (states, log.read_text()[-3000:])
        generations = {o.key.split("/")[1] for o in open_store(site.replica).list("generations/")}
        assert len(generations) == 1, (generations, log.read_text()[-3000:])
        for run in runs:
            tasks = server.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
            names = sorted(t["name"] for t in tasks)
            print(f"run {run['name']}: {len(tasks)} task runs: {', '.join(names)}")
            assert len(tasks) <= 8, names


def test_stop_group_ends_a_whole_process_group() -> None:
    """stop_group reaches the children of the leader too (a server's workers, a worker's flow runs)."""
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        assert stop_group(leader.pid, timeout=10) == "stopped"
        leader.wait(timeout=5)
        with pytest.raises(ProcessLookupError):
            os.killpg(leader.pid, 0)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(leader.pid, signal.SIGKILL)
