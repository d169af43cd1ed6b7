"""``walship ship-many`` as a flow run on a real Prefect server that goes away mid-window.

Twenty databases (three written by real writer processes; fewer than the
direct-mode test's two hundred, to keep the suite's time) ship through one
flow run. The server is stopped for 15 s in the middle: segments keep
arriving in storage meanwhile, the run ends Completed once the server is
back, with its one table artifact, and the written databases restore equal
to their source.
"""

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.workload import create_database
from deployments.local_server import prefect_env, start_server, stop_group, wait_healthy
from tests.helpers import ROOT, WALSHIP
from tests.shipping import SEED, WriterGroup, assert_restore_equals_source, replica_generations, wait_until
from walship.storage import open_store

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]

FLEET = 20
ACTIVE = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Server:
    """A `prefect server start` that can be stopped and started again on its port and database."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = start_server(self.home, self.port, self.home / "server.log")
        wait_healthy(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process.pid)
            self.process.wait()
            self.process = None

    def events(self, name: str) -> list[dict[str, Any]]:
        body = {"filter": {"event": {"name": [name]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
        return self.api("/events/filter", body)["events"]  # type: ignore[no-any-return]

    def api(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"http://127.0.0.1:{self.port}/api{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    running = _Server(home)
    running.start()
    yield running
    running.stop()


def _segments(replica: str) -> int:
    return sum("/wal/" in o.key for o in open_store(replica).list("generations/"))


def test_shipping_outlives_the_prefect_api(server: _Server, tmp_path: Path) -> None:
    base = tmp_path / "base.db"
    create_database(base, 64 << 10, seed=SEED)
    (tmp_path / "dbs").mkdir()
    databases = [tmp_path / "dbs" / f"db{i:02d}.db" for i in range(FLEET)]
    for path in databases:
        shutil.copyfile(base, path)
    active = databases[:ACTIVE]
    replica = f"file://{tmp_path}/replicas/{{name}}"
    replicas = [replica.format(name=db.name) for db in active]
    writers = [WriterGroup(db, [1], rate=50) for db in active]
    ship = subprocess.Popen(
        [WALSHIP, "--prefect", "ship-many", str(tmp_path / "dbs" / "*.db"), "--replica", replica, "--duration", "40"],
        cwd=ROOT,
        env=prefect_env(server.home, server.port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: all(_segments(r) for r in replicas), "the first segments", 90)
        server.stop()
        before = [_segments(r) for r in replicas]
        time.sleep(15)
        during = [_segments(r) for r in replicas]
        server.start()
        for group in writers:
            group.stop()
        stdout, stderr = ship.communicate(timeout=300)
    finally:
        for group in writers:
            group.stop()
        if ship.poll() is None:
            ship.kill()
    assert all(b < d for b, d in zip(before, during, strict=True)), (before, during)
    assert ship.returncode == 0, stderr
    assert f"{FLEET} databases" in stdout
    runs = server.api("/flow_runs/filter", {"flows": {"name": {"any_": ["wal-ship-fleet"]}}})
    assert [run["state_type"] for run in runs] == ["COMPLETED"]
    artifacts = server.api("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}}})
    assert [a["type"] for a in artifacts] == ["table"]
    # Events for changes only: a generation per database (a new fleet), and the window's end.
    wait_until(lambda: len(server.events("walship.fleet.generation")) >= FLEET, "the generation events", 60)
    wait_until(lambda: len(server.events("walship.fleet.completed")) == 1, "the completed event", 60)
    for db in databases:
        assert len(replica_generations(replica.format(name=db.name))) == 1, db
    for db, url in zip(active, replicas, strict=True):
        assert_restore_equals_source(url, db, tmp_path / f"restored-{db.name}", {})
