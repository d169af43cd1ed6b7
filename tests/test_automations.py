"""`make automations` refuses a "shipping stopped" window shorter than the served shipping runs allow.

A real `prefect server`, prefect.yaml's wal-ship deployment served by
`python -m deployments.serve` with the demo's window (a run every 120 s, each
170 s long), and `python -m deployments.automations` run against it: a
healthy replica may go 290 s without a completed run, so a shorter silence
is refused in one line, before anything is created; with no shipping
deployment on the server yet, the silence cannot be checked and it says so.
"""

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.local_server import api_url, prefect_env, start_server, stop_group, wait_healthy, wait_served
from tests.test_prefect_server import _free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WEBHOOK = "http://127.0.0.1:9/walship-alerts"  # never called: nothing fires here

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]


class Site:
    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        self.env = prefect_env(home, port)

    def automations(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "python"), "-m", "deployments.automations", "--webhook", WEBHOOK, *argv],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def windows(self) -> list[float]:
        """The "within" of every proactive automation on the server."""
        url = f"{api_url(self.port)}/automations/filter"
        request = urllib.request.Request(url, data=b"{}", method="POST")  # noqa: S310 - loopback
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            stored = json.loads(response.read())
        return sorted(a["trigger"]["within"] for a in stored if a["trigger"].get("posture") == "Proactive")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    server = start_server(home, port, home / "server.log")
    try:
        wait_healthy(port, server)
        yield Site(home, port)
    finally:
        stop_group(server.pid)
        server.wait()


def _serve(site: Site, database: Path) -> subprocess.Popen[bytes]:
    values = {"database": database, "ship_window": 120, "ship_duration": 170, "ship_handover_wait": 180}
    argv = [str(BIN / "python"), "-m", "deployments.serve", "--only", "wal-ship"]
    for name, value in values.items():
        argv += ["--set", f"{name}={value}"]
    with (site.home / "serve.log").open("ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=site.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def test_a_silence_shorter_than_the_served_window_allows_is_refused(site: Site, tmp_path: Path) -> None:
    unchecked = site.automations("--silence", "300")
    assert unchecked.returncode == 0, unchecked.stdout + unchecked.stderr
    [warning] = unchecked.stderr.strip().splitlines()
    assert warning.startswith("warning: the server holds no scheduled shipping deployment yet"), warning
    assert site.windows() == [300, 300]

    serving = _serve(site, tmp_path / "app.db")
    try:
        wait_served(site.port, 1, serving)
        refused = site.automations("--silence", "60")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: a 'shipping stopped' window of 60 s would fire while wal-ship ships"), line
        assert "use --silence 290 or more" in line
        assert site.windows() == [300, 300]  # nothing changed

        kept = site.automations("--silence", "290")
        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert kept.stderr.strip() == ""
        assert site.windows() == [290, 290]
    finally:
        stop_group(serving.pid)
        serving.wait()
