"""One torture run: writers, a shipper (or a fleet), the plan's faults; then ``Checks`` on what the replicas hold."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from bench.workload import create_database
from tests.helpers import ROOT, WALSHIP
from tests.s3servers import MotoS3, s3_client
from tests.tcpproxy import TcpProxy
from tests.torture.fleet import handles_sigterm, holds_files_of, lock_names
from tests.torture.schedule import CHECKPOINT_MODES, Event, Plan
from tests.torture.second import SecondReplica
from tests.torture.shipper import Shipper
from walship.fleet import replica_for
from walship.storage import open_store

__all__ = ["Shipper", "TortureRun"]

_DATABASE_BYTES = 2 << 20
# How long a park event waits for the fleet to park the idle database (it is a failure when it does not).
PARK_TIMEOUT = 40.0
_APP = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10); "
    "[c.execute(s).fetchall() for s in sys.argv[2:]]; c.close()"
)

# A commit that changes no row (the checks compare rows): it sets the header's user version.
_NO_ROW_CHANGED = "PRAGMA user_version = 7"
# An application's long read, just after such a commit of its own (so that its snapshot is a WAL end not yet in
# the database file): "reading" on stdout once it began; it ends when stdin closes.
_READER = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10); c.execute(sys.argv[2]); "
    "c.execute('BEGIN'); c.execute('SELECT count(*) FROM sqlite_schema').fetchall(); "
    "print('reading', flush=True); sys.stdin.read(); c.execute('COMMIT'); c.close()"
)


class TortureRun:
    """Run ``plan`` for ``seconds`` in ``workdir``; ``moto`` is the S3 server when the plan asks for one."""

    def __init__(self, plan: Plan, seconds: float, workdir: Path, moto: MotoS3 | None = None) -> None:
        self.plan, self.seconds, self.workdir = plan, seconds, workdir
        self.database = workdir / "app.db"
        self.base = workdir / "base.db"
        self.logs = workdir / "logs"
        # PYTHONFAULTHANDLER: a shipper that hangs prints its threads' stacks when the run aborts it (Shipper.wait).
        self.env = {**os.environ, "PREFECT_API_URL": "", "PYTHONFAULTHANDLER": "1"}
        if _retries_cannot_succeed(plan):
            self.env["WALSHIP_TEST_RETRY_BACKOFF"] = "0.1"
        self.shippers: list[Shipper] = []
        self.writers: dict[int, subprocess.Popen[bytes]] = {}
        self.happened: list[str] = []
        self.damaged: list[str] = []  # spooled entries the run damaged: a shipper must stop, naming one
        self.started = 0.0
        self._moto = moto
        self._proxy: TcpProxy | None = None
        self._bucket: tuple[MotoS3, str] | None = None  # kept on a failed check (keep_replica)
        self.spool: Path | None = None  # on a small filesystem of its own (``spool_disk``)
        self.replica = ""  # the database's replica, which the checks read
        self.first_location = ""  # where walship's lines name it
        self.shipped_to = ""  # the shipper's --replica (a fleet's base URL)
        self.pause = workdir / "pause"  # the writers commit nothing while it exists
        self.not_parked: list[str] = []  # park events whose fleet never parked the idle database
        self.second = SecondReplica(plan, moto) if plan.second_replica else None  # tests/torture/second.py
        # Odd seeds on S3 ship into an Object Lock bucket: every command must work there as on any other, and
        # the replica read as it was at each shipper's exit (--versions-at) must hold what that shipper
        # acknowledged. Not part of the schedule: the same seed replays the same faults either way.
        self.locked = plan.backend == "moto" and plan.seed % 2 == 1

    # Setting up ---------------------------------------------------------------------

    @contextlib.contextmanager
    def storage(self) -> Iterator[None]:
        """The replica, and the second one when the plan has one."""
        with self._storage(), self.second.storage(self.env) if self.second else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def _storage(self) -> Iterator[None]:
        """The replica: a local directory, or a bucket on moto behind a proxy that outages stop."""
        if self.plan.backend == "local":
            self._replica(f"file://{self.workdir / 'replica'}")
            yield
            return
        server = self._moto or MotoS3()
        bucket = f"torture-{self.plan.seed}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        if self.locked:
            server.create_locked_bucket(bucket)
        else:
            server.create_bucket(bucket)
        self._bucket = (server, bucket)
        moto = urlsplit(server.endpoint)
        assert moto.hostname is not None
        assert moto.port is not None
        self.env.update(
            AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1"
        )
        try:
            with TcpProxy(moto.hostname, moto.port) as proxy:
                self._proxy = proxy
                self._replica(f"s3://{bucket}/app?endpoint={proxy.endpoint}")
                yield
        finally:
            if self._moto is None:
                server.stop()

    def keep_replica(self) -> None:
        """After a failed check: the bucket's objects into ``replica-kept/`` (a local replica stays as it is), and
        a spool on a filesystem of its own into ``spool-kept/``."""
        if self.spool is not None and self.spool.exists():
            shutil.copytree(self.spool, self.workdir / "spool-kept", dirs_exist_ok=True)
        if self.second is not None:
            self.second.keep(self.workdir)
        if self._bucket is None:
            return
        server, bucket = self._bucket
        client = s3_client(server)
        kept = self.workdir / "replica-kept"
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                target = kept / obj["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))

    def _replica(self, url: str) -> None:
        """A fleet is given a base URL and ships the database under it (``<base>/app.db``)."""
        self.shipped_to = url
        self.replica = replica_for(url, self.database) if self.plan.fleet else url
        self.first_location = open_store(self.replica).location

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        create_database(self.base, _DATABASE_BYTES, seed=11)
        _copy(self.base, self.database)

    @contextlib.contextmanager
    def spool_disk(self) -> Iterator[None]:
        """The spool on a small tmpfs of its own when the plan says so (and this machine lets us mount one)."""
        if not self.plan.spool_mib:
            yield
            return
        mount = self.workdir / "spool"
        mount.mkdir(parents=True, exist_ok=True)
        size = f"size={self.plan.spool_mib}m"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], check=False, capture_output=True
        )
        if done.returncode != 0:
            self.note(f"no spool filesystem ({done.stderr.decode().strip()}): the spool stays beside the database")
            yield
            return
        self.spool = mount / "walship"
        try:
            yield
        finally:
            for _ in range(100):
                if subprocess.run(["umount", str(mount)], check=False, capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)

    # Processes ---------------------------------------------------------------------

    def start_writers(self) -> None:
        for number, rate in enumerate(self.plan.writers, start=1):
            command = [
                sys.executable,
                "-m",
                "tests.torture.writer",
                str(self.database),
                "--writer",
                str(number),
                "--rate",
                str(rate),
                "--log",
                str(self.logs / f"w{number}.log"),
                "--seed",
                f"{self.plan.seed}{len(self.happened)}",
                "--pause",
                str(self.pause),
            ]
            self.writers[number] = subprocess.Popen(command, cwd=ROOT, env=self.env)

    def stop_writers(self) -> None:
        """The application closes its connections (SIGTERM: each writer closes cleanly)."""
        for process in self.writers.values():
            process.send_signal(signal.SIGTERM)
        for number, process in self.writers.items():
            # -SIGTERM: stopped before it began (its handler not yet set), having committed nothing.
            if process.wait(timeout=60) not in {0, -signal.SIGTERM}:
                self.note(f"writer {number} exited {process.returncode}")
        self.writers.clear()

    def start_shipper(self, *, handover_wait: float = 0.0) -> Shipper:
        number = len(self.shippers) + 1
        command = self.ship_command("--duration", "3600", "--handover-wait", str(handover_wait))
        shipper = Shipper(number, command, self.logs / f"ship{number}.log", self.env)
        self.shippers.append(shipper)
        return shipper

    def ship_command(self, *window: str) -> list[str]:
        return [
            WALSHIP,
            "--verbose",
            "ship-many" if self.plan.fleet else "ship",
            str(self.database),
            "--replica",
            self.shipped_to,
            *(self.second.options() if self.second else []),
            *window,
            "--interval",
            str(self.plan.interval),
            *(["--spool", str(self.spool)] if self.spool else []),
            *(["--park-after", str(self.plan.park_after)] if self.plan.fleet else []),
            *(["--coalesce", str(self.plan.coalesce)] if self.plan.coalesce else []),
        ]

    @property
    def shipper(self) -> Shipper:
        return self.shippers[-1]

    def note(self, what: str) -> None:
        self.happened.append(f"{time.time() - self.started:7.2f}s {what}")

    # The run -------------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.started = time.time()
        self.start_shipper()
        self.start_writers()
        if self.second is not None:
            self.second.start_outages(self.started, self.note)
        for event in self.plan.events:
            time.sleep(max(0.0, self.started + event.at - time.time()))
            self.note(f"{event.kind} {event.detail} gap {event.gap}".replace("  ", " "))
            self._apply(event)
            self._restart_if_ended()
        if self.second is not None:
            self.second.stop_outages(at_once=False)
        time.sleep(max(0.0, self.started + self.seconds - time.time()))
        self.finish()

    def _restart_if_ended(self) -> None:
        """A shipper that stopped on its own (it must say why: see checks) is followed by the next one."""
        if self.shipper.process.poll() is not None:
            self.note(f"shipper {self.shipper.number} ended on its own: {self.shipper.wait()}")
            self.start_shipper()

    def finish(self) -> None:
        """Writers stop; the running shipper captures what they left, then ends cleanly.

        It must hold the database first: a shipper still starting up when the
        signal comes dies by it, having acknowledged nothing.
        """
        self.stop_writers()
        self.note("writers stopped")
        self._restart_if_ended()
        self.last_window()
        if self.second is not None:
            self.second.after_the_end(self)  # an --once with both replicas follows a failed end
        elif self.shipper.process.returncode == 1:
            # It failed saying why (checks hold it to a damaged entry or a full spool): the operator's next run
            # must ship what that one left spooled or in the WAL, and end cleanly.
            self.start_shipper()
            self.last_window()

    def last_window(self) -> None:
        self.wait_until_holding(self.shipper)
        time.sleep(self.plan.interval * 2 + 0.5)
        code = self.shipper.end(signal.SIGTERM)
        self.note(f"shipper {self.shipper.number} SIGTERM: exit {code}")

    def wait_until_holding(self, shipper: Shipper, timeout: float = 120) -> None:
        """Until the database's lock names ``shipper``'s process (or it ended). A fleet may have the database
        parked (its lock let go) or leave it closed (unchanged since a run left it caught up): running, with its
        SIGTERM handler in place, is enough."""
        pid = shipper.process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and shipper.process.poll() is None:
            if lock_names(self.database, pid) or (self.plan.fleet and handles_sigterm(pid)):
                return
            time.sleep(0.05)

    def _apply(self, event: Event) -> None:
        kind = event.kind
        if kind in {"kill", "term", "gap"}:
            how = signal.SIGKILL if kind == "kill" else signal.SIGTERM
            code = self.shipper.end(how)
            self.note(f"shipper {self.shipper.number} {how.name}: exit {code}")
            time.sleep(event.gap)
            self.start_shipper()
        elif kind == "handover":
            old = self.shipper
            self.wait_until_holding(old)  # a successor that came first would leave it nothing to hand over
            # A run ending with a replica down tries it for a while (walship's retry policy) before it exits.
            old.successor = self.start_shipper(handover_wait=180 if self.second else 60)
            time.sleep(0.3 + event.gap / 4)
            self.note(f"shipper {old.number} SIGTERM for a hand-over: exit {old.end(signal.SIGTERM)}")
        elif kind == "checkpoint":
            self._app(f"PRAGMA wal_checkpoint({event.detail})")
        elif kind == "quiet":
            self.stop_writers()
            time.sleep(event.gap)
            self.start_writers()
        elif kind == "vacuum":
            self._vacuum()
        elif kind == "outage":
            assert self._proxy is not None
            self._proxy.stop()
            time.sleep(event.gap + 0.5)
            self._proxy.start()
        elif kind == "stall":
            assert self._proxy is not None
            self._proxy.stall()
            time.sleep(event.gap + 0.5)
            self._proxy.resume()
        else:
            self._apply_one_of_its_own(event)

    def _apply_one_of_its_own(self, event: Event) -> None:
        """The kinds with a method of their own."""
        apply = {
            "damage": self._damage_a_spooled_entry,
            "spool-full": self._fill_the_spool,
            "replace": self._maintenance,
            "page-size": self._maintenance,
            "park": self._park,
            "reader": self._reader_across_an_end,
        }.get(event.kind)
        if apply is None:
            raise AssertionError(f"unknown event {event.kind}")
        apply(event)

    def _park(self, event: Event) -> None:
        """The writers go idle (connections open) until the fleet parks the database (a single shipper: a second);
        then, while it is parked, the application checkpoints, closes its last connection or vacuums, or the
        shipper is followed by the next one."""
        self.pause.touch()
        try:
            if self.plan.fleet:
                self._wait_until_parked()
            else:
                time.sleep(1.0)
            if event.detail in CHECKPOINT_MODES:
                self._app(f"PRAGMA wal_checkpoint({event.detail})")
            elif event.detail == "close":
                self.stop_writers()
            elif event.detail == "vacuum":
                self._vacuum()
            elif event.detail == "restart":
                # The next one finds the database as the last run left it, caught up: it must notice the writes.
                self.note(f"shipper {self.shipper.number} SIGTERM: exit {self.shipper.end(signal.SIGTERM)}")
                self.wait_until_holding(self.start_shipper())
            time.sleep(event.gap)
        finally:
            self.pause.unlink(missing_ok=True)
        if not self.writers:
            self.start_writers()

    def _reader_across_an_end(self, event: Event) -> None:
        """An application's long read begins in a quiet moment and spans the shipper's end: the writers' next
        commits go on in the WAL it holds (the next writer cannot restart it). In the next quiet moment the read
        ends, the application checkpoints and commits once (the WAL restarts, once), and the next shipper starts."""
        self.pause.touch()
        time.sleep(0.3)  # commits under way when the pause came are done: the reader's snapshot is the WAL's end
        reader = subprocess.Popen(
            [sys.executable, "-c", _READER, str(self.database), _NO_ROW_CHANGED],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert reader.stdout is not None
            reader.stdout.readline()
            self.note(f"shipper {self.shipper.number} SIGTERM under a reader: exit {self.shipper.end(signal.SIGTERM)}")
            self.pause.unlink()
            time.sleep(0.3 + event.gap / 2)
            self.pause.touch()
            time.sleep(0.3)
            reader.communicate()
            self._app("PRAGMA wal_checkpoint(PASSIVE)", _NO_ROW_CHANGED)
            time.sleep(event.gap / 2)
            self.wait_until_holding(self.start_shipper())
        finally:
            self.pause.unlink(missing_ok=True)

    def _wait_until_parked(self) -> None:
        """Until the fleet, having held the database, holds none of its files (or it ended, or the time is up)."""
        shipper, started = self.shipper, time.monotonic()
        pid = shipper.process.pid
        while shipper.process.poll() is None and time.monotonic() - started < PARK_TIMEOUT:
            if lock_names(self.database, pid) and not holds_files_of(self.database, pid):
                self.note(f"parked by shipper {shipper.number} after {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.05)
        if shipper.process.poll() is None:
            self.not_parked.append(f"shipper {shipper.number} held the idle database for {PARK_TIMEOUT:.0f} s")
            self.note(f"not parked by shipper {shipper.number} after {PARK_TIMEOUT:.0f} s")

    def _fill_the_spool(self, event: Event) -> None:
        """Another program takes all but a sliver of the spool's filesystem for a while."""
        if self.spool is None:
            return
        ballast = self.spool.parent / "ballast"
        free = os.statvfs(self.spool.parent).f_bavail * os.statvfs(self.spool.parent).f_frsize
        with contextlib.suppress(OSError), ballast.open("wb") as out:
            os.posix_fallocate(out.fileno(), 0, max(0, free - (64 << 10)))
        self.note(f"spool filesystem filled ({free >> 10} KiB were free)")
        time.sleep(event.gap + 0.5)
        ballast.unlink(missing_ok=True)

    def _damage_a_spooled_entry(self, event: Event) -> None:
        """Storage down, a byte of a spooled WAL segment flipped, storage back: that entry must never go up."""
        assert self._proxy is not None
        self._proxy.stop()
        pending = (self.spool or self.database.with_name(f"{self.database.name}-walship")) / "pending"
        deadline = time.monotonic() + event.gap + 3
        entry = None
        while entry is None and time.monotonic() < deadline:
            entry = next(iter(sorted(pending.glob("*/*.wal.zst"))), None)
            time.sleep(0.05)
        if entry is not None:
            with contextlib.suppress(FileNotFoundError), entry.open("r+b") as damaged:
                size = damaged.seek(0, os.SEEK_END)
                damaged.seek(size // 2)
                byte = damaged.read(1)
                damaged.seek(size // 2)
                damaged.write(bytes([byte[0] ^ 0x40]))
            self.damaged.append(entry.name)
            self.note(f"damaged {entry.name} in the spool")
        self._proxy.start()

    def _maintenance(self, event: Event) -> None:
        """Nothing holds the database: the file replaced by a copy, or its page size changed."""
        code = self.shipper.end(signal.SIGTERM)
        self.note(f"shipper {self.shipper.number} SIGTERM for maintenance: exit {code}")
        self.stop_writers()
        if event.kind == "replace":
            copy = self.database.with_name("copy.db")
            _copy(self.database, copy)
            os.replace(copy, self.database)
        else:
            size = event.detail
            self._app("PRAGMA journal_mode=DELETE", f"PRAGMA page_size={size}", "VACUUM", "PRAGMA journal_mode=WAL")
        time.sleep(event.gap)
        self.start_writers()
        self.start_shipper()

    def _vacuum(self) -> None:
        self._app("DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE id < 1099511627776 LIMIT 300)")
        self._app("VACUUM")

    def _app(self, *statements: str) -> None:
        """Statements run by an application process of its own; a busy database is its problem, noted."""
        command = [sys.executable, "-c", _APP, str(self.database), *statements]
        done = subprocess.run(command, check=False, capture_output=True)
        if done.returncode:
            self.note(f"application: {done.stderr.decode().strip().splitlines()[-1]}")

    def stop_everything(self) -> None:
        """After a failure in the harness itself: nothing keeps running."""
        for process in [*self.writers.values(), *(s.process for s in self.shippers)]:
            if process.poll() is None:
                process.kill()
                process.wait()


def _retries_cannot_succeed(plan: Plan) -> bool:
    """Whether no retry of walship's policy can succeed in the plan: the first replica is a local directory and the
    second one only hangs (a request waits, it is not retried) until it goes down for good, past every shipper's
    end. The shippers then try it at short delays (walship_cli/_direct.py) instead of waiting out the policy's
    30 s at the end: they fail as they would have, sooner."""
    return (
        plan.backend == "local"
        and plan.second_down_at > 0
        and all(outage.how == "stall" for outage in plan.second_outages)
    )


def _copy(source: Path, target: Path) -> None:
    """A consistent copy through SQLite (the source may be in WAL mode with a WAL)."""
    code = "import sqlite3, sys; s = sqlite3.connect(sys.argv[1]); t = sqlite3.connect(sys.argv[2]); s.backup(t)"
    subprocess.run([sys.executable, "-c", code, str(source), str(target)], check=True)
