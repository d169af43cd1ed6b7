"""Shipping windows `make serve` can keep, and `make serve` run again with other values.

The window rules (docs/OPERATIONS.md, "Shipping windows") are one function of
the window, the run's duration, the hand-over wait and how much runs' start-up
varies; values that break one are refused with one line before anything
starts. `make serve` says which window it serves, and run again with other
values while it serves, it refuses them and says how to apply them.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.schema_tools import validate

from deployments.config import (
    PREFECT_YAML,
    SERVE_SPREAD,
    WORKER_SPREAD,
    SiteError,
    check_progress,
    check_shipping,
    load_deployments,
    with_site,
)
from deployments.serve import build

ROOT = Path(__file__).resolve().parent.parent


class TestWindowRules:
    @pytest.mark.parametrize(
        ("window", "duration", "wait", "spread"),
        [(600, 660, 180, WORKER_SPREAD), (120, 170, 180, WORKER_SPREAD), (30, 45, 60, SERVE_SPREAD)],
    )
    def test_kept(self, window: float, duration: float, wait: float, spread: float) -> None:
        check_shipping(window, duration, wait, spread)

    @pytest.mark.parametrize(
        ("window", "duration", "wait", "spread", "named"),
        [
            (20, 35, 60, SERVE_SPREAD, "ship_window 20 s is under 30 s"),
            (60, 90, 120, WORKER_SPREAD, "ship_window 60 s is too short for runs whose start varies by 40 s"),
            (600, 610, 180, WORKER_SPREAD, "ship_duration 610 s must exceed ship_window 600 s by more than 40 s"),
            (120, 210, 180, WORKER_SPREAD, "ship_duration 210 s"),
            (600, 660, 60, WORKER_SPREAD, "ship_handover_wait 60 s"),
        ],
    )
    def test_refused_in_one_line(self, window: float, duration: float, wait: float, spread: float, named: str) -> None:
        with pytest.raises(SiteError) as refused:
            check_shipping(window, duration, wait, spread)
        assert named in str(refused.value)
        assert "\n" not in str(refused.value)

    def test_the_shipped_values_keep_the_rules_on_a_work_pool(self) -> None:
        [ship] = [d for d in load_deployments() if d["name"] == "wal-ship"]
        parameters = ship["parameters"]
        check_shipping(ship["schedules"][0]["interval"], parameters["duration"], parameters["handover_wait"])


class TestProgressInterval:
    """Every shipping run served or deployed logs progress: its progress interval is a site value, a third
    of the run's duration (at most 60 s) unless given, read back from the parameters serve registers."""

    @staticmethod
    def _served_ship(site: dict[str, object]) -> Any:
        [ship] = [deployment for deployment in build(site=site) if deployment.name == "wal-ship"]
        return ship

    @pytest.mark.parametrize(
        ("site", "expected"),
        [
            ({}, 60),
            ({"ship_window": 120, "ship_duration": 170}, 56),
            ({"ship_window": 30, "ship_duration": 45, "ship_handover_wait": 60}, 15),
            ({"ship_window": 30, "ship_duration": 45, "ship_progress_interval": 5}, 5),
        ],
    )
    def test_the_served_run_logs_progress_within_its_duration(self, site: dict[str, object], expected: int) -> None:
        ship = self._served_ship({"database": "/srv/app.db", **site})
        parameters = ship.parameters
        assert parameters["progress_interval"] == expected
        assert 0 < parameters["progress_interval"] < parameters["duration"]
        schema = ship._parameter_openapi_schema.model_dump()
        assert validate(parameters, schema, raise_on_error=False, preprocess=True) == []

    def test_a_deployed_copy_follows_its_duration(self) -> None:
        """What `prefect deploy --prefect-file` reads: with_site's copy of prefect.yaml."""
        text = with_site(PREFECT_YAML.read_text(), {"ship_window": 30, "ship_duration": 45})
        [ship] = [d for d in yaml.safe_load(text)["deployments"] if d["name"] == "wal-ship"]
        assert ship["parameters"]["progress_interval"] == 15

    @pytest.mark.parametrize(("progress", "duration"), [(60, 45), (45, 45), (0, 45)])
    def test_refused_in_one_line(self, progress: float, duration: float) -> None:
        with pytest.raises(SiteError) as refused:
            check_progress(progress, duration)
        assert str(refused.value).startswith(f"ship_progress_interval {progress:g} s must be positive and shorter")
        assert "\n" not in str(refused.value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _local_server(home: Path, port: int, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port)}
    for name in [n for n in env if n.startswith("WALSHIP_") or n == "PREFECT_API_URL"]:
        del env[name]
    return subprocess.run(
        [sys.executable, "-m", "deployments.local_server", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_window_too_short_is_refused_before_anything_starts(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    database.write_bytes(b"")
    home, port = tmp_path / "home", _free_port()
    try:
        started = _local_server(home, port, "start", f"--set=database={database}", "--set=ship_window=20")
    finally:
        _local_server(home, port, "stop")
    assert started.returncode == 2, started.stdout + started.stderr
    assert started.stderr.startswith("walship: ship_window 20 s is under 30 s"), started.stderr
    assert len(started.stderr.strip().splitlines()) == 1, started.stderr
    assert not (home / "server.pid").exists()


def test_an_unknown_site_value_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """serve.py's own refusal comes before the server starts, not after it (which left the server running)."""
    database = tmp_path / "app.db"
    database.write_bytes(b"")
    home, port = tmp_path / "home", _free_port()
    shortest = ["--set=ship_window=30", "--set=ship_duration=45", "--set=ship_handover_wait=60"]
    try:
        started = _local_server(home, port, "start", f"--set=database={database}", *shortest, "--set=no_such=10")
    finally:
        _local_server(home, port, "stop")
    assert started.returncode == 2, started.stdout + started.stderr
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("walship: unknown site value 'no_such'; prefect.yaml defines "), line
    assert "ship_window" in line
    assert not (home / "server.pid").exists()
    assert not (home / "serve.pid").exists()


def test_a_progress_interval_as_long_as_the_run_is_refused_before_anything_starts(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    database.write_bytes(b"")
    home, port = tmp_path / "home", _free_port()
    shortest = ["--set=ship_window=30", "--set=ship_duration=45", "--set=ship_handover_wait=60"]
    try:
        started = _local_server(
            home, port, "start", f"--set=database={database}", *shortest, "--set=ship_progress_interval=60"
        )
    finally:
        _local_server(home, port, "stop")
    assert started.returncode == 2, started.stdout + started.stderr
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("walship: ship_progress_interval 60 s must be positive and shorter than ship_duration 45 s")
    assert "15 s" in line
    assert not (home / "server.pid").exists()


@pytest.mark.prefect_server
@pytest.mark.timeout(900)
def test_served_again_with_other_values(tmp_path: Path) -> None:
    """The window is printed when prefect.yaml's is used; other values while served are refused, naming
    them and `make stop`; the same values again are simply already served."""
    database = tmp_path / "app.db"
    database.write_bytes(b"")
    home, port = tmp_path / "home", _free_port()
    try:
        first = _local_server(home, port, "start", f"--set=database={database}")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "a wal-ship run every 600 s, each 660 s long, hand-over wait 180 s (prefect.yaml's" in first.stdout

        other = ["start", f"--set=database={database}", "--set=ship_window=300", "--set=ship_duration=360"]
        again = _local_server(home, port, *other)
        assert again.returncode == 2, again.stdout + again.stderr
        [line] = again.stderr.strip().splitlines()
        assert line.startswith("walship: the deployments are served with other values (ship_window 600 -> 300, ")
        assert "make stop" in line

        same = _local_server(home, port, "start", f"--set=database={database}")
        assert same.returncode == 0, same.stdout + same.stderr
        assert "already served" in same.stdout
    finally:
        stopped = _local_server(home, port, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
