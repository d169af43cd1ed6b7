"""WAL shipping under faults, end to end: the ``walship`` CLI in subprocesses, as operators run it.

Killed shippers, storage outages, WAL resets while nobody watched, a second
shipper on a leased replica, and broken segment chains. Every scenario ends
with a restore that equals the source row for row, or with an exit status and
an error that names the problem. No timing is asserted; every wait is bounded.

The shipper is always a subprocess (apsw), so the source database is read
here with Python's ``sqlite3`` only once shipping and writing have stopped.
"""

import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.workload import committed_counts, content_digest, expected_state, writer_command
from tests.conftest import ROOT, use_credentials
from tests.helpers import WALSHIP, rewrite_object, walship
from tests.s3servers import MotoS3
from tests.tcpproxy import TcpProxy
from walship.chain import list_segment_sequences
from walship.layout import format_segment_key
from walship.lease import holder_for
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
        _wait_until(lambda: all(_process_state(pid) in {"T", "t", "Z", None} for pid in pids), "the writers to stop")

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


@pytest.fixture
def spawned() -> Iterator[list[Ship | WriterGroup]]:
    """Whatever a test starts is stopped at its end, pass or fail."""
    running: list[Ship | WriterGroup] = []
    yield running
    for item in reversed(running):
        if isinstance(item, Ship):
            item.close()
        else:
            item.stop()


def _process_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _checkpoint_truncate(database: Path) -> tuple[int, int, int]:
    """The application runs PRAGMA wal_checkpoint(TRUNCATE) in its own process."""
    code = (
        "import json, sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); "
        "print(json.dumps(c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()))"
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


@pytest.fixture
def api_env(prefect_api: str) -> dict[str, str]:
    """Flows started by the CLI report to the session's Prefect API (no ephemeral server per call)."""
    return {"PREFECT_API_URL": prefect_api}


# 1. Killed shippers ---------------------------------------------------------------------


@dataclass
class Trial:
    paused_while_down: bool  # writers were frozen from the previous kill until this run opened
    slept: float
    killed: bool = True
    started: list[tuple[str, str]] = field(default_factory=list)
    confirmed: set[str] = field(default_factory=set)


class TestKilledShipper:
    """A shipper SIGKILLed at random moments under load loses nothing, and starts generations only when it must."""

    TRIALS = 20

    def test_random_kills_then_catch_up(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        rng = random.Random(20261124)
        replica = f"file://{tmp_path / 'replica'}"
        writers = WriterGroup(database, [1, 2, 3], rate=200)
        spawned.append(writers)
        trials: list[Trial] = []
        paused = False
        for number in range(self.TRIALS):
            ship = Ship(database, replica, "--interval", "0.2", "--duration", "30", env=api_env)
            spawned.append(ship)
            assert ship.wait_for(LEASE_TAKEN), ship.output
            trial = Trial(paused_while_down=paused, slept=rng.uniform(0.3, 3.0))
            # Odd trials freeze the writers while the shipper is down, so the
            # restart can prove continuity; even ones let them run on.
            writers.resume()
            time.sleep(trial.slept)
            paused = number % 2 == 1
            if paused:
                writers.pause()
            ship.kill()
            assert ship.process.returncode == -signal.SIGKILL, ship.output
            trial.started, trial.confirmed = ship.generations()
            trials.append(trial)
        writers.stop()

        catch_up = Ship(database, replica, "--once", env=api_env)
        spawned.append(catch_up)
        assert catch_up.wait() == 0, catch_up.output
        trials.append(Trial(paused_while_down=paused, slept=0.0, killed=False))
        trials[-1].started, trials[-1].confirmed = catch_up.generations()
        assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)

        _report_generations(trials, next(line for line in catch_up.output.splitlines() if line.startswith("shipped")))
        reasons = [reason for t in trials for _, reason in t.started]
        assert reasons[0] == "no earlier capture of this database", reasons
        for previous, trial in itertools.pairwise(trials):
            interrupted = any(g not in previous.confirmed for g, _ in previous.started)
            for _, reason in trial.started:
                # A run that finds the WAL as it left it continues; a new generation
                # is allowed only when writers reset the WAL while nobody watched,
                # or when the previous run was killed in the middle of starting one.
                allowed = set() if trial.paused_while_down else set(WHILE_NOBODY_WATCHED)
                if interrupted:
                    allowed |= {*WHILE_NOBODY_WATCHED, "no earlier capture of this database"}
                assert reason in allowed, (reason, trial, previous)
        logged = {g for t in trials for g, _ in t.started}
        in_replica = replica_generations(replica)
        assert in_replica <= logged, in_replica - logged
        # At most the first one, plus one per restart after writers ran unobserved.
        assert len(in_replica) <= 1 + sum(not t.paused_while_down for t in trials[1:]), in_replica


def _report_generations(trials: list[Trial], catch_up: str) -> None:
    print(f"\n{sum(t.killed for t in trials)} SIGKILL trials; catch-up: {catch_up.strip()}")
    for number, trial in enumerate(trials):
        state = "writers frozen while down" if trial.paused_while_down else "writers ran while down"
        started = "; ".join(
            f"{g} ({reason}{'' if g in trial.confirmed else ', killed while starting'})" for g, reason in trial.started
        )
        run = f"trial {number:2d} kill after {trial.slept:4.2f}s" if trial.killed else "catch-up run --once    "
        print(f"  {run}, {state}: {started or 'continued'}")


# 2. Storage outage ---------------------------------------------------------------------


class TestStorageOutage:
    """Storage unreachable for a while in mid-run: captures stay spooled and drain once it is back."""

    def test_outage_then_recovery(
        self,
        database: Path,
        tmp_path: Path,
        api_env: dict[str, str],
        moto_server: MotoS3,
        monkeypatch: pytest.MonkeyPatch,
        spawned: list[Ship | WriterGroup],
    ) -> None:
        use_credentials(monkeypatch, moto_server)
        bucket = f"walship-outage-{secrets.token_hex(4)}"
        moto_server.create_bucket(bucket)
        moto = urlsplit(moto_server.endpoint)
        assert moto.hostname is not None
        assert moto.port is not None
        with TcpProxy(moto.hostname, moto.port) as proxy:
            replica = f"s3://{bucket}/backups/app?endpoint={proxy.endpoint}"
            writers = WriterGroup(database, [1, 2, 3], rate=200)
            spawned.append(writers)
            ship = Ship(database, replica, "--duration", "25", "--interval", "0.5", env=api_env)
            spawned.append(ship)
            assert ship.wait_for(LEASE_TAKEN), ship.output
            time.sleep(3)
            proxy.stop()
            time.sleep(6)
            proxy.start()
            time.sleep(3)
            writers.stop()  # well before the run's 25 s end, so the run captures the last commits itself
            code = ship.wait()
            print(f"\nrun during the outage exited {code}: {ship.output.splitlines()[-1]}")
            # The outage was seen: uploads failed and were retried, or stayed spooled for the next interval.
            assert (
                re.search(r"upload_spool-\S+' - Task run failed .* Retry 1/", ship.output)
                or "upload failed" in ship.output
            )
            if code != 0:
                assert code == 1, ship.output
                assert "still spooled" in ship.output, ship.output
            # Whatever stayed spooled drains now; an outage is no reason for a new generation.
            catch_up = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
            assert catch_up.returncode == 0, catch_up.stderr
            assert pending_files(database) == []
            assert len(replica_generations(replica)) == 1
            assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)


