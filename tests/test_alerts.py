"""The alerts `make automations` creates, each driven through a real `prefect server` to a local webhook.

One server for the module (as tests/test_prefect_server.py starts its one,
with proactive triggers evaluated every second instead of every 5 s and the
scheduler creating runs every 2 s instead of every 60 s), the
automations created by `python -m deployments.automations` with a short
silence window, and a webhook catcher on 127.0.0.1 recording every POST.
Failed and crashed runs are real flow runs of prefect.yaml's deployments on
a process worker started the plain way (`prefect worker start --pool
walship`, no WALSHIP_PROJECT_DIR), as `prefect deploy` tells an operator to.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from bench.workload import content_digest
from deployments.config import PREFECT_YAML, with_site
from deployments.local_server import start_server, stop_group, wait_healthy
from tests.test_prefect_server import Server, _free_port, _run_deployment

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AUTOMATIONS = ROOT / "deployments" / "automations.yaml"
# Seconds without a completed shipping run before "shipping stopped" fires (the file says 1800).
SILENCE = 12
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]


class Webhook:
    """An HTTP endpoint on 127.0.0.1 that records the JSON bodies POSTed to it, with when they came."""

    def __init__(self) -> None:
        self.posts: list[tuple[float, dict[str, Any]]] = []
        self.changed = threading.Condition()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with catcher.changed:
                    catcher.posts.append((time.monotonic(), body))
                    catcher.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/walship-alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(
        self, what: str, matches: Callable[[dict[str, Any]], bool], count: int = 1, timeout: float = 90
    ) -> list[tuple[float, dict[str, Any]]]:
        """The first ``count`` posts that ``matches`` accepts, with their arrival times; fails after ``timeout``."""
        with self.changed:
            self.changed.wait_for(lambda: len(self._matching(matches)) >= count, timeout)
            found = self._matching(matches)
        assert len(found) >= count, f"{what}: {len(found)} of {count} posts within {timeout:.0f} s; got {self.posts}"
        return found[:count]

    def settled(self, matches: Callable[[dict[str, Any]], bool], quiet: float = 10) -> list[dict[str, Any]]:
        """The posts ``matches`` accepts, once none more has come for ``quiet`` seconds."""
        with self.changed:
            seen = [0]

            def more() -> bool:
                return len(self._matching(matches)) > seen[0]

            seen[0] = len(self._matching(matches))
            while self.changed.wait_for(more, quiet):
                seen[0] = len(self._matching(matches))
            return [body for _, body in self._matching(matches)]

    def _matching(self, matches: Callable[[dict[str, Any]], bool]) -> list[tuple[float, dict[str, Any]]]:
        return [(at, body) for at, body in self.posts if matches(body)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    settings = {
        "PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY": "PT1S",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    process = start_server(home, port, home / "server.log", settings)
    try:
        wait_healthy(port, process)
        yield Server(port, home, home / "server.log")
    finally:
        stop_group(process.pid)
        process.wait()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    catcher = Webhook()
    yield catcher
    catcher.close()


def plain_env(server: Server) -> dict[str, str]:
    """What an operator's shell has after `export PREFECT_API_URL=...`: no WALSHIP_PROJECT_DIR."""
    return {name: value for name, value in server.env().items() if name != "WALSHIP_PROJECT_DIR"}


def create_alerts(server: Server, webhook: Webhook) -> subprocess.CompletedProcess[str]:
    return server.run(
        str(BIN / "python"), "-m", "deployments.automations", "--webhook", webhook.url, "--silence", str(SILENCE)
    )


@pytest.fixture(scope="module")
def alerts(server: Server, webhook: Webhook) -> list[dict[str, Any]]:
    """`make automations` against the module's server; the automations it holds afterwards."""
    created = create_alerts(server, webhook)
    assert created.returncode == 0, created.stdout
    return server.api("POST", "/automations/filter", {})  # type: ignore[no-any-return]


@dataclass
class Site:
    database: Path
    replica: str
    directory: Path


