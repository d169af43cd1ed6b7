"""What a shipping window tells its operator while it runs, read back from a real Prefect API.

A window's run logs a progress line at INFO about once a ``progress_interval``
(segments, commits, lag, position), logs waiting for and taking over from the
previous run at INFO, and keeps its table artifact current during the window,
with counts that add up: what this run captured plus what an earlier run left
spooled is what was uploaded plus what is still spooled.
"""

import logging
import re
import signal
import time
from pathlib import Path
from urllib.parse import urlsplit
from uuid import UUID

import pytest

from flows.ship import wal_ship_flow
from tests.conftest import Writers, use_credentials
from tests.helpers import walship
from tests.prefect_api import artifacts, flow_run, flow_runs_of, run_id, run_logs
from tests.s3servers import MotoS3
from tests.shipping import Ship
from tests.tcpproxy import TcpProxy
from walship.models import RetryPolicy

PROGRESS = re.compile(r"^progress of (\S+): (\d+) segments captured \((\d+) commits\), (\d+) uploaded.*; lag [\d.]+ s")
WAITING = re.compile(r"holding its WAL and waiting up to \d+ s to take over")
TOOK_OVER = re.compile(r"took over database .+ after [\d.]+ s")


def _rows(markdown: str) -> dict[str, str]:
    """The ``| name | value |`` rows of a walship table artifact."""
    return {m[1].strip(): m[2].strip() for m in re.finditer(r"^\| ([^|]+) \| (.*) \|$", markdown, re.MULTILINE)}


def _adds_up(rows: dict[str, str]) -> tuple[int, int, int, int]:
    """Captured + left by an earlier run == uploaded + still spooled, and the uploaded split names both parts."""
    captured = int(rows["segments captured by this run"])
    left = int(rows["segments left spooled by an earlier run"])
    uploaded = re.fullmatch(
        r"(\d+) \((\d+) captured by this run, (\d+) left by an earlier run\)", rows["segments uploaded"]
    )
    assert uploaded is not None, rows
    total, own, earlier = (int(g) for g in uploaded.groups())
    spooled = int(rows["segments still spooled"])
    assert total == own + earlier, rows
    assert captured + left == total + spooled, rows
    return captured, left, total, spooled


def _wait_for_run(database_id: str, ship: Ship, timeout: float = 120) -> UUID:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runs := flow_runs_of(database_id):
            return runs[-1].id
        assert ship.process.poll() is None, ship.output
        time.sleep(0.2)
    raise AssertionError(f"no flow run of {database_id} after {timeout:.0f} s:\n{ship.output}")


