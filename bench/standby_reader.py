"""The reader of bench.standby: an application reading the standby while ``walship follow`` updates it.

It loops until ``--stop`` exists, each round one read transaction of its own
(Python's sqlite3, the standby opened read-only) that checks what the source's
writers keep true and picks up the markers that became visible:

    sum and count of standby_balance    the writers move amounts between its rows, never change the total
    ledger, every 10th read             each writer's rows are 1..n, no gaps (a torn state would leave one)
    ship_lag_marker rows past the last  each new marker noted with time.time_ns() once its read returned

Prints "reading" once it has read the first state, then, at the end, JSON: reads,
errors (count and the first messages), inconsistent states (count and the first
ones), the slowest read, and for each marker when it became visible.

    python -m bench.standby_reader STANDBY --stop FILE --total 1000000 --rows 1000
"""

import argparse
import json
import sqlite3
import time
from pathlib import Path

FIRST = 10  # messages and states kept of each kind: the counts hold the rest


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.standby_reader")
    parser.add_argument("standby", type=Path)
    parser.add_argument("--stop", type=Path, required=True)
    parser.add_argument("--total", type=int, required=True, help="the sum of standby_balance the writers keep")
    parser.add_argument("--rows", type=int, required=True, help="the rows of standby_balance")
    parser.add_argument("--pause", type=float, default=0.005, help="seconds between reads (default 0.005)")
    args = parser.parse_args()
    connection = sqlite3.connect(f"file:{args.standby}?mode=ro", uri=True, isolation_level=None, timeout=10)
    seen: dict[str, int] = {}
    last_rowid, reads, errors, inconsistent, slowest = 0, 0, 0, 0, 0.0
    messages: list[str] = []
    states: list[str] = []
    while not args.stop.exists():
        began = time.perf_counter()
        try:
            connection.execute("BEGIN")
            total, rows = connection.execute("SELECT sum(amount), count(*) FROM standby_balance").fetchone()
            new = connection.execute(
                "SELECT rowid, token FROM ship_lag_marker WHERE rowid > ? ORDER BY rowid", (last_rowid,)
            ).fetchall()
            torn = []
            if reads % 10 == 0:
                torn = connection.execute(
                    "SELECT writer, count(*), max(seq) FROM ledger GROUP BY writer HAVING count(*) != max(seq)"
                ).fetchall()
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            errors += 1
            if len(messages) < FIRST:
                messages.append(f"{time.time():.3f} {exc}")
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            time.sleep(args.pause)
            continue
        now = time.time_ns()
        if reads == 0:
            print("reading", flush=True)
        reads += 1
        slowest = max(slowest, time.perf_counter() - began)
        if (total, rows) != (args.total, args.rows) or torn:
            inconsistent += 1
            if len(states) < FIRST:
                states.append(f"sum {total} of {rows} rows, torn ledger {torn}")
        for rowid, token in new:
            seen[token] = now
            last_rowid = rowid
        time.sleep(args.pause)
    connection.close()
    report = {"reads": reads, "errors": errors, "messages": messages, "inconsistent": inconsistent}
    report |= {"states": states, "slowest_ms": round(slowest * 1000, 2), "seen": seen}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
