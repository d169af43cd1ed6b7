"""An application writer for the torture run: the workload's transactions, a commit log, a clean or hard stop.

``python -m tests.torture.writer DB --writer W --rate R --log FILE --seed S``
continues the writer's ledger from what the database holds (a restarted
writer picks up where its last commit left off), commits 1 to 4 of the
workload's transactions at a time and now and then a big one, and appends
``n<TAB>unix time`` to FILE after each COMMIT returns. SIGTERM closes the
connection cleanly (the application closing its last connection); SIGKILL
is a crash. While the file ``--pause`` names exists, it commits nothing and
keeps its connection open (an application gone idle).
"""

import argparse
import random
import signal
import sqlite3
import time
from pathlib import Path
from types import FrameType

from bench.workload import apply_transaction

TRANSACTIONS_SEED = 11  # the content of transaction n of writer w; the base database uses the same seed

_stop = False


def _on_term(signum: int, frame: FrameType | None) -> None:
    global _stop  # noqa: PLW0603 - the signal handler's only way to reach the loop
    _stop = True


def _batch(rng: random.Random) -> int:
    """How many of the workload's transactions one COMMIT holds: mostly a few, now and then a big one."""
    return rng.choice((1, 1, 1, 2, 3, 4)) if rng.random() > 0.02 else rng.randint(50, 300)


def write(database: Path, writer: int, rate: float, log: Path, seed: int, pause: Path | None = None) -> None:
    connection = sqlite3.connect(database, isolation_level=None, timeout=30)
    (done,) = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE writer = ?", (writer,)).fetchone()
    rng = random.Random(f"{seed}:{writer}:{done}")
    interval = 1.0 / rate
    with log.open("a", buffering=1) as commits:
        while not _stop:
            if pause is not None and pause.exists():
                time.sleep(0.02)
                continue
            batch = _batch(rng)
            connection.execute("BEGIN IMMEDIATE")
            for n in range(done + 1, done + batch + 1):
                apply_transaction(connection, TRANSACTIONS_SEED, writer, n)
            connection.execute("COMMIT")
            done += batch
            commits.write(f"{done}\t{time.time():.6f}\n")
            time.sleep(interval * rng.uniform(0.2, 1.8))
    connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.torture.writer")
    parser.add_argument("database", type=Path)
    parser.add_argument("--writer", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="commits a second, on average")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0, help="varies batch sizes and pauses")
    parser.add_argument("--pause", type=Path, help="commit nothing while this file exists")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_term)
    write(args.database, args.writer, args.rate, args.log, args.seed, args.pause)


if __name__ == "__main__":
    main()
