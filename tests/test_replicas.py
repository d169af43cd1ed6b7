"""One shipper, several replicas (issue 26): one capture, an uploader per replica, and no replica's outage
stalling the others.

The acknowledgements are checked on a real spool filled by a real shipper;
the rest end to end, with writer processes, the CLI as operators run it, and
a replica on moto behind a proxy that goes down and comes back.
"""

import contextlib
import itertools
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.workload import committed_counts, content_digest
from tests.helpers import walship
from tests.prefect_api import artifacts, database_resource_id, flow_runs_of, read_events
from tests.shipping import (
    Ship,
    WriterGroup,
    app_commits,
    assert_one_line_error,
    replica_generations,
    restore,
    wait_until,
)
from tests.tcpproxy import TcpProxy
from walship.acks import ReplicaAcks
from walship.chain import list_segment_sequences
from walship.fleet import RetryingSteps
from walship.layout import parse_snapshot_key
from walship.ship import LoggingObserver, ShipConfig, Shipper, ShippingRun
from walship.spool import PendingEntry, Spool, default_spool_dir
from walship.status import replica_status
from walship.storage import open_store, parse_replica_url
from walship.upload import upload_pending

DIRECT: dict[str, str] = {"PREFECT_API_URL": ""}
# For a run whose replica is down from before its end until it exited: the final drain's retries all fail, so
# they are tried at short delays (walship_cli/_direct.py) instead of waiting out the policy's 30 s.
DOWN_TO_THE_END: dict[str, str] = {**DIRECT, "WALSHIP_TEST_RETRY_BACKOFF": "0.1"}
A, B = "file:///replica-a", "file:///replica-b"


# The acknowledgements -------------------------------------------------------------------


@contextlib.contextmanager
def captured(database: Path, segments: int) -> Iterator[tuple[Spool, Shipper]]:
    """A spool holding a generation's snapshot and ``segments`` segments of the application's commits."""
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id=database.name))
    try:
        shipper.open()
        for n in range(segments):
            connection.execute("INSERT INTO notes (body) VALUES (?)", (f"note {n} " * 20,))
            shipper.sync()
        yield spool, shipper
    finally:
        shipper.close()
        spool.close()
        connection.close()


def keys(entries: list[PendingEntry]) -> list[tuple[str, int, bool]]:
    return [tuple(entry.order) for entry in entries]  # type: ignore[misc]


