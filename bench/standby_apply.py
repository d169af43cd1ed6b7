"""Applying a segment's pages to a live standby against writing them into a file the restore's way, in one run.

    python -m bench.standby_apply [--mib 64] [--transactions 500] [--repeat 5] [--json]

A database of ``--mib`` realistic rows (bench.workload) takes ``--transactions``
commits of the workload; the last image of every page its WAL then holds is
what one segment of them leaves. Each round applies those pages to a fresh copy
of the database before them, two ways, in alternating order:

    standby   walship.standby.Standby.apply: one commit of the copy's own WAL (frames, fsync, WAL index),
              safe for readers in other processes
    direct    the restore's way: each page written in place, the file truncated and fsynced; readers of the
              file would see a torn state while it runs

Then a reader process (Python's sqlite3, another SQLite) loops over a
consistency query on a standby while ``--rounds`` applies of 25 transactions
each go on, and reports its reads, errors and slowest read (consistency itself is
tests/test_standby.py's). The machine
is shared: read the ratio, not the seconds.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import apply_transaction, content_digest, create_database
from walship.sqlite import iter_frames, parse_wal_header
from walship.standby import Standby

_READER = """
import json, os, sqlite3, sys, time
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, isolation_level=None, timeout=10)
reads = 0
errors, slowest = [], 0.0
print("reading", flush=True)
while not os.path.exists(sys.argv[2]):
    began = time.perf_counter()
    try:
        c.execute("BEGIN")
        total = c.execute("SELECT sum(balance) FROM accounts").fetchone()[0]
        orders, ledger = c.execute("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM ledger)").fetchone()
        c.execute("COMMIT")
    except sqlite3.Error as exc:
        errors.append(str(exc))
        continue
    slowest = max(slowest, time.perf_counter() - began)
    reads += 1
print(json.dumps({"reads": reads, "errors": errors, "slowest_ms": round(slowest * 1000, 2)}))
"""


def _commit(database: Path, first: int, count: int) -> tuple[list[tuple[int, bytes]], int]:
    """Commit transactions ``first`` on; the last image of every page the WAL then holds, and the page count at
    its last commit (read before the connection closes: the last close would checkpoint and delete the WAL)."""
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA wal_autocheckpoint=0")
    for n in range(first, first + count):
        connection.execute("BEGIN IMMEDIATE")
        apply_transaction(connection, 5, 1, n)
        connection.execute("COMMIT")
    images: dict[int, bytes] = {}
    pages = 0
    with Path(f"{database}-wal").open("rb") as log:
        header = parse_wal_header(log.read(32))
        for frame, page in iter_frames(log, header, with_data=True):
            images[frame.page_number] = page
            if frame.is_commit:
                pages = frame.db_size_after_commit
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return sorted((n, p) for n, p in images.items() if n <= pages), pages


def _standby(copy: Path, pages: list[tuple[int, bytes]], count: int) -> float:
    with Standby(copy) as standby:
        began = time.perf_counter()
        standby.apply(pages, count)
        return time.perf_counter() - began


def _direct(copy: Path, pages: list[tuple[int, bytes]], count: int) -> float:
    page_size = len(pages[0][1])
    began = time.perf_counter()
    with copy.open("r+b") as database:
        for number, image in pages:
            database.seek((number - 1) * page_size)
            database.write(image)
        database.truncate(count * page_size)
        database.flush()
        os.fsync(database.fileno())
    return time.perf_counter() - began


def _readers(work: Path, base: Path, rounds: int) -> dict[str, Any]:
    """A reader loops on a standby while ``rounds`` applies of 25 transactions each go on."""
    source, standby, stop = work / "live-source.db", work / "live-standby.db", work / "stop"
    shutil.copyfile(base, source)
    shutil.copyfile(base, standby)
    batches = []
    for number in range(rounds):
        batches.append(_commit(source, 10_000 + number * 25, 25))
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(standby), str(stop)], stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None
    assert reader.stdout.readline().strip() == "reading"
    began = time.perf_counter()
    with Standby(standby) as applying:
        for pages, count in batches:
            applying.apply(pages, count)
            time.sleep(0.02)
    elapsed = time.perf_counter() - began
    stop.touch()
    out, _ = reader.communicate(timeout=60)
    seen: dict[str, Any] = json.loads(out)
    seen.update(
        applies=rounds, seconds=round(elapsed, 2), equals_source=content_digest(standby) == content_digest(source)
    )
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="standby-bench-") as name:
        work = Path(name)
        base, source = work / "base.db", work / "source.db"
        create_database(base, args.mib << 20, seed=5)
        shutil.copyfile(base, source)
        pages, count = _commit(source, 1, args.transactions)
        timings: dict[str, list[float]] = {"standby": [], "direct": []}
        for round_ in range(args.repeat):
            order = ("standby", "direct") if round_ % 2 == 0 else ("direct", "standby")
            for way in order:
                copy = work / f"{way}.db"
                shutil.copyfile(base, copy)
                timings[way].append((_standby if way == "standby" else _direct)(copy, pages, count))
        standby_s, direct_s = (statistics.median(timings[w]) for w in ("standby", "direct"))
        report = {
            "database_mib": args.mib,
            "transactions": args.transactions,
            "pages": len(pages),
            "page_count": count,
            "standby_ms": round(standby_s * 1000, 1),
            "direct_ms": round(direct_s * 1000, 1),
            "standby_over_direct": round(standby_s / direct_s, 2),
            "reader": _readers(work, base, args.rounds),
        }
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
