"""One writer process of bench.ship_lag: stdlib sqlite3, autocheckpoint on, a steady rate.

Every ``--marker-every``-th transaction also inserts a unique random token into
``ship_lag_marker``; right after its COMMIT returns, the writer notes
``time.time_ns()``. The tokens and times go to ``--log`` ("token ns" per line) at
the end; printed: JSON with the transaction count and each transaction's seconds
from BEGIN IMMEDIATE to COMMIT returned (a shipper that pauses writers shows here).

    python -m bench.ship_lag_writer DB --writer 1 --rate 250 --seconds 60 --log FILE
"""

import argparse
import json
import secrets
import sqlite3
import time
from pathlib import Path

from bench.workload import apply_transaction

MARKER_TABLE = "CREATE TABLE IF NOT EXISTS ship_lag_marker (token TEXT PRIMARY KEY, writer INTEGER, n INTEGER)"
TOKEN_PATTERN = rb"MRK[0-9a-f]{24}"  # what the bench searches for in shipped objects


def write(
    db: Path, writer: int, rate: float, seconds: float, every: int, log: Path, batch: int = 1
) -> dict[str, object]:
    connection = connect(db)
    markers: list[str] = []
    latencies: list[float] = []
    n, interval = 0, 1.0 / rate
    start = time.monotonic()
    deadline, next_at = start + seconds, start
    while time.monotonic() < deadline:
        n += 1
        began = time.monotonic()
        if token := transaction(connection, writer, n, every, batch):
            markers.append(token)
        latencies.append(round(time.monotonic() - began, 6))
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    connection.close()
    log.write_text("".join(f"{line}\n" for line in markers))
    return {"transactions": n, "latencies": latencies}


def connect(db: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(db, timeout=30, isolation_level=None)  # autocheckpoint: SQLite's default 1000
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def transaction(connection: sqlite3.Connection, writer: int, n: int, every: int, batch: int = 1) -> str | None:
    """The ``n``-th transaction; every ``every``-th one's "token ns" line (its marker and when COMMIT returned)."""
    connection.execute("BEGIN IMMEDIATE")
    for part in range(batch):  # a bigger transaction: several of the workload's in one commit
        apply_transaction(connection, 1, writer, (n - 1) * batch + part + 1)
    token = f"MRK{secrets.token_hex(12)}" if n % every == 0 else None
    if token:
        connection.execute("INSERT INTO ship_lag_marker VALUES (?, ?, ?)", (token, writer, n))
    connection.execute("COMMIT")
    return None if token is None else f"{token} {time.time_ns()}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ship_lag_writer")
    parser.add_argument("database", type=Path)
    parser.add_argument("--writer", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="transactions per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--marker-every", type=int, default=20)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=1, help="workload transactions per commit (default 1)")
    args = parser.parse_args()
    result = write(args.database, args.writer, args.rate, args.seconds, args.marker_every, args.log, args.batch)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
