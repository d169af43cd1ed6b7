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
- With a second replica (tests/torture/second.py) all of it holds for each
  replica. A shipper may exit 1 naming a replica that was down at its end,
  or one behind; it acknowledged what the other replica holds. A replica
  falls behind only past the spool cap, and only there has a gap in its
  generations, before a snapshot it resumed at.
"""

import bisect
import hashlib
import json
import re
import signal
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.workload import committed_counts, content_digest, expected_state
from tests.helpers import ROOT, WALSHIP
from tests.torture.fleet import WAITED_FOR_HANDOVER
from tests.torture.run import Shipper, TortureRun
from tests.torture.second import behind_in
from tests.torture.writer import TRANSACTIONS_SEED

__all__ = ["check"]

# A commit is logged just after COMMIT returns: on a loaded machine that may be this late.
_LOG_SLACK = 1.0
_WRITER_ROWS = 1 << 40  # rows at and above this id belong to writers (bench.workload)
_SPOOL_FULL = "point --spool at a bigger one"  # walship's line for a full spool (walship.spool)
# walship's warning of a spool past --spool-cap (walship.ship._shipper), and its reason for leaving a replica
# behind when the spool's disk filled before the cap (walship.ship._fanout).
_PAST_THE_CAP = ("holds more than", "the spool ran out of room")
# What status says of a gap, and a shipper of the snapshot a replica behind resumed at.
_GAP = re.compile(r"generations/(\S+)/wal/(\d+)\.wal\.zst \(or \.resync\.zst\) is missing: a gap")
_BRIDGED_GAP = re.compile(r"sequences (\d+)-\d+ of generation (\S+) are not here")
_BREAKS = re.compile(r"the chain of generation (\S+) breaks after sequence (\d+)")
_RESUMED = re.compile(r"resumed at (?:snapshot )?generations/(\S+)/snapshots/(\d+)\.sqlite")


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


class _Replica:
    """One replica the run shipped to: its URL, where walship's lines name it, and its label in failures."""

    def __init__(self, url: str, location: str, label: str) -> None:
        self.url, self.location, self.label = url, location, label