class TestAcknowledgements:
    def test_an_entry_leaves_once_every_replica_stored_it(self, database: Path) -> None:
        with captured(database, 3) as (spool, _):
            entries = spool.pending()
            acks = ReplicaAcks(spool, [A, B])
            for entry in entries[:3]:
                acks.stored(A, entry)
            assert keys(spool.pending()) == keys(entries), "A alone stored them: B still needs them"
            assert [acks.wants(A, e) for e in entries] == [False] * 3 + [True]
            acks.stored(B, entries[0])
            assert keys(spool.pending()) == keys(entries[1:])
            # Marks outlive the run (a crash): a new run knows what each replica holds.
            again = ReplicaAcks(spool, [A, B])
            assert [again.wants(A, e) for e in entries[1:]] == [False, False, True]
            assert [again.wants(B, e) for e in entries[1:]] == [True, True, True]

    def test_one_replica_removes_at_once_and_a_replica_left_out_holds_nothing(self, database: Path) -> None:
        with captured(database, 3) as (spool, _):
            entries = spool.pending()
            acks = ReplicaAcks(spool, [A, B])
            acks.stored(A, entries[0])
            acks.stored(A, entries[1])
            # The next run ships to A alone: what only B needed leaves the spool.
            alone = ReplicaAcks(spool, [A])
            assert keys(spool.pending()) == keys(entries[2:])
            alone.stored(A, entries[2])
            assert keys(spool.pending()) == keys(entries[3:])
            assert not (spool.root / "replicas" / "served.json").exists()

    def test_behind_releases_the_spool_and_resumes_at_a_snapshot_of_its_own(self, database: Path) -> None:
        with captured(database, 4) as (spool, shipper):
            entries = spool.pending()
            acks = ReplicaAcks(spool, [A, B])
            for entry in entries:
                acks.stored(A, entry)
            assert len(spool.pending()) == len(entries), "B has stored nothing yet"
            acks.fall_behind(B, "down")
            assert spool.pending() == [], "nothing is held for a replica behind"
            assert acks.mark(B).missed == entries[-1].order
            with pytest.raises(LookupError):
                acks.resume(B)  # nothing spooled past what it missed to resume at
            assert acks.behind(B), "a resume that found no snapshot leaves it behind"
            shipper.take_snapshot(only_for=(B,))
            shipper.finish()  # waits for the snapshot
            bridge = spool.pending()
            assert [(e.kind, e.only_for) for e in bridge] == [("snapshot", (B,))]
            assert not acks.wants(A, bridge[0]), "a bridge goes to the replica it was taken for, alone"
            acks.fall_behind(A, "down too")  # a sweep keeps a bridge a replica behind waits for
            assert keys(spool.pending()) == keys(bridge)
            resumed = acks.resume(B)
            assert resumed is not None
            assert resumed.order == bridge[0].order
            assert not acks.behind(B)
            assert acks.wants(B, bridge[0])

    def test_a_bridge_holds_what_follows_it_from_the_moment_its_point_is_fixed(self, database: Path) -> None:
        connection = sqlite3.connect(database, isolation_level=None)
        with captured(database, 2) as (spool, shipper):
            acks = ReplicaAcks(spool, [A, B])
            for entry in spool.pending():
                acks.stored(A, entry)
            acks.fall_behind(B, "down")
            assert spool.pending() == []
            shipper.take_snapshot(only_for=(B,), fixed=lambda position: acks.expect_bridge(B, position))
            assert not acks.behind(B), "it resumes at the bridge from the moment the bridge's point is fixed"
            connection.execute("INSERT INTO notes (body) VALUES ('after the bridge')")
            shipper.sync()
            shipper.finish()  # the copy is spooled
            after = [e for e in spool.pending() if e.kind == "segment"]
            assert after, "the commit after the bridge was captured"
            for entry in after:
                acks.stored(A, entry)
            bridge = [e for e in spool.pending() if e.kind == "snapshot"]
            assert keys(spool.pending()) == keys(bridge + after), "what follows the bridge waits for B"
            assert not acks.waits_for_bridge(B)
            acks.stored(B, bridge[0])
            assert acks.mark(B).bridge is None, "stored: what follows may go up"
        connection.close()

    def test_nothing_goes_up_before_a_bridge_that_is_not_spooled(self, database: Path) -> None:
        with captured(database, 2) as (spool, shipper):
            acks = ReplicaAcks(spool, [A, B])
            cursor = shipper.cursor
            assert cursor is not None
            acks.expect_bridge(B, cursor.position)  # a bridge whose copy never arrives
            assert acks.waits_for_bridge(B)
            acks.bridge_failed(B, "the copy failed")
            assert acks.behind(B)
            assert acks.mark(B).missed is not None

    def test_resumed_at_a_snapshot_every_replica_gets_it_is_that_replicas_bridge(
        self, database: Path, tmp_path: Path
    ) -> None:
        """A replica back from behind may resume at a snapshot the shipper took for all (its periodic one):
        its copy is then its bridge, so its status says the gap before it is bridged, not lost (torture
        seed 186468 found it reported lost)."""
        connection = sqlite3.connect(database, isolation_level=None)
        b_url = f"file://{tmp_path / 'b'}"
        b_store = open_store(b_url)
        with captured(database, 1) as (spool, shipper):
            b = b_store.location
            acks = ReplicaAcks(spool, [A, b])
            upload_pending(b_store, spool, holder="test", acks=acks)  # the generation's snapshot and segment 1
            for n in range(3):
                connection.execute("INSERT INTO notes (body) VALUES (?)", (f"missed {n}",))
                shipper.sync()
            for entry in spool.pending():
                acks.stored(A, entry)
            acks.fall_behind(b, "down")  # it misses segments 2-4
            shipper.take_snapshot()  # for every replica
            shipper.finish()
            connection.execute("INSERT INTO notes (body) VALUES ('after it')")
            shipper.sync()
            resumed = acks.resume(b)
            assert resumed is not None
            assert resumed.only_for == ()
            resumed_at = resumed.snapshot
            assert resumed_at is not None
            upload_pending(b_store, spool, holder="test", acks=acks)
        connection.close()
        status = replica_status(b_store)
        assert status.restorable, status.problems
        assert not status.problems, status.problems
        assert status.bridged == [
            f"sequences 2-{resumed_at.sequence} of generation {resumed_at.generation} are not here: this replica "
            f"was behind another and resumed at its snapshot {resumed_at.sequence}; a point inside is restored "
            "from the other replica"
        ]

    def test_a_generation_begun_in_the_same_second_comes_after_the_one_before(self, database: Path) -> None:
        """Entries and marks are ordered by generation name: a generation begun within the second of the last
        one must sort after it, or a replica that stored the older one's snapshot wants none of the newer one's
        entries, and they leave the spool unsent (torture seed 119: a damaged entry, a new generation at once)."""
        with captured(database, 1) as (spool, shipper):
            acks = ReplicaAcks(spool, [A, B])
            for _ in range(6):
                before = spool.pending()
                for entry in before:
                    acks.stored(A, entry)
                    acks.stored(B, entry)
                shipper.start_generation("a damaged entry, say")
                shipper.finish()
                new = [e for e in spool.pending() if e not in before]
                assert new, "the new generation's snapshot is spooled"
                assert all(acks.wants(A, e) and acks.wants(B, e) for e in new), [e.order for e in new]

    def test_with_its_cursor_damaged_and_nothing_pending_a_new_generation_still_comes_after(
        self, database: Path
    ) -> None:
        """Only the replicas' marks then name the generation before: the spool's record of the newest one it
        began keeps the new name after it."""
        with captured(database, 1) as (spool, shipper):
            acks = ReplicaAcks(spool, [A, B])
            for _ in range(6):
                for entry in spool.pending():
                    acks.stored(A, entry)
                    acks.stored(B, entry)
                assert spool.pending() == []
                (spool.root / "cursor.json").write_text("{damaged")
                shipper.start_generation("the spool's cursor was damaged")
                shipper.finish()
                new = spool.pending()
                assert new, "the new generation's snapshot is spooled"
                assert all(acks.wants(A, e) and acks.wants(B, e) for e in new), [e.order for e in new]

    def test_behind_but_missed_nothing_continues_where_it_was(self, database: Path) -> None:
        with captured(database, 2) as (spool, _):
            entries = spool.pending()
            acks = ReplicaAcks(spool, [A, B])
            acks.fall_behind(B, "down")
            assert keys(spool.pending()) == keys(entries), "A still needs every entry"
            assert acks.resume(B) is None
            assert all(acks.wants(B, e) for e in entries)


