"""Shipping as operators run it, for the end-to-end tests: the ``walship`` CLI and writers in subprocesses.

``Ship`` collects a running shipper's output line by line; ``WriterGroup``
runs the workload's deterministic writers (``bench.workload``), which a test
can freeze, resume and stop like a crash. Fixtures that stop whatever a test
started (``spawned``) and point the CLI at the session's Prefect API
(``api_env``) are in conftest.py.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.workload import committed_counts, content_digest, writer_command
from tests.helpers import ROOT, WALSHIP, walship
from walship.storage import open_store

SEED = 11  # the seed of the base database and of every writer
# The lease task finishing means the flow is about to open the shipper.
LEASE_TAKEN = re.compile(r"Task run 'acquire_lease-\S+' - Finished")
# walship.ship logs this before the snapshot; the flow confirms once the cursor moved to it.
GENERATION_STARTING = re.compile(r"starting generation (\S+) of .+?: (.+)$", re.MULTILINE)
# MULTILINE: wait_for searches the whole output so far, where the line is seldom the last one.
GENERATION_CONFIRMED = re.compile(r"new generation (\S+): (.+)$", re.MULTILINE)
WHILE_NOBODY_WATCHED = {
    "the WAL was reset while nobody watched",
    "the WAL was checkpointed and removed while nobody watched",
}


# Processes ---------------------------------------------------------------------


class Ship:
    """A running ``walship --verbose ship`` whose output is collected line by line."""

    def __init__(self, database: Path, replica: str, *options: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [WALSHIP, "--verbose", "ship", str(database), "--replica", replica, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env},
        )
        self._lines: list[str] = []
        self._lock = threading.Lock()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.process.stdout, self.process.stderr)
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Iterable[str]) -> None:
        for line in stream:
            with self._lock:
                self._lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 90) -> bool:
        """Wait until a line matches; False if the process ended or the deadline passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern.search(self.output):
                return True
            if self.process.poll() is not None:
                self._join_readers()
                return pattern.search(self.output) is not None
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout=timeout)
        self._join_readers()
        return code

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)

    def generations(self) -> tuple[list[tuple[str, str]], set[str]]:
        """Generations this run began (name, reason), and those whose start it completed."""
        lines = self.output.splitlines()
        starting = [(m[1], m[2]) for line in lines if (m := GENERATION_STARTING.search(line))]
        confirmed = {m[1] for line in lines if (m := GENERATION_CONFIRMED.search(line))}
        return starting, confirmed

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


class WriterGroup:
    """Writer processes (bench.workload) committing deterministic transactions until stopped."""

    def __init__(self, database: Path, writers: Iterable[int], rate: float, logs: Path | None = None) -> None:
        """``logs``: a directory where writer N logs each commit's time to ``wN.log``."""
        self.processes = [
            subprocess.Popen(
                writer_command(
                    database, writer=w, seed=SEED, seconds=600, rate=rate, log=logs / f"w{w}.log" if logs else None
                ),
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            for w in writers
        ]

    def pause(self) -> None:
        """SIGSTOP every writer and wait until each is stopped: nothing is written until ``resume``."""
        for process in self.processes:
            process.send_signal(signal.SIGSTOP)
        pids = [process.pid for process in self.processes]
        wait_until(lambda: all(process_state(pid) in {"T", "t", "Z", None} for pid in pids), "the writers to stop")

    def resume(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Terminate like a crash (no clean close, so the WAL stays as it is).

        A paused writer gets SIGTERM before SIGCONT, so it dies without writing again.
        """
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        self.resume()
        for process in self.processes:
            process.wait(timeout=30)


def process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def app_commits(database: Path, rows: int, *, checkpoint: str | None = None) -> None:
    """The application commits ``rows`` transactions in its own process (a lock of this process's would not
    conflict with the fleet's pins), opening and closing its connection as a request would."""
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
        "c.execute('CREATE TABLE IF NOT EXISTS late (id INTEGER PRIMARY KEY, body TEXT)')\n"
        "for n in range(int(sys.argv[2])):\n"
        "    c.execute('INSERT INTO late (body) VALUES (?)', (f'row {n} ' * 40,))\n"
        "if sys.argv[3]:\n"
        "    c.execute(f'PRAGMA wal_checkpoint({sys.argv[3]})')\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, str(database), str(rows), checkpoint or ""], check=True)


def checkpoint_truncate(database: Path) -> tuple[int, int, int]:
    """The application runs PRAGMA wal_checkpoint(TRUNCATE) in its own process."""
    return checkpoint_mode(database, "TRUNCATE")


def checkpoint_mode(database: Path, mode: str) -> tuple[int, int, int]:
    """The application runs PRAGMA wal_checkpoint(``mode``) in its own process: (busy, log, checkpointed)."""
    code = (
        "import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); "
        f"print(json.dumps(c.execute('PRAGMA wal_checkpoint({mode})').fetchone()))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(database)], check=True, capture_output=True, text=True)
    busy, log, checkpointed = json.loads(done.stdout)
    return busy, log, checkpointed


# The replica ----------------------------------------------------------------------


def replica_generations(replica: str) -> set[str]:
    """Generation directories present in the replica (a listing, not the index)."""
    return {o.key.split("/")[1] for o in open_store(replica).list("generations/")}


def restore(replica: str, output: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
    return walship("restore", "--replica", replica, "--output", str(output), *options, env=env)


def assert_restore_equals_source(replica: str, database: Path, output: Path, env: dict[str, str]) -> None:
    """Restore the newest point; it must equal the (no longer written) source row for row."""
    result = restore(replica, output, env)
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout
    assert committed_counts(output) == committed_counts(database)
    assert content_digest(output) == content_digest(database)


def assert_one_line_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    assert lines[0].startswith("walship: "), result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def pending_files(database: Path) -> list[Path]:
    pending = database.with_name(f"{database.name}-walship") / "pending"
    return sorted(p for p in pending.rglob("*") if p.is_file())