class _Checks:
    def __init__(self, run: TortureRun) -> None:
        self.run = run
        self.logs = {int(p.stem[1:]): _Log(p) for p in sorted(run.logs.glob("w*.log"))}
        self.failures: list[str] = []
        self.restores = run.workdir / "restores"
        self.restores.mkdir(exist_ok=True)
        self.replicas = [_Replica(run.replica, "", "")]
        self.outputs = [s.output for s in run.shippers]
        if run.second is not None:
            self.replicas = [
                _Replica(run.replica, run.first_location, "first replica: "),
                _Replica(run.second.url, run.second.location, "second replica: "),
            ]
            self.outputs += [run.second.once.output] if run.second.once else []
        self.replica = self.replicas[0]
        self.behind = False  # the replica checked fell behind (two replicas)
        self.gaps: list[tuple[str, int]] = []  # its gaps: generation, first sequence missing

    def all(self) -> list[str]:
        self._shippers()
        self.failures.extend(self.run.not_parked)
        if self.run.second is not None:
            self.failures.extend(self.run.second.failures)
        for replica in self.replicas:
            self.replica, found = replica, len(self.failures)
            self._replica()
            self.failures[found:] = [f"{replica.label}{failure}" for failure in self.failures[found:]]
        return self.failures

    def _replica(self) -> None:
        location = self.replica.location
        self.behind = bool(location) and any(behind_in(output, location) for output in self.outputs)
        self.gaps = self._gaps() if self.run.second is not None else []
        acknowledged = [moments for s in self.run.shippers if (moments := self._acknowledged(s)) is not None]
        for ended, signalled in acknowledged:
            self._point_in_time(ended, f"shipper's exit at {ended - self.run.started:.2f}s", signalled)
            if self.run.locked and self.replica is self.replicas[0]:
                # As an attacker would leave it after that moment: its object versions then are all there is.
                at = datetime.fromtimestamp(ended, UTC).isoformat()
                what = f"the versions at shipper's exit at {ended - self.run.started:.2f}s"
                self._point_in_time(ended, what, signalled, "--versions-at", at)
        span = (self.run.shippers[-1].ended_at or 0) - self.run.started
        for fraction in self.run.plan.timestamps:
            moment = self.run.started + fraction * span
            floor = max((signalled for ended, signalled in acknowledged if ended <= moment), default=None)
            self._point_in_time(moment, f"{fraction * span:.2f}s", floor)
        self._newest()
        self._verify()
        if self.run.second is not None:
            self._behind_only_past_the_cap()

    def _acknowledged(self, shipper: Shipper) -> tuple[float, float] | None:
        """When ``shipper`` ended and was signalled, if it acknowledged every commit logged before its signal
        to the replica checked, by its clean exit (or by an exit that named only the other replica)."""
        if not (shipper.signal == "SIGTERM" and shipper.ended_at and shipper.signalled_at):
            return None
        if shipper.process.returncode != 0 and not (
            shipper.process.returncode == 1 and self._failed_for_another_replica(shipper)
        ):
            return None
        successor = shipper.successor
        # A fleet lets a parked database go: a successor that took it without waiting shipped what followed.
        if self.run.plan.fleet and successor is not None and WAITED_FOR_HANDOVER not in successor.output:
            return None
        return shipper.ended_at, shipper.signalled_at

    def _failed_for_another_replica(self, shipper: Shipper) -> bool:
        """Whether ``shipper`` failed naming the other replica and not the one checked (nothing else went wrong)."""
        named = [r for r in self.replicas if r.location and r.location in shipper.failure]
        other = any(name in shipper.output for name in self.run.damaged) or _SPOOL_FULL in shipper.output
        return bool(named) and self.replica not in named and not other

    def _may_fail_for_a_replica(self, shipper: Shipper) -> bool:
        """With two replicas, a run ends failing for each one it names that was down at its end or is behind."""
        second = self.run.second
        named = [r for r in self.replicas if r.location and r.location in shipper.failure]
        if second is None or not named:
            return False
        down = {second.location: second.down_while(shipper)}
        return all(down.get(r.location, False) or behind_in(shipper.failure, r.location) for r in named)

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
            if shipper.signal == "SIGTERM" and self._may_fail_for_a_replica(shipper):
                expected = {1, *expected}  # a replica down at its end, or behind: named, the other finished
            if code not in expected:
                tail = shipper.failure or " | ".join(shipper.output.strip().splitlines()[-3:])
                self.failures.append(
                    f"shipper {shipper.number} ({shipper.signal or 'no signal'}) exited {code}: {tail}"
                )
            for bad in ("unexpected error", "Traceback"):
                if bad in shipper.output:
                    self.failures.append(f"shipper {shipper.number} printed {bad!r} (see {shipper.log})")

    def _behind_only_past_the_cap(self) -> None:
        """A replica falls behind only once the spool outgrew its cap; only then has it gaps, each before a
        snapshot it resumed at."""
        location, behind = self.replica.location, self.behind
        if behind and not any(said in output for output in self.outputs for said in _PAST_THE_CAP):
            self.failures.append("fell behind, but no shipper said the spool outgrew its cap")
        bridges = {
            (generation, int(sequence))
            for output in self.outputs
            for line in output.splitlines()
            if location in line
            for generation, sequence in _RESUMED.findall(line)
        }
        for generation, first_missing in self.gaps:
            where = f"a gap in generation {generation} from sequence {first_missing}"
            if not behind:
                self.failures.append(f"{where}, though it never fell behind")
            elif not any(g == generation and q >= first_missing - 1 for g, q in bridges):
                self.failures.append(f"{where}, and no snapshot it resumed at after it ({sorted(bridges)})")

    def _before_a_gap(self, refusal: str) -> tuple[str, ...]:
        """Restore's options for the point before the gap a restore refused to cross, when the replica fell
        behind and the gap is one status names (``_behind_only_past_the_cap`` checks it)."""
        found = _BREAKS.search(refusal)
        if found is None or not self.behind or (found[1], int(found[2]) + 1) not in self.gaps:
            return ()
        return ("--generation", found[1], "--sequence", found[2])

    def _gaps(self) -> list[tuple[str, int]]:
        """The replica's gaps (generation, first sequence missing): those status calls problems, and those it
        says a snapshot taken for this replica alone ends."""
        done = self._walship("status", "--json")
        if done.returncode != 0:
            self.failures.append(f"status exited {done.returncode}: {done.stderr.strip()}")
            return []
        status = json.loads(done.stdout)
        lost = [(g, int(q)) for problem in status["problems"] for g, q in _GAP.findall(problem)]
        return lost + [(g, int(q)) for line in status.get("bridged", []) for q, g in _BRIDGED_GAP.findall(line)]

    def _walship(self, command: str, *options: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [WALSHIP, command, "--replica", self.replica.url, *options],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=self.run.env,
            timeout=timeout,
        )

    def _restore(self, name: str, *options: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
        output = self.restores / f"{len(list(self.restores.iterdir()))}-{name}.db"
        return output, self._walship("restore", "--output", str(output), *options)

    def _point_in_time(self, moment: float, what: str, floor_moment: float | None, *point: str) -> None:
        """The state at ``moment`` (or at ``point``, restore's options for one before it) is one the writers
        passed through by then, holding what was acknowledged by ``floor_moment``."""
        stamp = datetime.fromtimestamp(moment, UTC).isoformat()
        output, done = self._restore(f"at-{moment:.3f}", *(point or ("--timestamp", stamp)))
        if done.returncode != 0:
            if floor_moment is None and done.returncode == 1 and "no snapshot taken at or before" in done.stderr:
                return  # nothing was acknowledged by then: refusing is right
            if not point and (before := self._before_a_gap(done.stderr)):
                # A moment in the gap of a replica behind: refused, naming the point before the gap instead.
                self._point_in_time(moment, f"{what}, before the gap", floor_moment, *before)
                return
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
        done = self._walship("verify", timeout=600)
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