@pytest.fixture(scope="module")
def deployed(server: Server, base_database: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """restore-adhoc and wal-ship deployed into the walship pool as the docs say, from a shell without
    WALSHIP_PROJECT_DIR, for a database with one snapshot in its replica."""
    directory = tmp_path_factory.mktemp("alerts-site")
    database, replica = directory / "alerts.db", f"file://{directory / 'replica'}"
    database.write_bytes(base_database.read_bytes())
    snapshot = server.run(str(BIN / "walship"), "--no-prefect", "snapshot", str(database), "--replica", replica)
    assert snapshot.returncode == 0, snapshot.stdout
    prefect_yaml = directory / "prefect.yaml"
    # A long shipping window: no scheduled shipping run is due while the module runs.
    site = {"database": database, "replica": replica, "restore_output": directory / "restored.db", "ship_window": 86400}
    prefect_yaml.write_text(with_site(PREFECT_YAML.read_text(), site))
    env = plain_env(server)
    assert server.prefect("work-pool", "create", "walship", "--type", "process", env=env).returncode == 0
    names = ["--name", "restore-adhoc", "--name", "wal-ship"]
    deploy = server.prefect("deploy", "--no-prompt", *names, "--prefect-file", str(prefect_yaml), env=env)
    assert deploy.returncode == 0, deploy.stdout
    return Site(database, replica, directory)


def start_worker(server: Server, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`prefect worker start --pool walship --run-once`, typed in a directory that is not the checkout."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "walship", "--run-once"],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def final_state(server: Server, run_id: UUID, worker: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    try:
        worker.wait(timeout=300)
        state: dict[str, Any] = server.wait_for(
            f"run {run_id} to end (worker log {log})",
            lambda: (state := server.flow_run(run_id)["state"])["type"] in FINAL and state,
        )
    finally:
        stop_group(worker.pid)
        worker.wait()
    return state


def run_logs(server: Server, run_id: UUID) -> str:
    logs = server.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 200})
    return "\n".join(entry["message"] for entry in logs)


class TestAlertsCommand:
    def test_every_automation_of_the_file_exists_once_after_two_runs(
        self, server: Server, webhook: Webhook, alerts: list[dict[str, Any]]
    ) -> None:
        """Running the command again updates the automations in place: one of each name, as the file says,
        posting to the webhook block; the silence window is the one given."""
        again = create_alerts(server, webhook)
        assert again.returncode == 0, again.stdout
        stored = server.api("POST", "/automations/filter", {})
        names = [automation["name"] for automation in stored]
        expected = [spec["name"] for spec in yaml.safe_load(AUTOMATIONS.read_text())["automations"]]
        assert sorted(names) == sorted(expected)
        assert {a["id"] for a in stored} == {a["id"] for a in alerts}
        for automation in stored:
            assert [action["type"] for action in automation["actions"]] == ["call-webhook"], automation["name"]
            if automation["trigger"]["posture"] == "Proactive":
                assert automation["trigger"]["within"] == SILENCE, automation["name"]

    def test_without_a_webhook_it_refuses_with_one_line(self, server: Server) -> None:
        env = {name: value for name, value in server.env().items() if name != "WALSHIP_ALERT_WEBHOOK"}
        result = server.run(str(BIN / "python"), "-m", "deployments.automations", env=env)
        assert result.returncode == 2
        assert "WALSHIP_ALERT_WEBHOOK" in result.stdout, result.stdout
        assert "Traceback" not in result.stdout