@pytest.mark.usefixtures("prefect_api")
class TestWhileAWindowRuns:
    @pytest.mark.parametrize("backend", ["local"])
    def test_progress_lines_and_a_table_that_is_current_before_the_end(
        self, api_env: dict[str, str], replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        writers = Writers(database, seed=11, count=1, rate=100)
        ship = Ship(
            database,
            replica_url,
            "--duration=12",
            "--interval=0.2",
            "--progress-interval=1",
            "--database-id=progress.db",
            f"--spool={tmp_path / 'spool'}",
            env=api_env,
        )
        try:
            flow_run_id = _wait_for_run("progress.db", ship)
            seen_running: list[str] = []
            while ship.process.poll() is None and not seen_running:
                [*tables] = [str(a.data) for a in artifacts(flow_run_id, "markdown")]
                state = flow_run(flow_run_id).state
                if tables and state is not None and state.is_running():
                    seen_running = tables
                time.sleep(0.2)
            assert ship.wait() == 0, ship.output
        finally:
            writers.stop()
        assert seen_running, "the table artifact appeared only after the run ended"
        _adds_up(_rows(seen_running[-1]))

        progress = [log for log in run_logs(flow_run_id) if PROGRESS.search(log.message)]
        assert len(progress) >= 2, [log.message for log in run_logs(flow_run_id)]
        assert {log.level for log in progress} == {logging.INFO}
        counts = [int(PROGRESS.search(log.message)[2]) for log in progress]  # type: ignore[index]
        assert counts == sorted(counts), counts
        assert counts[-1] > 0, counts

        [final] = [str(a.data) for a in artifacts(flow_run_id, "markdown")]  # one table, kept current in place
        captured, left, uploaded, spooled = _adds_up(_rows(final))
        assert left == spooled == 0
        assert uploaded == captured > 0

    @pytest.mark.parametrize("backend", ["local"])
    def test_a_handover_is_in_the_successors_logs_at_info(
        self, api_env: dict[str, str], replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        spool = f"--spool={tmp_path / 'spool'}"
        # The first window outlasts the test; it ends (SIGTERM, a clean stop) only once the second is seen
        # waiting, so the hand-over happens however slowly either starts.
        first = Ship(
            database, replica_url, "--duration=600", "--progress-interval=1", "--database-id=handover-a.db", spool,
            env=api_env,
        )  # fmt: skip
        try:
            first_run = _wait_for_run("handover-a.db", first)
            deadline = time.monotonic() + 120
            while not any(PROGRESS.search(log.message) for log in run_logs(first_run)):
                assert first.process.poll() is None, first.output
                assert time.monotonic() < deadline, first.output
                time.sleep(0.2)
            second = Ship(
                database, replica_url, "--duration=1", "--handover-wait=120", "--database-id=handover-b.db", spool,
                env=api_env,
            )  # fmt: skip
            try:
                waiting_run = _wait_for_run("handover-b.db", second)
                deadline = time.monotonic() + 120
                while not any(WAITING.search(log.message) for log in run_logs(waiting_run)):
                    assert second.process.poll() is None, second.output
                    assert time.monotonic() < deadline, second.output
                    time.sleep(0.2)
                first.process.send_signal(signal.SIGTERM)
                assert first.wait() == 0, first.output
                assert second.wait() == 0, second.output
            finally:
                second.close()
        finally:
            first.close()
        [second_run] = flow_runs_of("handover-b.db")
        logs = run_logs(second_run.id)
        waiting = [log for log in logs if WAITING.search(log.message)]
        took_over = [log for log in logs if TOOK_OVER.search(log.message)]
        assert len(waiting) == 1, [log.message for log in logs]
        assert len(took_over) == 1, [log.message for log in logs]
        assert waiting[0].level == took_over[0].level == logging.INFO
        assert waiting[0].timestamp <= took_over[0].timestamp


@pytest.mark.usefixtures("prefect_api")
def test_what_an_earlier_run_left_spooled_is_counted_apart(
    moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, database: Path, tmp_path: Path
) -> None:
    """A run that could not reach storage leaves segments spooled; the next one uploads them and says whose."""
    use_credentials(monkeypatch, moto_server)
    moto_server.create_bucket("progress-left")
    moto = urlsplit(moto_server.endpoint)
    assert moto.hostname is not None
    assert moto.port is not None
    with TcpProxy(moto.hostname, moto.port) as proxy:
        replica = f"s3://progress-left/app?endpoint={proxy.endpoint}"
        spool_dir = tmp_path / "spool"
        proxy.stop()
        writers = Writers(database, seed=11, count=1, rate=100)
        try:
            failed = wal_ship_flow(
                database=database,
                replica=replica,
                duration=2,
                interval=0.2,
                spool_dir=spool_dir,
                retry=RetryPolicy(attempts=1),
                return_state=True,
            )
        finally:
            writers.stop()
        assert failed.is_failed()
        proxy.start()
        state = wal_ship_flow(database=database, replica=replica, once=True, spool_dir=spool_dir, return_state=True)
    report = state.result()
    [table] = [str(a.data) for a in artifacts(run_id(state), "markdown")]
    captured, left, uploaded, spooled = _adds_up(_rows(table))
    assert left > 0
    assert (captured, uploaded, spooled) == (report.segments_captured, report.segments_uploaded, 0)
    assert report.segments_left_by_earlier_run == left


def test_direct_mode_prints_the_progress_line(database: Path, tmp_path: Path) -> None:
    """Without Prefect the same line goes to stderr with --verbose, as the run's other log lines do."""
    result = walship(
        "--no-prefect",
        "--verbose",
        "ship",
        str(database),
        "--replica",
        f"file://{tmp_path / 'replica'}",
        "--duration=3",
        "--interval=0.2",
        "--progress-interval=1",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if " INFO " in line and "progress of app.db: " in line]
    assert len(lines) >= 2, result.stderr