class TestSpoolUnderUploaders:
    def test_listing_the_spool_while_another_thread_empties_generations(self, tmp_path: Path) -> None:
        """Uploaders remove entries, and a generation's directory with its last one, while the run lists the
        spool: a directory gone is an empty one, never an error."""
        spool = Spool(tmp_path / "spool")
        stop, errors = threading.Event(), []

        def churn() -> None:
            for n in itertools.count():
                if stop.is_set():
                    return
                generation = spool.root / "pending" / f"g{n % 7}"
                generation.mkdir(exist_ok=True)
                (generation / "00000000000000000001.wal.zst").write_bytes(b"x")
                (generation / "00000000000000000001.wal.zst").unlink()
                with contextlib.suppress(OSError):
                    generation.rmdir()

        thread = threading.Thread(target=churn)
        thread.start()
        deadline = time.monotonic() + 2
        try:
            while time.monotonic() < deadline:
                try:
                    spool.pending()
                    spool.pending_bytes()
                except OSError as exc:
                    errors.append(exc)
        finally:
            stop.set()
            thread.join()
            spool.close()
        assert errors == []


# End to end --------------------------------------------------------------------------------


@pytest.fixture(params=["direct", "prefect"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The CLI without a Prefect API, then with the session's (its server starts only when asked for)."""
    return DIRECT if request.param == "direct" else request.getfixturevalue("api_env")


def assert_equals_source(replica: str, database: Path, output: Path, env: dict[str, str]) -> None:
    result = restore(replica, output, env)
    assert result.returncode == 0, result.stderr
    restored, source = committed_counts(output), committed_counts(database)
    assert restored == source, (replica, result.stdout, restored, source)
    assert content_digest(output) == content_digest(database), replica


def assert_no_gap(replica: str) -> None:
    for generation in replica_generations(replica):
        sequences = list_segment_sequences(open_store(replica), generation)
        assert sequences == list(range(1, len(sequences) + 1)), (generation, sequences)


_BEHIND = re.compile(r"replica (\S+) is behind")
_CAUGHT_UP = re.compile(r"replica (\S+) caught up: resumed at snapshot (\S+)")


class TestOneReplicaDown:
    """A replica down for a while never stalls the other; it catches up from the spool, or past the spool's
    cap resumes at a snapshot of its own, in the same generation."""

    def test_down_within_the_cap_catches_up_from_the_spool(
        self, database: Path, tmp_path: Path, proxied_moto: tuple[str, TcpProxy], spawned: list[Ship | WriterGroup]
    ) -> None:
        env = DIRECT  # the flow's uploads are the same threads (its mode is tested past the cap)
        down, proxy = proxied_moto
        local = f"file://{tmp_path / 'local'}"
        writers = WriterGroup(database, [1, 2], rate=150)
        spawned.append(writers)
        ship = Ship(database, local, "--replica", down, "--duration", "25", "--interval", "0.5", env=env)
        spawned.append(ship)
        wait_until(lambda: bool(replica_generations(local)), "the first upload", timeout=90)
        time.sleep(2)
        proxy.stall()  # a storage that hangs: the worst for the others, were they to wait for it
        before = len(list_segment_sequences(open_store(local), next(iter(replica_generations(local)))))
        time.sleep(6)
        during = len(list_segment_sequences(open_store(local), next(iter(replica_generations(local)))))
        assert during >= before + 4, "the local replica stalled while the other hung"
        proxy.resume()
        time.sleep(4)
        writers.stop()
        assert ship.wait() == 0, ship.output
        assert replica_generations(local) == replica_generations(down), "the outage began no generation"
        assert len(replica_generations(local)) == 1
        for replica in (local, down):
            assert_no_gap(replica)
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", env)
        hung = re.search(rf"replica {re.escape(open_store(down).location)}: .* \(max ([\d.]+) s\)", ship.output)
        assert hung is not None, ship.output
        assert float(hung[1]) >= 4, "its uploads waited through the stall"

    def test_one_that_hangs_from_the_start_holds_nothing_back(
        self, database: Path, tmp_path: Path, proxied_moto: tuple[str, TcpProxy], spawned: list[Ship | WriterGroup]
    ) -> None:
        """Each replica connects in its own uploader: a storage that hangs at the start (botocore waits 60 s a
        read) neither delays the capture nor the other replica (found by the torture harness)."""
        down, proxy = proxied_moto
        local = f"file://{tmp_path / 'local'}"
        proxy.stall()
        writers = WriterGroup(database, [1], rate=100)
        spawned.append(writers)
        ship = Ship(database, local, "--replica", down, "--duration", "20", "--interval", "0.5", env=DIRECT)
        spawned.append(ship)
        wait_until(lambda: bool(replica_generations(local)), "the local replica's first upload", timeout=30)
        proxy.resume()
        writers.stop()
        assert ship.wait() == 0, ship.output
        for replica in (local, down):
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", DIRECT)

    def test_past_the_cap_it_is_behind_then_resumes_at_a_snapshot(
        self,
        database: Path,
        tmp_path: Path,
        proxied_moto: tuple[str, TcpProxy],
        spawned: list[Ship | WriterGroup],
        env: dict[str, str],
    ) -> None:
        database_id = f"behind-{secrets.token_hex(3)}.db"
        down, proxy = proxied_moto
        local = f"file://{tmp_path / 'local'}"
        writers = WriterGroup(database, [1, 2], rate=150)
        spawned.append(writers)
        options = ("--duration", "40", "--interval", "0.5", "--spool-cap", "0.05", "--database-id", database_id)
        ship = Ship(database, local, "--replica", down, *options, env=env)
        spawned.append(ship)
        wait_until(lambda: bool(replica_generations(down)), "the first upload", timeout=90)
        proxy.stop()
        assert ship.wait_for(_BEHIND, timeout=60), ship.output
        proxy.start()
        assert ship.wait_for(_CAUGHT_UP, timeout=60), ship.output
        time.sleep(2)
        writers.stop()
        assert ship.wait() == 0, ship.output
        caught_up = _CAUGHT_UP.search(ship.output)
        assert caught_up is not None
        assert caught_up[1] == open_store(down).location
        assert replica_generations(local) == replica_generations(down), "it resumed in the same generation"
        assert_no_gap(local)
        for replica in (local, down):
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", DIRECT)
        if env is not DIRECT:
            assert_told_in_prefect(database_id, down, caught_up[2])
        # The gap it was behind for is the replica's own: a point inside it cannot be restored there, and says so.
        generation = next(iter(replica_generations(down)))
        sequences = list_segment_sequences(open_store(down), generation)
        missing = next(s for s in range(1, sequences[-1]) if s not in sequences)
        into_gap = restore(down, tmp_path / "gap.db", DIRECT, "--generation", generation, "--sequence", str(missing))
        assert_one_line_error(into_gap, "is not in the replica")
        assert not (tmp_path / "gap.db").exists()
        # Status and drills know the gap for what it is: bridged, not lost.
        status = walship("status", "--replica", down, env=DIRECT)
        assert status.returncode == 0, status.stderr
        bridge = parse_snapshot_key(caught_up[2])
        assert bridge is not None
        assert f"sequences {missing}-{bridge.sequence} of generation {generation} are not here" in status.stdout
        assert "problem:" not in status.stdout, status.stdout
        drill = walship("verify", "--older", "--replica", down, env=DIRECT)
        assert drill.returncode == 0, drill.stdout + drill.stderr

    def test_down_at_the_end_fails_the_run_then_the_next_run_catches_up(
        self, database: Path, tmp_path: Path, proxied_moto: tuple[str, TcpProxy], spawned: list[Ship | WriterGroup]
    ) -> None:
        down, proxy = proxied_moto
        local = f"file://{tmp_path / 'local'}"
        writers = WriterGroup(database, [1], rate=100)
        spawned.append(writers)
        # The replica stays down until the run exited: its final drain fails whatever the retries' delays.
        ship = Ship(database, local, "--replica", down, "--duration", "8", "--interval", "0.5", env=DOWN_TO_THE_END)
        spawned.append(ship)
        wait_until(lambda: bool(replica_generations(down)), "the first upload", timeout=90)
        proxy.stop()
        # Writers go on to the end: the final drain sends the reachable replica a tail of its own.
        assert ship.wait() == 1, ship.output
        writers.stop()
        location = open_store(down).location
        assert re.search(rf"walship: \d+ entries are still spooled in \S+ for {re.escape(location)}", ship.output), (
            ship.output[-3000:]
        )
        assert f"for {open_store(local).location}" not in ship.output, "the reachable replica took everything"
        proxy.start()
        again = walship("ship", str(database), "--replica", local, "--replica", down, "--once", env=DIRECT)
        assert again.returncode == 0, again.stderr
        for replica in (local, down):
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", DIRECT)
        assert_no_gap(down)


class TestTheEnd:
    def test_what_the_end_captures_reaches_every_replica(self, database: Path, tmp_path: Path) -> None:
        """The final drain's step acknowledges on the spool's marks; the run reads them back, so a replica that
        stored everything is not reported as still needing what another has yet to store."""
        replicas = [f"file://{tmp_path / name}" for name in ("one", "two")]
        observer = LoggingObserver(logging.getLogger("walship"))
        config = ShipConfig(database_id=database.name)
        run = ShippingRun(database, replicas, config, spool_dir=None, steps=RetryingSteps(), observer=observer)
        run.begin()
        app_commits(database, 10)  # no sync before the end: its final capture alone takes them
        report = run.end()
        assert report.pending_at_end == 0
        assert [row.pending_at_end for row in report.replicas] == [0, 0]
        for replica in replicas:
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", DIRECT)


def assert_told_in_prefect(database_id: str, replica: str, bridge: str) -> None:
    """The replica's own events say it fell behind and resumed; the run's table has a row for it."""
    about = database_resource_id(database_id, str(parse_replica_url(replica)))
    behind = read_events("walship.replica.behind", resource_id=about)
    assert len(behind) == 1, behind
    assert "spool" in behind[0].payload["reason"]
    caught_up = read_events("walship.replica.caught-up", resource_id=about)
    assert [e.payload["detail"] for e in caught_up] == [f"resumed at snapshot {bridge}"]
    (run,) = flow_runs_of(database_id)
    (table,) = [str(a.data) for a in artifacts(run.id, "markdown")]
    row = re.search(rf"^\| replica `{re.escape(open_store(replica).location)}` \| (.*) \|$", table, re.MULTILINE)
    assert row is not None, table
    assert f"keeping up, resumed at its snapshot {parse_snapshot_key(bridge).sequence}; at sequence" in row[1], row


class TestBehindThenAlone:
    def test_a_replica_behind_shipped_alone_next_resumes_at_its_bridge(
        self, database: Path, tmp_path: Path, proxied_moto: tuple[str, TcpProxy], spawned: list[Ship | WriterGroup]
    ) -> None:
        """The operator drops the replica that kept up: the one left behind still gets a bridge, never a
        chain with a hole after its newest snapshot."""
        down, proxy = proxied_moto
        local = f"file://{tmp_path / 'local'}"
        writers = WriterGroup(database, [1], rate=150)
        spawned.append(writers)
        options = ("--duration", "15", "--interval", "0.5", "--spool-cap", "0.05")
        ship = Ship(database, local, "--replica", down, *options, env=DIRECT)
        spawned.append(ship)
        wait_until(lambda: bool(replica_generations(down)), "the first upload", timeout=90)
        proxy.stop()
        assert ship.wait_for(_BEHIND, timeout=60), ship.output
        writers.stop()
        assert ship.wait() == 1, ship.output
        assert f"replica {open_store(down).location} is behind" in ship.output
        proxy.start()
        alone = walship("--verbose", "ship", str(database), "--replica", down, "--duration", "5", env=DIRECT)
        assert alone.returncode == 0, alone.stderr
        assert "caught up: resumed at snapshot" in alone.stderr, alone.stderr
        assert_equals_source(down, database, tmp_path / "down.db", DIRECT)


class TestANewReplica:
    """A replica this spool never shipped to, added while a generation runs (a second replica, or the one
    replica moved to a new bucket): it gets a snapshot of its own, never segments nothing there restores."""

    @pytest.mark.parametrize("several", [False, True], ids=["moved", "added"])
    def test_it_gets_a_snapshot_of_its_own(
        self, several: bool, env: dict[str, str], database: Path, tmp_path: Path
    ) -> None:
        first, second = f"file://{tmp_path / 'first'}", f"file://{tmp_path / 'second'}"
        app_commits(database, 20)
        shipped = walship("ship", str(database), "--replica", first, "--once", env=env)
        assert shipped.returncode == 0, shipped.stderr
        app_commits(database, 20)
        replicas = ["--replica", first, "--replica", second] if several else ["--replica", second]
        joined = walship("--verbose", "ship", str(database), *replicas, "--once", env=env)
        assert joined.returncode == 0, joined.stderr
        assert "it gets a snapshot of its own" in joined.stderr, joined.stderr
        assert_equals_source(second, database, tmp_path / "second.db", env)
        if several:
            assert_equals_source(first, database, tmp_path / "first.db", env)
            assert_no_gap(first)
        # One generation, which the new replica holds from its snapshot on.
        assert replica_generations(second) == replica_generations(first)


class TestReplicaOptions:
    @pytest.mark.parametrize("command", ["restore", "follow", "status", "verify", "retention"])
    def test_commands_of_one_replica_refuse_two(self, command: str, tmp_path: Path) -> None:
        extra = {
            "restore": ["--output", str(tmp_path / "out.db")],
            "follow": ["--output", str(tmp_path / "copy.db"), "--once"],
            "retention": ["--keep-last", "1"],
        }.get(command, [])
        result = walship(command, *extra, "--replica", A, "--replica", B, env=DIRECT)
        assert result.returncode == 2, result.stderr
        assert f"'walship {command}' works on one replica" in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2

    def test_the_same_replica_twice_is_refused(self, database: Path, tmp_path: Path) -> None:
        replica = f"file://{tmp_path / 'r'}"
        result = walship("ship", str(database), "--replica", replica, "--replica", replica + "/", "--once", env=DIRECT)
        assert result.returncode == 2, result.stderr
        assert "a replica is named twice" in result.stderr

    def test_snapshot_into_two_replicas(self, database: Path, tmp_path: Path) -> None:
        first, second = (f"file://{tmp_path / name}" for name in ("one", "two"))
        result = walship("snapshot", str(database), "--replica", first, "--replica", second, env=DIRECT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("snapshot generations/") == 2
        for replica in (first, second):
            assert_equals_source(replica, database, tmp_path / f"{secrets.token_hex(3)}.db", DIRECT)
