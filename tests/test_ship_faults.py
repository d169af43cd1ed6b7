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
import random
import re
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.workload import committed_counts, content_digest, expected_state
from tests.conftest import use_credentials
from tests.helpers import rewrite_object, walship
from tests.s3servers import MotoS3
from tests.shipping import (
    GENERATION_CONFIRMED,
    LEASE_TAKEN,
    SEED,
    WHILE_NOBODY_WATCHED,
    Ship,
    WriterGroup,
    assert_one_line_error,
    assert_restore_equals_source,
    checkpoint_mode,
    checkpoint_truncate,
    pending_files,
    replica_generations,
    restore,
    wait_until,
)
from tests.tcpproxy import TcpProxy
from walship.chain import list_segment_sequences
from walship.layout import format_segment_key
from walship.lease import holder_for
from walship.storage import open_store

# 1. Killed shippers ---------------------------------------------------------------------


@dataclass
class Trial:
    slept: float
    downtime: float = 0.0
    checkpoint: str = "-"  # the application's checkpoint while no shipper ran
    killed: bool = True
    started: list[tuple[str, str]] = field(default_factory=list)
    confirmed: set[str] = field(default_factory=set)
    resyncs: list[str] = field(default_factory=list)


_RESYNC_LINE = re.compile(r"resync (\S+): (\d+) of (\d+) pages")
_CHECKPOINTS = ["TRUNCATE", "-", "PASSIVE", "RESTART", "-", "FULL"]


class TestKilledShipper:
    """A shipper SIGKILLed at random moments under load loses nothing; gaps with application checkpoints
    are bridged by resyncs, and a new generation starts only when a kill interrupted the start of one."""

    TRIALS = 12  # the seeded torture tier draws many more kills; these keep a fixed, readable schedule

    def test_random_kills_then_catch_up(
        self, database: Path, tmp_path: Path, api_env: dict[str, str], spawned: list[Ship | WriterGroup]
    ) -> None:
        rng = random.Random(20261124)
        replica = f"file://{tmp_path / 'replica'}"
        writers = WriterGroup(database, [1, 2, 3], rate=200)
        spawned.append(writers)
        trials: list[Trial] = []
        for number in range(self.TRIALS):
            ship = Ship(database, replica, "--interval", "0.2", "--duration", "30", env=api_env)
            spawned.append(ship)
            assert ship.wait_for(LEASE_TAKEN), ship.output
            trial = Trial(slept=rng.uniform(0.3, 3.0))
            time.sleep(trial.slept)
            ship.kill()
            assert ship.process.returncode == -signal.SIGKILL, ship.output
            trial.started, trial.confirmed = ship.generations()
            trial.resyncs = [m[0] for m in _RESYNC_LINE.findall(ship.output)]
            # Writers go on while nobody watches; the application checkpoints on its own, TRUNCATE included.
            trial.downtime = rng.uniform(0.0, 10.0)
            trial.checkpoint = _CHECKPOINTS[number % len(_CHECKPOINTS)]
            time.sleep(trial.downtime / 2)
            if trial.checkpoint != "-":
                checkpoint_mode(database, trial.checkpoint)
            time.sleep(trial.downtime / 2)
            trials.append(trial)
        writers.stop()

        catch_up = Ship(database, replica, "--once", env=api_env)
        spawned.append(catch_up)
        assert catch_up.wait() == 0, catch_up.output
        trials.append(Trial(slept=0.0, killed=False))
        trials[-1].started, trials[-1].confirmed = catch_up.generations()
        trials[-1].resyncs = [m[0] for m in _RESYNC_LINE.findall(catch_up.output)]
        assert_restore_equals_source(replica, database, tmp_path / "restored.db", api_env)

        _report_generations(trials, next(line for line in catch_up.output.splitlines() if line.startswith("shipped")))
        reasons = [reason for t in trials for _, reason in t.started]
        assert reasons[0] == "no earlier capture of this database", reasons
        for previous, trial in itertools.pairwise(trials):
            # A kill in the middle of starting a generation leaves a map of the generation that never
            # began: the next run starts one again. Every other gap continues the generation.
            interrupted = any(g not in previous.confirmed for g, _ in previous.started)
            assert not trial.started or interrupted, (trial, previous)
        assert sum(len(t.resyncs) for t in trials) >= sum(t.checkpoint == "TRUNCATE" for t in trials[:-1])
        logged = {g for t in trials for g, _ in t.started}
        in_replica = replica_generations(replica)
        assert in_replica <= logged, in_replica - logged


def _report_generations(trials: list[Trial], catch_up: str) -> None:
    print(f"\n{sum(t.killed for t in trials)} SIGKILL trials; catch-up: {catch_up.strip()}")
    for number, trial in enumerate(trials):
        down = f"down {trial.downtime:4.1f}s, checkpoint {trial.checkpoint:8}" if trial.killed else ""
        started = "; ".join(
            f"{g} ({reason}{'' if g in trial.confirmed else ', killed while starting'})" for g, reason in trial.started
        )
        resyncs = f"{len(trial.resyncs)} resync(s)" if trial.resyncs else ""
        run = f"trial {number:2d} kill after {trial.slept:4.2f}s" if trial.killed else "catch-up run --once    "
        print(f"  {run} {down}: {'; '.join(x for x in (started, resyncs) if x) or 'continued'}")


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
    """An application TRUNCATE checkpoint while no shipper ran: the next run resyncs the same generation."""

    @pytest.mark.parametrize("writing", [False, True], ids=["writers-stopped", "writers-running"])
    def test_resync_after_truncate(
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
        wait_until(lambda: Path(f"{database}-wal").exists(), "the writers' WAL")
        first = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
        assert first.returncode == 0, first.stderr
        [generation] = replica_generations(replica)
        time.sleep(1)  # commits nobody captures
        if not writing:
            early.stop()
        busy, _, _ = checkpoint_truncate(database)
        late = WriterGroup(database, [3, 4], rate=200)
        spawned.append(late)
        time.sleep(1)
        early.stop()
        late.stop()

        second = walship("--verbose", "ship", str(database), "--replica", replica, "--once", env=api_env)
        assert second.returncode == 0, second.stderr
        assert "started generation " not in second.stdout, (busy, second.stdout)
        [resynced] = [line for line in second.stdout.splitlines() if line.startswith("resynced: ")]
        print(f"\nTRUNCATE with writers {'running' if writing else 'stopped'}: busy={busy}; {resynced}")
        assert any(reason in resynced for reason in WHILE_NOBODY_WATCHED), resynced
        assert replica_generations(replica) == {generation}
        status = _status(replica, api_env)
        assert status["current_generation"] == generation
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
        checkpoint_truncate(database)  # the frames of writers 1 and 2 move into the database file
        late = WriterGroup(database, [3, 4], rate=200)
        spawned.append(late)
        time.sleep(1.5)
        late.stop()  # a crash: their WAL stays, with new salts

        second = walship("ship", str(database), "--replica", replica, "--once", env=api_env)
        assert second.returncode == 0, second.stderr
        output = tmp_path / "restored.db"
        restored = restore(replica, output, api_env)
        # The file changed and a new WAL began while nobody watched: the same generation, resynced.
        assert "started generation " not in second.stdout, (second.stdout, restored.stderr[:300])
        assert "resynced: " in second.stdout, second.stdout
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
    wait_until(lambda: Path(f"{database}-wal").exists(), "the writers' WAL")
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
