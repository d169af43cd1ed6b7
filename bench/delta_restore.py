"""`restore --delta` of a copy whose database changed in 1 % of its pages, against a full restore of the same point.

The benchmark database is shipped once and restored (the copy); then one
run of ``orders`` rows is updated in place (clustered pages: about
``--changed`` percent of the file), the spool is dropped so that the next
`walship ship --once` starts a new generation with a framed snapshot, and
the copy is brought to it with `walship restore --delta`, which fetches only
the snapshot frames whose SHA-256 the copy does not match. Reported: the
pages that changed, the bytes the delta fetched as a share of the snapshot
object, and both restores' wall time (same run, same replica).

    python -m bench.delta_restore [--mib 1024] [--changed 1.0]
"""

import argparse
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import BUILD, database

WALSHIP = str(Path(sys.executable).parent / "walship")
_PAGE_READ = 1 << 20


def _walship(*argv: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run([WALSHIP, "--no-prefect", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"walship {' '.join(argv)} failed: {done.stderr}")
    return time.monotonic() - started, done.stdout


def _update_clustered(db: Path, percent: float) -> None:
    """Rewrite a contiguous run of ``orders`` rows in place (same sizes): their pages, and little else, change."""
    app = sqlite3.connect(db, isolation_level=None)
    try:
        low, high = app.execute("SELECT min(id), max(id) FROM orders").fetchone()
        start = low + (high - low) // 3
        end = start + int((high - low) * percent / 100)
        app.execute("UPDATE orders SET amount = amount + 1 WHERE id BETWEEN ? AND ?", (start, end))
        app.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        app.close()


def _pages_differing(a: Path, b: Path, page_size: int = 4096) -> tuple[int, int]:
    differing = total = 0
    with a.open("rb") as left, b.open("rb") as right:
        while True:
            x, y = left.read(_PAGE_READ), right.read(_PAGE_READ)
            if not x and not y:
                break
            for offset in range(0, max(len(x), len(y)), page_size):
                total += 1
                differing += x[offset : offset + page_size] != y[offset : offset + page_size]
    return differing, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--changed", type=float, default=1.0, help="percent of the orders rows rewritten")
    args = parser.parse_args()
    source, _ = database(args.mib)
    with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
        work = Path(tmp)
        db, copy, fresh = work / "app.db", work / "copy.db", work / "fresh.db"
        replica = f"file://{work / 'replica'}"
        shutil.copyfile(source, db)
        _walship("ship", str(db), "--replica", replica, "--once")
        _walship("restore", "--replica", replica, "--output", str(copy))
        before = work / "before.db"
        shutil.copyfile(db, before)
        _update_clustered(db, args.changed)
        changed, pages = _pages_differing(before, db)
        before.unlink()
        shutil.rmtree(work / "app.db-walship")  # the next ship starts a new generation
        _walship("ship", str(db), "--replica", replica, "--once")
        newest = max((work / "replica" / "generations").iterdir(), key=lambda p: p.stat().st_mtime)
        snapshot_bytes = sum(p.stat().st_size for p in (newest / "snapshots").iterdir())
        delta_seconds, out = _walship("restore", "--replica", replica, "--output", str(copy), "--delta")
        fetched = re.search(r"downloaded (\d+) bytes", out)
        assert fetched is not None, out
        full_seconds, _ = _walship("restore", "--replica", replica, "--output", str(fresh))
    share = 100 * int(fetched[1]) / snapshot_bytes
    print(f"database {args.mib} MiB; {changed} of {pages} pages changed ({100 * changed / pages:.2f} %)")
    print(f"snapshot object {snapshot_bytes} bytes; delta fetched {fetched[1]} bytes ({share:.2f} %)")
    print(f"restore --delta {delta_seconds:.2f} s; full restore {full_seconds:.2f} s")


if __name__ == "__main__":
    main()
