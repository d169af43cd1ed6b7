"""An application process that checkpoints on its own, or writes with a short busy timeout.

Run as ``python -m tests.app_process checkpoint DB --out FILE`` or ``... write DB --writer N --out FILE``.
Both use a busy timeout of ``--busy-ms`` (1 s by default): a call that SQLite
could not complete within it comes back busy or raises ``database is locked``,
so "never blocked for long" is read from SQLite's own outcome, not from a clock.
Each records every call (outcome and duration) as JSON lines in ``--out`` until
SIGTERM.
"""

import argparse
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from types import FrameType

from bench.workload import apply_transaction

_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop  # noqa: PLW0603 - the signal handler's only way to reach the loop
    _stop = True


def checkpoint(db: Path, out: Path, busy_ms: int, every: float, modes: list[str]) -> None:
    """Alternate ``modes`` every ``every`` seconds, as an application that checkpoints itself."""
    connection = sqlite3.connect(db, isolation_level=None, timeout=busy_ms / 1000)
    with out.open("a") as log:
        n = 0
        while not _stop:
            mode = modes[n % len(modes)]
            started = time.monotonic()
            try:
                busy, frames, _ = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
                outcome = "busy" if busy else "ok"
            except sqlite3.OperationalError as exc:
                outcome, frames = f"error: {exc}", -1
            record = {"mode": mode, "outcome": outcome, "seconds": time.monotonic() - started, "log": frames}
            log.write(json.dumps(record) + "\n")
            log.flush()
            n += 1
            time.sleep(every)
    connection.close()


def write(db: Path, out: Path, busy_ms: int, writer: int, seed: int, rate: float) -> None:
    """Commit the workload's deterministic transactions; a locked one is recorded and retried."""
    connection = sqlite3.connect(db, isolation_level=None, timeout=busy_ms / 1000)
    n = 0
    with out.open("a") as log:
        while not _stop:
            started = time.monotonic()
            try:
                connection.execute("BEGIN IMMEDIATE")
                apply_transaction(connection, seed, writer, n + 1)
                connection.execute("COMMIT")
                n += 1
                outcome = "ok"
            except sqlite3.OperationalError as exc:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                outcome = f"error: {exc}"
            log.write(json.dumps({"n": n, "outcome": outcome, "seconds": time.monotonic() - started}) + "\n")
            log.flush()
            time.sleep(1 / rate)
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.app_process")
    parser.add_argument("role", choices=["checkpoint", "write"])
    parser.add_argument("database", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--busy-ms", type=int, default=1000)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--modes", default="RESTART,TRUNCATE")
    parser.add_argument("--writer", type=int, default=9)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rate", type=float, default=100)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    if args.role == "checkpoint":
        checkpoint(args.database, args.out, args.busy_ms, args.every, args.modes.split(","))
    else:
        write(args.database, args.out, args.busy_ms, args.writer, args.seed, args.rate)
    sys.exit(0)


if __name__ == "__main__":
    main()