# 3. WAL reset while no shipper ran ---------------------------------------------------------


def _status(replica: str, env: dict[str, str]) -> dict[str, object]:
    result = walship("status", "--replica", replica, "--json", env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


class TestWalResetWhileDown:
    """An application TRUNCATE checkpoint while no shipper ran makes the next run start a new generation."""

    @pytest.mark.parametrize("writing", [False, True], ids=["writers-stopped", "writers-running"])
    def test_new_generation_after_truncate(
        self,
        database: Path,
        tmp_path: Path,
        api_env: dict[str, str],
        writing: bool,
        spawned: list[Ship | WriterGroup],
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        # The WAL already holds frames when the first run captures it.
        early = WriterGroup(database, [1, 2], rate=200)
        spawned.append(early)
        _wait_until(lambda: Path(f"{database}-wal").exists(), "the writers' WAL")
        first = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
        assert first.returncode == 0, first.stderr
        [generation] = replica_generations(replica)
        time.sleep(1)  # commits nobody captures
        if not writing:
            early.stop()
        busy, _, _ = _checkpoint_truncate(database)
        late = WriterGroup(database, [3, 4], rate=200)
        spawned.append(late)
        time.sleep(1)
        early.stop()
        late.stop()

        second = walship("--verbose", "ship", str(database), "--replica", replica, "--once", env=api_env)
        assert second.returncode == 0, second.stderr
        assert second.stdout.count("started generation ") == 1, (busy, second.stdout)
        [reason] = [m[2] for line in second.stderr.splitlines() if (m := GENERATION_CONFIRMED.search(line))]
        print(f"\nTRUNCATE with writers {'running' if writing else 'stopped'}: busy={busy}; new generation: {reason}")
        assert reason in WHILE_NOBODY_WATCHED
        status = _status(replica, api_env)
        snapshots = status["snapshots"]
        assert isinstance(snapshots, list)
        assert len({s["generation"] for s in snapshots}) == 2
        assert snapshots[0]["generation"] == generation
        assert status["current_generation"] != generation
        assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)

    def test_first_run_without_wal(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        assert not Path(f"{database}-wal").exists()
        first = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
        assert first.returncode == 0, first.stderr
        early = WriterGroup(database, [1, 2], rate=200)
        spawned.append(early)
        time.sleep(1.5)
        early.stop()
        _checkpoint_truncate(database)  # the frames of writers 1 and 2 move into the database file
        late = WriterGroup(database, [3, 4], rate=200)
        spawned.append(late)
        time.sleep(1.5)
        late.stop()  # a crash: their WAL stays, with new salts

        second = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
        assert second.returncode == 0, second.stderr
        output = tmp_path / "restored.db"
        restored = restore(replica, output, api_env)
        assert second.stdout.count("started generation ") == 1, (second.stdout, restored.stderr[:300])
        assert restored.returncode == 0, restored.stderr
        assert content_digest(output) == content_digest(database)


# 4. Lease -------------------------------------------------------------------------------


class TestLease:
    """A second shipper for another database on a leased replica is refused and writes nothing."""

    def test_second_shipper_refused(
        self,
        database: Path,
        base_database: Path,
        tmp_path: Path,
        api_env: dict[str, str],
        spawned: list[Ship | WriterGroup],
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        first = Ship(database, replica, "--duration", "15", "--interval", "0.5", env=api_env)
        spawned.append(first)
        assert first.wait_for(GENERATION_CONFIRMED), first.output
        other = tmp_path / "other" / "app.db"
        other.parent.mkdir()
        shutil.copyfile(base_database, other)

        second = walship("ship", str(other), "--replica", replica, "--once", env=api_env)
        assert_one_line_error(second, holder_for(database))
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert first.process.poll() is None, "the first shipper must still be running"
        assert first.wait() == 0, first.output

        [(generation, _)], _ = first.generations()
        assert replica_generations(replica) == {generation}
        spool = other.with_name("app.db-walship")
        assert not (spool / "cursor.json").exists()
        assert pending_files(other) == []


# 5. Broken chain ------------------------------------------------------------------------


def _ship_a_chain(
    database: Path, replica: str, env: dict[str, str], spawned: list[Ship | WriterGroup]
) -> tuple[str, list[int]]:
    """Ship about 5 s of writes; return the generation and its segment sequences."""
    writers = WriterGroup(database, [1, 2, 3], rate=200)
    spawned.append(writers)
    _wait_until(lambda: Path(f"{database}-wal").exists(), "the writers' WAL")
    ship = Ship(database, replica, "--duration", "5", "--interval", "0.3", env=env)
    spawned.append(ship)
    assert ship.wait() == 0, ship.output
    writers.stop()
    [generation] = replica_generations(replica)
    sequences = list_segment_sequences(open_store(replica), generation)
    assert sequences == list(range(1, len(sequences) + 1))
    assert len(sequences) >= 5, sequences
    return generation, sequences


class TestCorruptChain:
    """A missing or damaged segment stops a restore with an error naming it; earlier points still restore."""

    def test_missing_segment(
        self,
        database: Path,
        base_database: Path,
        tmp_path: Path,
        api_env: dict[str, str],
        spawned: list[Ship | WriterGroup],
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        generation, sequences = _ship_a_chain(database, replica, api_env, spawned)
        gap = sequences[len(sequences) // 2]
        missing = format_segment_key(generation, gap)
        open_store(replica).delete([missing])

        out_dir = tmp_path / "out"
        out_dir.mkdir()
        assert_one_line_error(restore(replica, out_dir / "latest.db", api_env), missing)
        assert list(out_dir.iterdir()) == []

        before = out_dir / "before-gap.db"
        result = restore(replica, before, api_env, "--sequence", str(gap - 1))
        assert result.returncode == 0, result.stderr
        assert f"{generation}/{gap - 1}" in result.stdout
        counts = committed_counts(before)
        assert sum(counts.values()) > 0
        expected = tmp_path / "expected.db"
        expected_state(base_database, expected, SEED, counts)
        assert content_digest(before) == content_digest(expected)

    def test_flipped_byte(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        replica = f"file://{tmp_path / 'replica'}"
        generation, sequences = _ship_a_chain(database, replica, api_env, spawned)
        damaged = format_segment_key(generation, sequences[len(sequences) // 2])
        rewrite_object(open_store(replica), damaged, "flip")

        out_dir = tmp_path / "out"
        out_dir.mkdir()
        assert_one_line_error(restore(replica, out_dir / "latest.db", api_env), damaged)
        assert list(out_dir.iterdir()) == []
