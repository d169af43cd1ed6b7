"""`make demo`: snapshot a live database to a local-directory replica, restore it, prove it equal.

Everything runs on this machine: a sample database, two writer processes
committing while the snapshot is taken, the real ``walship`` CLI (so Prefect
runs the flows in its ephemeral mode), and a row-for-row check of the restore
against the state the source had at the snapshot's point.
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


def run(*argv: str) -> None:
    print(f"$ walship {' '.join(argv)}", flush=True)
    subprocess.run([WALSHIP, *argv], check=True)


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    base, database, restored = WORK / "base.db", WORK / "app.db", WORK / "restored.db"
    replica = f"file://{WORK / 'replica'}"
    print(f"building a sample database ({database})", flush=True)
    create_database(base, 32 << 20, seed=SEED)
    shutil.copyfile(base, database)

    writers = [
        subprocess.Popen(
            writer_command(database, writer=w, seed=SEED, seconds=60, rate=200), cwd=ROOT, stdout=subprocess.DEVNULL
        )
        for w in (1, 2)
    ]
    try:
        time.sleep(1.0)
        started = time.monotonic()
        run("snapshot", str(database), "--replica", replica)
        snapshot_seconds = time.monotonic() - started
    finally:
        for writer in writers:
            writer.terminate()
            writer.wait()
    source_counts = committed_counts(database)

    started = time.monotonic()
    run("restore", "--replica", replica, "--output", str(restored))
    restore_seconds = time.monotonic() - started
    run("status", "--replica", replica)

    counts = committed_counts(restored)
    expected = WORK / "expected.db"
    expected_state(base, expected, SEED, counts)
    equal = content_digest(restored) == content_digest(expected)
    print()
    print("summary")
    print(f"  writers committed while running:     {sum(source_counts.values())} transactions")
    print(f"  contained in the snapshot:           {sum(counts.values())} transactions {dict(sorted(counts.items()))}")
    print(f"  snapshot (CLI, incl. Prefect start): {snapshot_seconds:.1f} s")
    print(f"  restore  (CLI, incl. Prefect start): {restore_seconds:.1f} s")
    print(f"  restored database equals the source at the snapshot's point: {'yes' if equal else 'NO'}")
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
