"""What a torture run must hold: every acknowledged commit restorable, every restore a true state, loud failures.

- Each shipper that exited 0 after SIGTERM acknowledged every commit logged
  before the signal: a restore at the moment it exited holds them all.
- Every point-in-time restore is a state the writers really passed through
  (each writer's first n transactions, nothing torn), holds nothing logged
  after the moment, and nothing less than the acknowledgements before it.
- The newest restore equals the source once everything stopped; verify passes.
- A shipper ends only when told to, with the status its ending calls for, and
  nothing prints an unexpected error.
- A fleet parks the database when its writers go idle. A fleet that had it
  parked when its successor took it over without waiting acknowledged
  nothing at its own exit: from then on the successor shipped it.
"""

import bisect
import hashlib
import signal
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.workload import committed_counts, content_digest, expected_state
from tests.helpers import ROOT, WALSHIP
from tests.torture.fleet import WAITED_FOR_HANDOVER
from tests.torture.run import Shipper, TortureRun
from tests.torture.writer import TRANSACTIONS_SEED

__all__ = ["check"]

# A commit is logged just after COMMIT returns: on a loaded machine that may be this late.
_LOG_SLACK = 1.0
_WRITER_ROWS = 1 << 40  # rows at and above this id belong to writers (bench.workload)
_SPOOL_FULL = "point --spool at a bigger one"  # walship's line for a full spool (walship.spool)


class _Log:
    """One writer's commit log: the n reached at each logged moment."""

    def __init__(self, path: Path) -> None:
        rows = [line.split("\t") for line in path.read_text().splitlines() if line]
        self.times = [float(t) for _, t in rows]
        self.counts = [int(n) for n, _ in rows]

    def before(self, moment: float) -> int:
        """How many transactions the writer had logged as committed by ``moment``."""
        at = bisect.bisect_right(self.times, moment)
        return self.counts[at - 1] if at else 0


def check(run: TortureRun) -> list[str]:
    """Every failure found, as lines (empty: the run held)."""
    return _Checks(run).all()