@pytest.mark.usefixtures("alerts")
class TestAlertsFire:
    def test_shipping_stopped_fires_after_each_silence(
        self, server: Server, webhook: Webhook, base_database: Path, tmp_path: Path
    ) -> None:
        """A shipper's and a fleet's real runs complete, then nothing: each alert comes once the window passes;
        after the next completed shipping run and silence, the shipper's comes again."""
        database = tmp_path / "quiet.db"
        (tmp_path / "fleet").mkdir()
        for path in (database, tmp_path / "fleet" / "member.db"):
            path.write_bytes(base_database.read_bytes())
        replica = f"file://{tmp_path / 'replica'}"
        ship = [str(BIN / "walship"), "ship", str(database), "--replica", replica, "--once"]
        fleet = [str(BIN / "walship"), "ship-many", str(tmp_path / "fleet" / "*.db"), "--once"]
        fleet += ["--replica", f"file://{tmp_path / 'fleet-replicas'}/{{name}}"]

        first = server.run(*ship)
        assert first.returncode == 0, first.stdout
        shipped_at = time.monotonic()
        many = server.run(*fleet)
        assert many.returncode == 0, many.stdout
        [(fired_at, alert)] = webhook.wait_for(
            "shipping stopped", lambda b: b["alert"] == "shipping stopped" and b["database"] == "quiet.db"
        )
        assert alert["replica"] == replica
        assert "quiet.db" in alert["text"]
        print(f"shipping stopped: {fired_at - shipped_at:.1f} s after the run ended (window {SILENCE} s)")
        [(_, fleet_alert)] = webhook.wait_for(
            "fleet shipping stopped", lambda b: b["alert"] == "fleet shipping stopped"
        )
        assert fleet_alert["replica"] == f"file://{tmp_path / 'fleet-replicas'}/{{name}}"

        second = server.run(*ship)
        assert second.returncode == 0, second.stdout
        shipped_at = time.monotonic()
        fired = webhook.wait_for(
            "shipping stopped again",
            lambda b: b["alert"] == "shipping stopped" and b["database"] == "quiet.db",
            count=2,
        )
        print(f"shipping stopped again: {fired[1][0] - shipped_at:.1f} s after the next run ended")

    def test_lag_over_threshold_fires(self, server: Server, webhook: Webhook) -> None:
        """walship.lag.exceeded, as a shipper emits it when a segment waits in the spool past the threshold."""
        emitted = server.run(str(BIN / "python"), "-c", EMIT_LAG, "lagging.db", "file:///backups/lagging")
        assert emitted.returncode == 0, emitted.stdout
        [(_, alert)] = webhook.wait_for(
            "lag over threshold", lambda b: b["alert"] == "lag over threshold" and b["database"] == "lagging.db"
        )
        assert alert["replica"] == "file:///backups/lagging"
        assert alert["measure"] == "spool backlog age"
        assert alert["lag_seconds"] > alert["threshold_seconds"] == 60
        assert "lagging.db is " in alert["text"]

    def test_a_fleet_database_failing_fires(self, server: Server, webhook: Webhook) -> None:
        """walship.fleet.failed (one database of a fleet's run; the run goes on) fires the failure alert with its
        detail, quotes and all."""
        detail = 'upload failed: "disk full" on the spool'
        emitted = server.run(str(BIN / "python"), "-c", EMIT_FLEET_FAILED, "file:///backups/{name}", detail)
        assert emitted.returncode == 0, emitted.stdout
        [(_, alert)] = webhook.wait_for(
            "fleet database failed", lambda b: b["alert"] == "run failed" and b["database"] == "member.db"
        )
        assert alert["event"] == "walship.fleet.failed"
        assert alert["reason"] == detail
        assert alert["flow_run"] is None

    def test_a_failed_run_fires(self, server: Server, webhook: Webhook, deployed: Site, tmp_path: Path) -> None:
        """A restore of a replica that does not exist, through the worker: the run fails, the alert names it."""
        missing = f"file://{tmp_path / 'no-replica'}"
        run_id = _run_deployment(server, "restore/restore-adhoc", f"replica={missing}")
        log = tmp_path / "worker.log"
        state = final_state(server, run_id, start_worker(server, plain_env(server), log), log)
        assert state["type"] == "FAILED", (state, log.read_text()[-3000:])
        name = server.flow_run(run_id)["name"]
        [(_, alert)] = webhook.wait_for("run failed", lambda b: b["alert"] == "run failed" and b["flow_run"] == name)
        assert alert["event"] == "walship.restore.failed"
        assert alert["replica"] == missing
        assert alert["reason"]

    def test_a_killed_run_fires(self, server: Server, webhook: Webhook, deployed: Site, tmp_path: Path) -> None:
        """A shipping run's process SIGKILLed while it runs (as the OOM killer would): the run is Crashed and
        the crash alert names it."""
        run_id = _run_deployment(server, "wal-ship/wal-ship", "duration=300")
        log = tmp_path / "worker.log"
        worker = start_worker(server, plain_env(server), log)
        try:
            server.wait_for(f"run {run_id} to run (worker log {log})", lambda: running(server, run_id, worker, log))
            [pid] = server.wait_for("the run's process", lambda: run_processes(worker.pid, run_id))
            os.kill(pid, signal.SIGKILL)
        finally:
            state = final_state(server, run_id, worker, log)
        assert state["type"] == "CRASHED", (state, log.read_text()[-3000:])
        [(_, alert)] = webhook.wait_for(
            "run crashed", lambda b: b["alert"] == "run crashed" and b["flow_run_id"] == str(run_id)
        )
        assert alert["flow_run"] == server.flow_run(run_id)["name"]
        # The worker ran the crash hook too: Prefect's event and walship's both reached the automation,
        # whichever came first alerted, and the other did not alert again.
        both = {"prefect.flow-run.Crashed", "walship.ship.crashed"}
        server.wait_for("both crash events", lambda: crash_events(server, run_id) == both)
        alerts = webhook.settled(lambda b: b["alert"] == "run crashed" and b["flow_run_id"] == str(run_id))
        assert len(alerts) == 1, alerts

    def test_a_killed_scheduled_run_fires(
        self, server: Server, webhook: Webhook, deployed: Site, tmp_path: Path
    ) -> None:
        """A shipping run that the server's scheduler created, SIGKILLed while it runs: the crash alert comes
        within minutes. Prefect emits no Scheduled event for such a run, and its trigger ordering holds the
        state events that follow the missing one for its whole lookback (PRECEDING_EVENT_LOOKBACK)."""
        due = datetime.now(UTC) + timedelta(seconds=10)
        schedule = server.prefect(
            "deployment",
            "schedule",
            "create",
            "wal-ship/wal-ship",
            "--interval",
            "3600",
            "--anchor-date",
            due.isoformat(),
        )
        assert schedule.returncode == 0, schedule.stdout
        deployment = server.api("GET", "/deployments/name/wal-ship/wal-ship")
        try:
            run_id = server.wait_for("the scheduler to create the run", lambda: scheduled_run(server, deployment, due))
            server.wait_for("the run to be due", lambda: datetime.now(UTC) >= due)
            log = tmp_path / "worker.log"
            worker = start_worker(server, plain_env(server), log)
            try:
                server.wait_for(f"run {run_id} to run (worker log {log})", lambda: running(server, run_id, worker, log))
                [pid] = server.wait_for("the run's process", lambda: run_processes(worker.pid, run_id))
                os.kill(pid, signal.SIGKILL)
            finally:
                state = final_state(server, run_id, worker, log)
        finally:
            # Removing a schedule removes the runs it has scheduled, so only once this one is over.
            for added in deployment["schedules"]:
                if added["schedule"].get("interval") == 3600:
                    server.api("DELETE", f"/deployments/{deployment['id']}/schedules/{added['id']}")
        assert state["type"] == "CRASHED", (state, log.read_text()[-3000:])
        [(_, alert)] = webhook.wait_for(
            "run crashed", lambda b: b["alert"] == "run crashed" and b["flow_run_id"] == str(run_id), timeout=180
        )
        print(f"scheduled run's crash alert: {alert}")
        assert alert["flow_run"] == server.flow_run(run_id)["name"]
        assert (alert["event"], alert["database"]) == ("walship.ship.crashed", "alerts.db")
        assert "status code" in alert["message"], alert


