"""`make demo`: back up a live database to a local-directory replica, restore it, prove it equal.

Everything runs on this machine: a sample database, two writer processes and
the real ``walship`` CLI (the core directly unless a Prefect API is
configured). The shipper starts first and the writers right after it, so
the backup must be capturing from its first second; the demo then restores
the newest state and a moment from the middle of the writes, and checks each
row for row against what the writers had committed by then. Between the two,
the application writes while no shipper runs (its last connection checkpoints
and removes the WAL), and the next run must resync: ship only the pages that
changed, in the same generation. Anything that shipped nothing under writes,
a gap that cost a new generation, or any difference, fails the demo.
"""

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.workload import committed_counts, content_digest, create_database, expected_state, writer_command

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "demo"
WALSHIP = str(Path(sys.executable).parent / "walship")
SEED = 7
WRITE_SECONDS = 12.0


def run(*argv: str, show: bool = True) -> tuple[float, str]:
    if show:
        print(f"\n$ walship {' '.join(argv)}", flush=True)
    started = time.monotonic()
    done = subprocess.run([WALSHIP, *argv], check=True, capture_output=True, text=True)
    if show:
        print(done.stdout, end="", flush=True)
    return time.monotonic() - started, done.stdout


def fail(message: str) -> None:
    print(f"\ndemo FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def commits_by(logs: list[Path], moment: float) -> dict[int, int]:
    """Per writer, how many transactions had committed at unix time ``moment`` (from their logs)."""
    counts = {}
    for writer, log in enumerate(logs, start=1):
        times = [float(line.split("\t")[1]) for line in log.read_text().splitlines() if line]
        counts[writer] = sum(1 for t in times if t <= moment)
    return counts


def ship_under_writers(database: Path, replica: str, timings: dict[str, float]) -> tuple[float, float, list[Path]]:
    """Start the shipper, then two writers; return when it ends (start, end of writes, the writers' logs)."""
    window = WRITE_SECONDS + 6
    print(f"\n$ walship ship {database} --replica {replica} --duration {window:.0f}", flush=True)
    print(f"  (two writers start with it and commit for {WRITE_SECONDS:.0f} s)", flush=True)
    ship_started = time.time()
    shipper = subprocess.Popen(
        [WALSHIP, "ship", str(database), "--replica", replica, "--duration", str(window)],
        stdout=subprocess.PIPE,
        text=True,
    )
    logs = [WORK / f"writer-{w}.log" for w in (1, 2)]
    writers = [
        subprocess.Popen(
            writer_command(database, writer=w, seed=SEED, seconds=WRITE_SECONDS, rate=150, log=logs[w - 1]),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for w in (1, 2)
    ]
    for writer in writers:
        writer.wait()
    writes_ended = time.time()
    shipped_out, _ = shipper.communicate()
    print(shipped_out, end="", flush=True)
    timings["ship (window)"] = time.time() - ship_started
    if shipper.returncode != 0:
        fail(f"walship ship exited {shipper.returncode}")
    shipped = re.search(r"shipped (\d+) segments", shipped_out)
    if shipped is None or int(shipped.group(1)) == 0:
        fail("walship ship shipped 0 segments while two writers committed: the backup did not keep up")

    return ship_started, writes_ended, logs


def ship_after_a_gap(database: Path, replica: str, timings: dict[str, float]) -> None:
    """The application writes while no shipper runs; the next run resyncs instead of a full snapshot."""
    print("\n  (the application commits for 3 s while no shipper runs, then closes: its WAL goes)", flush=True)
    subprocess.run(
        writer_command(database, writer=3, seed=SEED, seconds=3, rate=150),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        check=True,
    )
    timings["ship --once after the gap"], out = run("ship", str(database), "--replica", replica, "--once")
    if "started generation" in out or "resynced: " not in out:
        fail("the run after the gap did not resync in the same generation (see its output above)")


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    base, database = WORK / "base.db", WORK / "app.db"
    snapshot_only, restored, middle = WORK / "snapshot-restored.db", WORK / "restored.db", WORK / "middle.db"
    replica = f"file://{WORK / 'replica'}"
    print(f"building a sample database ({database})", flush=True)
    create_database(base, 32 << 20, seed=SEED)
    shutil.copyfile(base, database)
    timings: dict[str, float] = {}
    timings["snapshot (standalone)"], _ = run("snapshot", str(database), "--replica", f"{replica}-snapshots")

    ship_started, writes_ended, logs = ship_under_writers(database, replica, timings)
    ship_after_a_gap(database, replica, timings)

    timings["restore (newest)"], _ = run("restore", "--replica", replica, "--output", str(restored))
    moment = ship_started + (writes_ended - ship_started) / 2
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    timings["restore (point in time)"], _ = run(
        "restore", "--replica", replica, "--output", str(middle), "--timestamp", stamp
    )
    run("restore", "--replica", f"{replica}-snapshots", "--output", str(snapshot_only))
    run("status", "--replica", replica)
    _, status = run("status", "--replica", replica, "--json", show=False)
    first_snapshot = datetime.fromisoformat(json.loads(status)["oldest"]["created_at"])

    shipped_equal = content_digest(restored) == content_digest(database)
    at_middle = committed_counts(middle)
    expected_state(base, WORK / "expected-middle.db", SEED, at_middle)
    middle_consistent = content_digest(middle) == content_digest(WORK / "expected-middle.db")
    by_then = commits_by(logs, moment)
    middle_in_time = all(at_middle.get(w, 0) <= n for w, n in by_then.items()) and sum(at_middle.values()) > 0
    counts = committed_counts(snapshot_only)
    expected_state(base, WORK / "expected.db", SEED, counts)
    snapshot_equal = content_digest(snapshot_only) == content_digest(WORK / "expected.db")

    print("\nsummary")
    print(f"  transactions committed by the writers:     {sum(committed_counts(database).values())}")
    print(f"  restorable from (after ship started):      {first_snapshot.timestamp() - ship_started:.2f} s")
    print(
        f"  point in time {stamp}: {sum(at_middle.values())} transactions restored "
        f"of {sum(by_then.values())} committed by then"
    )
    for name, seconds in timings.items():
        print(f"  {name + ':':<42} {seconds:.1f} s")
    print(f"  standalone snapshot equals the source at its point:  {'yes' if snapshot_equal else 'NO'}")
    print(f"  shipped restore equals the source, every commit:     {'yes' if shipped_equal else 'NO'}")
    middle_ok = middle_consistent and middle_in_time
    print(f"  point-in-time restore is a consistent state by then: {'yes' if middle_ok else 'NO'}")
    if not (shipped_equal and snapshot_equal and middle_ok):
        fail("a restore differs from what the writers committed (see the summary above)")


if __name__ == "__main__":
    main()