class _Checks:
    def __init__(self, run: TortureRun) -> None:
        self.run = run
        self.logs = {int(p.stem[1:]): _Log(p) for p in sorted(run.logs.glob("w*.log"))}
        self.failures: list[str] = []
        self.restores = run.workdir / "restores"
        self.restores.mkdir(exist_ok=True)

    def all(self) -> list[str]:
        self._shippers()
        self.failures.extend(self.run.not_parked)
        acknowledged = [(s.ended_at, s.signalled_at) for s in self.run.shippers if self._acknowledged(s)]
        for ended, signalled in acknowledged:
            self._point_in_time(ended, f"shipper's exit at {ended - self.run.started:.2f}s", signalled)
        span = (self.run.shippers[-1].ended_at or 0) - self.run.started
        for fraction in self.run.plan.timestamps:
            moment = self.run.started + fraction * span
            floor = max((signalled for ended, signalled in acknowledged if ended <= moment), default=None)
            self._point_in_time(moment, f"{fraction * span:.2f}s", floor)
        self._newest()
        self._verify()
        return self.failures

    def _acknowledged(self, shipper: Shipper) -> bool:
        """Whether ``shipper`` acknowledged every commit logged before its signal, by its clean exit."""
        if not (shipper.signal == "SIGTERM" and shipper.process.returncode == 0):
            return False
        if not (shipper.ended_at and shipper.signalled_at):
            return False
        successor = shipper.successor
        # A fleet lets a parked database go: a successor that took it without waiting shipped what followed.
        return not (self.run.plan.fleet and successor is not None and WAITED_FOR_HANDOVER not in successor.output)

    def _shippers(self) -> None:
        for shipper in self.run.shippers:
            code = shipper.process.returncode
            expected = {"SIGKILL": {-9}, "SIGTERM": {0}}.get(shipper.signal or "", {None})
            if shipper.signal == "SIGTERM" and not shipper.output.strip():
                expected = {0, -signal.SIGTERM}  # ended by the signal's default before the CLI began to run
            if any(name in shipper.output for name in self.run.damaged):
                expected = {1, *expected}  # it found the damaged entry and stopped, saying so
            if _SPOOL_FULL in shipper.output:
                expected = {1, *expected}  # the spool's disk was full when it needed room, and it said so
            if code not in expected:
                tail = " | ".join(shipper.output.strip().splitlines()[-3:])
                self.failures.append(
                    f"shipper {shipper.number} ({shipper.signal or 'no signal'}) exited {code}: {tail}"
                )
            for bad in ("unexpected error", "Traceback"):
                if bad in shipper.output:
                    self.failures.append(f"shipper {shipper.number} printed {bad!r} (see {shipper.log})")

    def _restore(self, name: str, *options: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
        output = self.restores / f"{len(list(self.restores.iterdir()))}-{name}.db"
        done = subprocess.run(
            [WALSHIP, "restore", "--replica", self.run.replica, "--output", str(output), *options],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.run.env,
            timeout=300,
        )
        return output, done

    def _point_in_time(self, moment: float, what: str, floor_moment: float | None) -> None:
        stamp = datetime.fromtimestamp(moment, UTC).isoformat()
        output, done = self._restore(f"at-{moment:.3f}", "--timestamp", stamp)
        if done.returncode != 0:
            if floor_moment is None and done.returncode == 1 and "no snapshot taken at or before" in done.stderr:
                return  # nothing was acknowledged by then: refusing is right
            self.failures.append(f"restore at {what} ({stamp}) exited {done.returncode}: {done.stderr.strip()}")
            return
        try:
            counts = committed_counts(output)
        except AssertionError as torn:
            self.failures.append(f"restore at {what}: {torn}")
            return
        for writer, log in self.logs.items():
            got = counts.get(writer, 0)
            if got > log.before(moment + _LOG_SLACK):
                self.failures.append(f"restore at {what}: writer {writer} at {got}, logged later than the moment")
            if floor_moment is not None and got < (need := log.before(floor_moment)):
                self.failures.append(
                    f"restore at {what}: writer {writer} at {got}, but {need} were acknowledged by a shipper's "
                    f"clean exit ({need - got} committed transactions missing)"
                )
        expected = self.restores / f"expected-{moment:.3f}.db"
        expected_state(self.run.base, expected, TRANSACTIONS_SEED, counts)
        if writer_digest(output) != writer_digest(expected):
            self.failures.append(f"restore at {what}: not the state the writers' first {counts} transactions make")

    def _newest(self) -> None:
        output, done = self._restore("newest")
        if done.returncode != 0:
            self.failures.append(f"newest restore exited {done.returncode}: {done.stderr.strip()}")
            return
        source, restored = committed_counts(self.run.database), committed_counts(output)
        if restored != source:
            self.failures.append(f"newest restore holds {restored}, the source {source}")
        elif content_digest(output) != content_digest(self.run.database):
            self.failures.append("newest restore: same transactions as the source, other content")

    def _verify(self) -> None:
        done = subprocess.run(
            [WALSHIP, "verify", "--replica", self.run.replica],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.run.env,
            timeout=600,
        )
        if done.returncode != 0 or "FAILED" in done.stdout:
            lines = [line for line in done.stdout.splitlines() if "FAILED" in line] + done.stderr.splitlines()
            self.failures.append(f"verify exited {done.returncode}: {' | '.join(lines[:4])}")


def writer_digest(path: Path) -> str:
    """SHA-256 of what only the writers change: their ledger and orders, and the accounts' balances."""
    digest = hashlib.sha256()
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        queries = (
            "SELECT writer, seq FROM ledger ORDER BY writer, seq",
            f"SELECT * FROM orders WHERE id >= {_WRITER_ROWS} ORDER BY id",  # noqa: S608 - a constant
            "SELECT id, balance FROM accounts ORDER BY id",
        )
        for query in queries:
            for row in connection.execute(query):
                digest.update(repr(row).encode())
    finally:
        connection.close()
    return digest.hexdigest()
