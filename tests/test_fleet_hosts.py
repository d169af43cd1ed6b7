"""A fleet on two hosts through one work pool, as docs/OPERATIONS.md ("A fleet on several hosts") sets it up.

Two hosts on one machine: each has its own directory of databases (some
written by writer processes), its own copy of ``wal-ship-fleet`` in
prefect.yaml on a work queue named after it, with its own patterns and
replica prefix, and its own process worker (``python -m deployments.worker
--work-queue <host>``) on the session's Prefect server. Each window is a run
per host, created as a schedule would create it. Host A's worker is killed
mid-window together with its run (SIGKILL to both, as the OOM killer or a
crash ends a service), restarted, and runs the next window, which takes over
from what the killed run left in the spools; host B's next window is created
while its first still ships. Every database restores equal to its source
from its host's prefix, and each host's runs show tables of its own databases.
"""

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.workers.process import ProcessWorker

from deployments.config import PREFECT_YAML, with_site
from deployments.local_server import stop_group
from tests.helpers import ROOT
from tests.prefect_api import artifacts, flow_run
from tests.shipping import WriterGroup, assert_restore_equals_source, replica_generations
from walship.storage import open_store

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent
HOSTS = ("host-a", "host-b")
DATABASES = 3  # per host; the first WRITTEN of them have a writer
WRITTEN = 2
# A window's duration, and how long the next waits for it to end (prefect.yaml's shipping site values).
DURATION, HANDOVER_WAIT = 15, 30
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

# prefect.yaml's example of a host's copy of wal-ship-fleet (a comment there), and what it names.
_EXAMPLE_MARK = "A host's copy, after this one:"
_EXAMPLE_HOST, _EXAMPLE_DATABASES, _EXAMPLE_REPLICA = "db1", "/var/lib/app/*.db", "s3://my-bucket/fleet/db1/{name}"


def host_deployment(host: str, databases: str, replica: str) -> str:
    """prefect.yaml's example of a host's copy of wal-ship-fleet, for ``host``: to append to its deployments."""
    after = PREFECT_YAML.read_text().split(_EXAMPLE_MARK, 1)[1].splitlines()[2:]
    example = "\n".join(line[4:] for line in itertools.takewhile(lambda line: line.startswith("  #   "), after))
    assert _EXAMPLE_REPLICA in example, example
    # The host's name first, outside the paths (the example's replica names it too).
    example = example.replace(_EXAMPLE_DATABASES, "\0databases").replace(_EXAMPLE_REPLICA, "\0replica")
    example = example.replace(_EXAMPLE_HOST, host).replace("\0databases", databases).replace("\0replica", replica)
    return f"\n{example}\n"


@dataclass
class Host:
    name: str
    directory: Path
    replica: str  # the fleet's template: <prefix>/{name}
    log: Path
    databases: list[Path] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None
    runs: list[UUID] = field(default_factory=list)

    def replica_of(self, database: Path) -> str:
        return self.replica.format(name=database.name)


def _host(name: str, root: Path, base: Path) -> Host:
    directory = root / name
    directory.mkdir()
    host = Host(name, directory, f"file://{root / 'replicas' / name}/{{name}}", root / f"{name}-worker.log")
    for index in range(DATABASES):
        database = directory / f"db{index}.db"
        database.write_bytes(base.read_bytes())
        host.databases.append(database)
    return host


def _prefect_yaml(hosts: list[Host], path: Path) -> Path:
    text = PREFECT_YAML.read_text() + "".join(
        host_deployment(h.name, str(h.directory / "*.db"), h.replica) for h in hosts
    )
    path.write_text(with_site(text, {"ship_duration": DURATION, "ship_handover_wait": HANDOVER_WAIT}))
    return path


def _prefect(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "prefect"), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _create_pool() -> None:
    """What `prefect work-pool create walship --type process` does (the session's server may have it already)."""
    template = ProcessWorker.get_default_base_job_template()
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name="walship", type="process", base_job_template=template))


