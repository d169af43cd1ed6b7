"""Ad hoc runs through the project's own worker command: the fast-run settings are the ones in effect.

The timings behind those settings live in bench/deployment_runs.py, never here.
A server of this module's own (started as tests/test_prefect_server.py starts
its one), one process worker started as an operator would start it, and
prefect.yaml's restore-adhoc deployed into its pool.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.workload import content_digest
from deployments.config import PREFECT_YAML, load_deployments, with_site
from deployments.local_server import stop_group
from deployments.worker import FAST_RUNS, POOL, worker_env
from tests import test_prefect_server
from tests.test_prefect_server import Server, _run_deployment

# The same module-scoped fixture as there: a server of this module's own.
server = test_prefect_server.server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]


def _environ(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in entries if entry)


def test_the_worker_command_polls_fast_and_an_ad_hoc_restore_completes(
    server: Server, base_database: Path, tmp_path: Path
) -> None:
    """`python -m deployments.worker` starts a process worker on prefect.yaml's pool with FAST_RUNS in its
    environment (none of it set by the caller), and an ad hoc restore-adhoc run through it completes
    with a copy equal to the source."""
    database, replica, output = tmp_path / "app.db", f"file://{tmp_path / 'replica'}", tmp_path / "restored.db"
    database.write_bytes(base_database.read_bytes())
    env = {k: v for k, v in server.env().items() if k not in FAST_RUNS and k != "WALSHIP_PROJECT_DIR"}
    snapshot = subprocess.run(
        [str(BIN / "walship"), "--no-prefect", "snapshot", str(database), "--replica", replica],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert snapshot.returncode == 0, snapshot.stderr
    prefect_yaml = tmp_path / "prefect.yaml"
    prefect_yaml.write_text(with_site(PREFECT_YAML.read_text(), {"replica": replica, "restore_output": output}))
    assert server.prefect("work-pool", "create", POOL, "--type", "process").returncode == 0
    deploy = server.prefect("deploy", "--no-prompt", "--name", "restore-adhoc", "--prefect-file", str(prefect_yaml))
    assert deploy.returncode == 0, deploy.stdout

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        # From another directory: the command, not the caller's cwd or environment, supplies the settings.
        worker = subprocess.Popen(
            [str(BIN / "python"), "-m", "deployments.worker"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The command replaced itself with the worker: same pid, the settings in its environment.
        seen = server.wait_for("the worker to start", lambda: _prefect_worker_env(worker.pid))
        for name, value in FAST_RUNS.items():
            assert seen.get(name) == value, name
        assert seen["WALSHIP_PROJECT_DIR"] == str(ROOT)
        server.wait_for("the worker to register with its pool", lambda: _workers(server, POOL))

        run_id = _run_deployment(server, "restore/restore-adhoc")

        def finished() -> dict[str, Any] | None:
            assert worker.poll() is None, log.read_text()
            state = server.flow_run(run_id)["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = server.wait_for(f"the restore run to end (worker log {log})", finished)
    finally:
        stop_group(worker.pid)
        worker.wait()
    assert state["type"] == "COMPLETED", (state, log.read_text()[-3000:])
    assert content_digest(output) == content_digest(database)


def _prefect_worker_env(pid: int) -> dict[str, str] | None:
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if b"worker" not in cmdline:
        return None
    assert [b"start", b"--pool", POOL.encode()] == cmdline[cmdline.index(b"worker") + 1 : cmdline.index(b"worker") + 4]
    return _environ(pid)


def _workers(server: Server, pool: str) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = server.api("POST", f"/work_pools/{pool}/workers/filter", {})
    return [w for w in workers if w["status"] == "ONLINE"]


def test_worker_env_fills_in_fast_runs_and_lets_the_environment_win() -> None:
    """FAST_RUNS are defaults: a value the operator set is kept."""
    env = worker_env({"PREFECT_WORKER_QUERY_SECONDS": "5", "PATH": os.environ.get("PATH", "")})
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "5"
    assert env["PREFECT_RUNNER_POLL_FREQUENCY"] == FAST_RUNS["PREFECT_RUNNER_POLL_FREQUENCY"]
    assert env["WALSHIP_PROJECT_DIR"] == str(ROOT)


def test_the_worker_serves_the_pool_prefect_yaml_names() -> None:
    """`python -m deployments.worker` with no option serves every deployment's pool."""
    assert {spec["work_pool"]["name"] for spec in load_deployments()} == {POOL}
