"""Gapless, fail-safe shipping: hand-over between runs, the application's own checkpoints, one shipper per database.

Every shipper is the ``walship`` CLI in a subprocess, as operators and the
deployments run it; the application is a set of real processes that write and
checkpoint. Nothing here asserts a duration: "never blocked for long" is what
SQLite itself reports when the application's busy timeout (1 s) runs out.
"""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.workload import committed_counts
from tests.conftest import ROOT
from tests.shipping import (
    GENERATION_CONFIRMED,
    LEASE_TAKEN,
    Ship,
    WriterGroup,
    assert_restore_equals_source,
    replica_generations,
    restore,
)


class AppProcess:
    """``tests.app_process`` in its own process: it checkpoints or writes with a 1 s busy timeout."""

    def __init__(self, role: str, database: Path, out: Path, *options: str) -> None:
        self.out = out
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.app_process", role, str(database), "--out", str(out), *options], cwd=ROOT
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.out.read_text().splitlines()]


def _commit_times(logs: Path) -> dict[int, list[float]]:
    """Each writer's commit times, from the logs its process wrote (index n-1 is transaction n)."""
    times: dict[int, list[float]] = {}
    for log in logs.glob("w*.log"):
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.count("\t") == 1]
        times[int(log.stem[1:])] = [float(t) for _, t in rows]
    return times


class TestApplicationCheckpoints:
    """An application that checkpoints with RESTART and TRUNCATE every 0.5 s is never blocked by the shipper.

    Its checkpoints run with a 3 s busy timeout: one that the shipper's hold
    on the WAL kept waiting longer comes back busy.
    """

    def test_restart_and_truncate_while_shipping(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        writers = WriterGroup(database, [1], rate=200)
        spawned.append(writers)
        ship = Ship(database, replica, "--duration", "30", "--interval", "1", env=api_env)
        spawned.append(ship)
        assert ship.wait_for(GENERATION_CONFIRMED), ship.output
        # A 3 s busy timeout, for the checkpoints as for the writer: above what a loaded machine's scheduling and
        # fsync stalls add, yet far below the wait (10 s in the field, the window's end here) that a stuck pin
        # would impose.
        checkpointer = AppProcess(
            "checkpoint", database, tmp_path / "checkpoints.jsonl", "--modes", "RESTART,TRUNCATE", "--busy-ms", "3000"
        )
        writer = AppProcess(
            "write", database, tmp_path / "writes.jsonl", "--writer", "5", "--rate", "100", "--busy-ms", "3000"
        )
        try:
            time.sleep(20)
        finally:
            checkpointer.stop()
            writer.stop()
            writers.stop()
        code = ship.wait()
        assert code == 0, ship.output[-3000:]

        checkpoints, writes = checkpointer.records(), writer.records()
        slowest = max(float(str(r["seconds"])) for r in checkpoints)
        slowest_write = max(float(str(r["seconds"])) for r in writes)
        print(
            f"\n{len(checkpoints)} application checkpoints (RESTART/TRUNCATE), slowest {slowest:.3f} s; "
            f"{len(writes)} writes of the second writer, slowest {slowest_write:.3f} s, "
            f"{sum(float(str(r['seconds'])) > 1 for r in writes)} over 1 s"
        )
        # Busy with log -1 is SQLite saying another checkpoint was running at that instant (a writer's
        # autocheckpoint, or walship's PASSIVE one): it did not wait. Busy with a log is a checkpoint
        # that waited its whole busy timeout for readers: for a pin that did not move.
        collided = [r for r in checkpoints if r["outcome"] == "busy" and r["log"] == -1]
        kept_waiting = [r for r in checkpoints if r["outcome"] != "ok" and r not in collided]
        print(f"{len(collided)} application checkpoints met another checkpoint running and returned at once")
        assert kept_waiting == [], kept_waiting[:5]
        assert len(checkpoints) - len(collided) >= 20
        locked = [r for r in writes if r["outcome"] != "ok"]
        assert locked == [], locked[:5]
        assert len(replica_generations(replica)) == 1, ship.output[-3000:]
        assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)