def crash_events(server: Server, run_id: UUID) -> set[str]:
    """The names of the crash events about flow run ``run_id`` that the server has."""
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.Crashed", "walship.ship.crashed"]},
            "resource": {"id": [f"prefect.flow-run.{run_id}"]},
        },
        "limit": 50,
    }
    return {event["event"] for event in server.api("POST", "/events/filter", body)["events"]}


def scheduled_run(server: Server, deployment: dict[str, Any], due: datetime) -> UUID | None:
    """The run the scheduler created for ``deployment`` at ``due`` (auto-scheduled, as no hand-started run is)."""
    body = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}
    for run in server.api("POST", "/flow_runs/filter", body):
        start = datetime.fromisoformat(run["expected_start_time"])
        if run["auto_scheduled"] and abs((start - due).total_seconds()) < 1:
            return UUID(run["id"])
    return None


def running(server: Server, run_id: UUID, worker: subprocess.Popen[bytes], log: Path) -> bool:
    assert worker.poll() is None, log.read_text()[-3000:]
    state_type = server.flow_run(run_id)["state"]["type"]
    assert state_type not in FINAL, (state_type, log.read_text()[-3000:])
    return bool(state_type == "RUNNING")


def run_processes(worker_pid: int, run_id: UUID) -> list[int]:
    """The processes below ``worker_pid`` that run flow run ``run_id``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == worker_pid:
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in environ and worker_pid in ancestors(int(proc.name)):
            found.append(int(proc.name))
    return found


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        chain.append(pid)
    return chain


class TestPlainWorker:
    """`prefect worker start --pool walship`, as `prefect deploy` prints it, with deployments made without
    WALSHIP_PROJECT_DIR: runs find the checkout; a worker that names a wrong one fails each run loudly."""

    def test_a_run_completes(self, server: Server, deployed: Site, tmp_path: Path) -> None:
        output = tmp_path / "restored.db"
        run_id = _run_deployment(server, "restore/restore-adhoc", f"output={output}")
        log = tmp_path / "worker.log"
        state = final_state(server, run_id, start_worker(server, plain_env(server), log), log)
        assert state["type"] == "COMPLETED", (state, log.read_text()[-3000:])
        assert content_digest(output) == content_digest(deployed.database)

    @pytest.mark.usefixtures("alerts")
    def test_a_wrong_project_dir_crashes_the_run_with_a_message_and_alerts(
        self, server: Server, webhook: Webhook, deployed: Site, tmp_path: Path
    ) -> None:
        elsewhere = tmp_path / "not-a-checkout"
        elsewhere.mkdir()
        run_id = _run_deployment(server, "restore/restore-adhoc", f"output={tmp_path / 'never.db'}")
        log = tmp_path / "worker.log"
        env = {**plain_env(server), "WALSHIP_PROJECT_DIR": str(elsewhere)}
        state = final_state(server, run_id, start_worker(server, env, log), log)
        assert state["type"] == "CRASHED", (state, log.read_text()[-3000:])
        said = f"{state['message']}\n{run_logs(server, run_id)}"
        assert f"WALSHIP_PROJECT_DIR={elsewhere}" in said, said
        [(_, alert)] = webhook.wait_for(
            "run crashed", lambda b: b["alert"] == "run crashed" and b["flow_run_id"] == str(run_id)
        )
        # No crash hook could load from there: Prefect's own event is the one that alerts.
        assert alert["event"] == "prefect.flow-run.Crashed", alert


# A shipper's lag check with one segment spooled 90 s ago (storage unreachable) and the default threshold.
EMIT_LAG = """
import sys
from datetime import timedelta
from prefect.events.worker import EventsWorker
from flows._ship_events import ShipEvents
from walship.models import utcnow
from walship.spool import PendingEntry

events = ShipEvents(sys.argv[1], sys.argv[2], lag_threshold=60.0)
events.check_lag([PendingEntry(kind="segment", cached_at=utcnow() - timedelta(seconds=90))])
EventsWorker.drain_all()
"""

# What a fleet's run emits when one of its databases fails and stops (flows/fleet.py).
EMIT_FLEET_FAILED = """
import sys
from prefect.events.worker import EventsWorker
from flows._events import emit

emit("walship.fleet.failed", "member.db", sys.argv[1], {"database": "/srv/member.db", "detail": sys.argv[2]})
EventsWorker.drain_all()
"""
