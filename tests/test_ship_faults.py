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
        checkpoint_truncate(database)  # the frames of writers 1 and 2 move into the database file
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
