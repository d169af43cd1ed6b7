"""`make demo`: back up a live database to a local-directory replica, restore it, prove it equal.

Everything runs on this machine: a sample database, two writer processes
committing throughout, and the real ``walship`` CLI (Prefect runs the flows in
its ephemeral mode). It takes a standalone snapshot, ships the WAL
continuously while the writers commit, catches up once they stop, restores,
and checks the restored database row for row against the source.
"""

import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.workload import committed_counts, content_digest, create_database, expected_state, writer_command

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "demo"
WALSHIP = str(Path(sys.executable).parent / "walship")
SEED = 7


def run(*argv: str) -> float:
    print(f"\n$ walship {' '.join(argv)}", flush=True)
    started = time.monotonic()
    subprocess.run([WALSHIP, *argv], check=True)
    return time.monotonic() - started


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    base, database = WORK / "base.db", WORK / "app.db"
    snapshot_only, restored = WORK / "snapshot-restored.db", WORK / "restored.db"
    replica = f"file://{WORK / 'replica'}"
    print(f"building a sample database ({database}) and starting two writers", flush=True)
    create_database(base, 32 << 20, seed=SEED)
    shutil.copyfile(base, database)
    writers = [
        subprocess.Popen(
            writer_command(database, writer=w, seed=SEED, seconds=600, rate=150), cwd=ROOT, stdout=subprocess.DEVNULL
        )
        for w in (1, 2)
    ]
    try:
        time.sleep(1.0)
        timings = {"snapshot": run("snapshot", str(database), "--replica", f"{replica}-snapshots")}
        print(f"\n$ walship ship {database} --replica {replica} --duration 15   (writers stop after 12 s)", flush=True)
        started = time.monotonic()
        shipper = subprocess.Popen([WALSHIP, "ship", str(database), "--replica", replica, "--duration", "15"])
        time.sleep(12)
    finally:
        for writer in writers:
            writer.terminate()
            writer.wait()
    shipper.wait()
    timings["ship (15 s window)"] = time.monotonic() - started
    timings["ship --once (nothing new)"] = run("ship", str(database), "--replica", replica, "--once")
    timings["restore"] = run("restore", "--replica", replica, "--output", str(restored))
    run("restore", "--replica", f"{replica}-snapshots", "--output", str(snapshot_only))
    run("status", "--replica", replica)

    shipped_equal = content_digest(restored) == content_digest(database)
    counts = committed_counts(snapshot_only)
    expected_state(base, WORK / "expected.db", SEED, counts)
    snapshot_equal = content_digest(snapshot_only) == content_digest(WORK / "expected.db")
    print("\nsummary")
    print(f"  transactions committed by the writers:   {sum(committed_counts(database).values())}")
    print(f"  in the standalone snapshot:              {sum(counts.values())} (a consistent point)")
    for name, seconds in timings.items():
        print(f"  {name + ':':<40} {seconds:.1f} s (CLI, incl. Prefect start)")
    print(f"  snapshot restore equals the source at its point: {'yes' if snapshot_equal else 'NO'}")
    print(f"  shipped restore equals the source, every commit: {'yes' if shipped_equal else 'NO'}")
    if not (shipped_equal and snapshot_equal):
        sys.exit(1)


if __name__ == "__main__":
    main()