class TestOneShipperPerDatabase:
    """A second shipper of one database is refused, whatever its spool or replica."""

    def test_second_shipper_with_its_own_spool(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        first = Ship(database, replica, "--duration", "20", "--interval", "0.5", env=api_env)
        spawned.append(first)
        assert first.wait_for(GENERATION_CONFIRMED), first.output
        for target in (replica, f"file://{tmp_path / 'other-replica'}"):
            second = subprocess.run(
                [
                    str(Path(sys.executable).parent / "walship"),
                    "ship",
                    str(database),
                    "--replica",
                    target,
                    "--spool",
                    str(tmp_path / f"spool-{len(target)}"),
                    "--once",
                ],
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, **api_env},
                timeout=300,
                check=False,
            )
            assert second.returncode == 2, (second.stdout, second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) in (1, 2), second.stderr
            assert "already shipped" in lines[0], second.stderr
            assert f"pid {first.process.pid}" in second.stderr, second.stderr
            assert not (tmp_path / f"spool-{len(target)}" / "cursor.json").exists()
        assert first.process.poll() is None, "the first shipper must still be running"
        assert first.wait() == 0, first.output
        assert (
            not (tmp_path / "other-replica").exists()
            or replica_generations(f"file://{tmp_path / 'other-replica'}") == set()
        )


class TestHandover:
    """Overlapping runs hand over: one generation, and every moment around the hand-over restores."""

    def test_overlapping_runs(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        logs = tmp_path / "commits"
        logs.mkdir()
        writers = WriterGroup(database, [1, 2], rate=150, logs=logs)
        spawned.append(writers)
        first = Ship(database, replica, "--duration", "14", "--interval", "0.5", env=api_env)
        spawned.append(first)
        assert first.wait_for(GENERATION_CONFIRMED), first.output
        # Its window counts from its own start: long enough to outlast the writers after it took over.
        second = Ship(database, replica, "--duration", "35", "--interval", "0.5", "--handover-wait", "60", env=api_env)
        spawned.append(second)
        assert first.wait() == 0, first.output[-3000:]
        handed_over = datetime.now(UTC)
        assert second.wait_for(LEASE_TAKEN), second.output[-3000:]
        time.sleep(4)
        writers.stop()
        assert second.wait() == 0, second.output[-3000:]
        assert "started generation" not in second.output, second.output[-3000:]
        assert len(replica_generations(replica)) == 1

        assert_restore_equals_source(replica, database, tmp_path / "newest.db", api_env)
        times = _commit_times(logs)
        for offset in (-6, -3, -1, 0, 1, 2, 4):
            moment = handed_over + timedelta(seconds=offset)
            output = tmp_path / f"at{offset}.db"
            result = restore(replica, output, api_env, "--timestamp", moment.isoformat())
            assert result.returncode == 0, result.stderr
            counts = committed_counts(output)
            for writer, commits in times.items():
                held = counts.get(writer, 0)
                # Everything it holds was committed by then; everything committed
                # two intervals before it is there: no hole at the hand-over.
                assert held == 0 or commits[held - 1] <= moment.timestamp() + 0.05, (offset, writer, held)
                missing = [n for n, t in enumerate(commits, 1) if n > held and t <= moment.timestamp() - 2.0]
                assert missing == [], (offset, writer, held, missing[:3])

    def test_sigkill_on_either_side(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        writers = WriterGroup(database, [1, 2], rate=150)
        spawned.append(writers)
        first = Ship(database, replica, "--duration", "60", "--interval", "0.5", env=api_env)
        spawned.append(first)
        assert first.wait_for(GENERATION_CONFIRMED), first.output
        second = Ship(database, replica, "--duration", "60", "--interval", "0.5", "--handover-wait", "60", env=api_env)
        spawned.append(second)
        time.sleep(8)  # the second is waiting, its hold on the WAL taken
        first.kill()  # the running side dies
        assert second.wait_for(LEASE_TAKEN), second.output[-3000:]
        time.sleep(3)
        third = Ship(database, replica, "--duration", "25", "--interval", "0.5", "--handover-wait", "60", env=api_env)
        spawned.append(third)
        time.sleep(6)
        second.kill()  # the side that took over dies too, while the third waits
        assert third.wait_for(LEASE_TAKEN), third.output[-3000:]
        time.sleep(2)
        writers.stop()
        assert third.wait() == 0, third.output[-3000:]
        assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)