def _start_worker(host: Host, env: dict[str, str]) -> None:
    with host.log.open("ab") as out:
        host.worker = subprocess.Popen(
            [str(BIN / "python"), "-m", "deployments.worker", "--work-queue", host.name],
            cwd=host.directory.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(host: Host) -> None:
    if host.worker is not None:
        # A worker whose runs are over has nothing to finish: it gets 10 s, not the default 30.
        stop_group(host.worker.pid, timeout=10)
        host.worker.wait()
        host.worker = None


def _run_window(host: Host) -> UUID:
    """A run of the host's deployment, as its schedule creates one each window."""
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(f"wal-ship-fleet/wal-ship-fleet-{host.name}")
        run_id = client.create_flow_run_from_deployment(deployment.id).id
    host.runs.append(run_id)
    return run_id


def _state(run_id: UUID) -> str:
    state = flow_run(run_id).state
    return state.type.value if state else "NONE"


def _segments(replica: str) -> int:
    return sum("/wal/" in o.key for o in open_store(replica).list("generations/"))


def _poll(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _run_processes(run_id: UUID) -> list[int]:
    """Processes running flow run ``run_id`` (wherever their process group is)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ:
                found.append(int(proc.name))
    return found


def _table(run_id: UUID) -> list[dict[str, Any]]:
    [table] = artifacts(run_id, "table")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    return list(rows)


@pytest.fixture
def hosts(tmp_path: Path, base_database: Path) -> Iterator[list[Host]]:
    made = [_host(name, tmp_path, base_database) for name in HOSTS]
    yield made
    with ThreadPoolExecutor(len(made)) as pool:
        list(pool.map(_stop_worker, made))
    for host in made:
        # A run's process has a process group of its own: whatever a failing test left running goes too.
        for run_id in host.runs:
            for pid in _run_processes(run_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_two_hosts_ship_their_own_fleets_through_one_pool(prefect_api: str, hosts: list[Host], tmp_path: Path) -> None:
    """Each host's runs go to its worker and ship its databases into its prefix; host A's worker is killed with its
    run mid-window and restarted; its next window continues the generations, and nothing is lost."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    _create_pool()
    for host in hosts:
        _start_worker(host, env)  # polls its queue while the deployments are made
    names = [arg for host in hosts for arg in ("--name", f"wal-ship-fleet-{host.name}")]
    prefect_yaml = _prefect_yaml(hosts, tmp_path / "prefect.yaml")
    deploy = _prefect(env, "deploy", "--no-prompt", *names, "--prefect-file", str(prefect_yaml))
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    a, b = hosts
    writers = [WriterGroup(db, [1], rate=20) for host in hosts for db in host.databases[:WRITTEN]]
    try:
        first = {host.name: _run_window(host) for host in hosts}
        _poll(lambda: all(_segments(a.replica_of(db)) for db in a.databases[:WRITTEN]), "host A to ship", 120)
        killed = _run_processes(first[a.name])
        assert killed
        assert a.worker is not None
        os.killpg(a.worker.pid, signal.SIGKILL)
        for pid in killed:  # in a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        a.worker.wait()
        _start_worker(a, env)
        # The next window of each host: A's after the kill, B's while B's first still ships (it waits, then takes over).
        second = {host.name: _run_window(host) for host in hosts}
        _poll(lambda: _state(first[b.name]) in FINAL, "host B's first window to end", 120)
        for group in writers:
            group.stop()
        _poll(lambda: all(_state(r) in FINAL for r in second.values()), "the second windows to end", 180)
    finally:
        for group in writers:
            group.stop()
    logs = "\n".join(host.log.read_text()[-3000:] for host in hosts)
    # Nobody is left to say the killed run ended: it stays Running until an operator cancels it.
    assert _state(first[a.name]) == "RUNNING"
    # Each completed window ran on its host's queue and its table lists that host's databases, each written one
    # shipped. One never written may be idle in B's second window: B's first, ending before it looked, shipped all
    # of it (when B's first ends first depends on the machine's load).
    for host, run_id in ((b, first[b.name]), (a, second[a.name]), (b, second[b.name])):
        assert _state(run_id) == "COMPLETED", logs
        assert flow_run(run_id).work_queue_name == host.name
        states = {row["database"]: row["state"] for row in _table(run_id)}
        assert sorted(states) == [str(db) for db in host.databases]
        assert {states[str(db)] for db in host.databases[:WRITTEN]} == {"done"}, states
        unwritten = {"done", "idle"} if run_id == second[b.name] else {"done"}
        assert {states[str(db)] for db in host.databases[WRITTEN:]} <= unwritten, states
    for host in hosts:
        for database in host.databases:
            replica = host.replica_of(database)
            assert len(replica_generations(replica)) == 1, (database, logs)
            assert_restore_equals_source(replica, database, tmp_path / f"restored-{host.name}-{database.name}", {})
