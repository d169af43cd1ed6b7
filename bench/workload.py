"""A realistic SQLite workload for the demo, the tests and the benchmarks.

Writers commit transactions that are a pure function of (seed, writer, n) and
commute across writers: each writer inserts, updates and deletes only its own
rows, and shared rows change only by increments. So the state after writer w
committed its first k_w transactions is the same whatever the interleaving,
and ``expected_state`` can rebuild it to check a restore row for row.

Run a writer process: ``python -m bench.workload write DB --writer 1 --seconds 5``.
"""

import argparse
import hashlib
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

__all__ = ["committed_counts", "content_digest", "create_database", "expected_state", "writer_command"]

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "order",
    "invoice",
    "shipped",
    "pending",
    "refund",
    "customer",
    "account",
    "balance",
    "priority",
    "express",
    "standard",
    "warehouse",
    "berlin",
    "paris",
    "tokyo",
    "lagos",
]
_ACCOUNTS = 1000
_WRITER_ID_SHIFT = 40

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
    balance INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, bio TEXT
);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL, amount INTEGER NOT NULL,
    status TEXT NOT NULL, note TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_account ON orders(account_id);
CREATE TABLE IF NOT EXISTS ledger (writer INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (writer, seq));
"""


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def create_database(path: Path, size_bytes: int, *, seed: int = 1) -> None:
    """A WAL-mode database of about ``size_bytes``: accounts plus bulk history orders."""
    rng = random.Random(seed)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(SCHEMA)
    with connection:
        connection.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?, 0, ?, ?)",
            [
                (
                    i,
                    f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()}",
                    f"user{i}@example.com",
                    f"2026-01-{1 + i % 28:02d}T12:00:00Z",
                    _sentence(rng, 20),
                )
                for i in range(1, _ACCOUNTS + 1)
            ],
        )
    order_id = 1
    while path.stat().st_size + _wal_size(path) < size_bytes:
        batch = [
            (
                order_id + i,
                rng.randint(1, _ACCOUNTS),
                rng.randint(100, 100_000),
                rng.choice(("paid", "shipped")),
                _sentence(rng, rng.randint(10, 40)),
                f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T08:00:00Z",
            )
            for i in range(20_000)
        ]
        with connection:
            connection.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", batch)
        order_id += len(batch)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()


def database_copies(directory: Path, base: Path, count: int) -> list[Path]:
    """``count`` copies of ``base`` in ``directory``: a fleet of databases."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"db{i:04d}.db" for i in range(count)]
    for path in paths:
        shutil.copyfile(base, path)
    return paths


def _wal_size(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def apply_transaction(connection: sqlite3.Connection, seed: int, writer: int, n: int) -> None:
    """Transaction ``n`` (from 1) of ``writer``: deterministic, and commuting with other writers'."""
    rng = random.Random(f"{seed}:{writer}:{n}")
    own = (writer << _WRITER_ID_SHIFT) + n
    connection.execute("INSERT INTO ledger VALUES (?, ?)", (writer, n))
    account = rng.randint(1, _ACCOUNTS)
    amount = rng.randint(1, 5000)
    connection.execute(
        "INSERT INTO orders VALUES (?, ?, ?, 'pending', ?, ?)",
        (own, account, amount, _sentence(rng, rng.randint(5, 30)), f"w{writer}-t{n}"),
    )
    connection.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?", (amount, account))
    if n > 1 and rng.random() < 0.4:
        earlier = (writer << _WRITER_ID_SHIFT) + rng.randint(1, n - 1)
        connection.execute("UPDATE orders SET status = 'shipped', note = note || ' +' WHERE id = ?", (earlier,))
    if n > 1 and rng.random() < 0.15:
        earlier = (writer << _WRITER_ID_SHIFT) + rng.randint(1, n - 1)
        connection.execute("DELETE FROM orders WHERE id = ?", (earlier,))


def write(
    path: Path, *, writer: int, seed: int, seconds: float, rate: float, start: int = 1, log: Path | None = None
) -> int:
    """Commit transactions at about ``rate`` per second for ``seconds``; return the last n.

    With ``log``, each commit appends ``n<TAB>unix time`` there (flushed at once), so
    a test can tell which transactions a point-in-time restore must hold.
    """
    connection = sqlite3.connect(path, timeout=30, isolation_level=None)
    commits = log.open("a", buffering=1) if log is not None else None
    connection.execute("PRAGMA busy_timeout=30000")
    deadline = time.monotonic() + seconds
    n = start - 1
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        n += 1
        connection.execute("BEGIN IMMEDIATE")
        apply_transaction(connection, seed, writer, n)
        connection.execute("COMMIT")
        if commits is not None:
            commits.write(f"{n}\t{time.time():.6f}\n")
        if interval:
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    connection.close()
    if commits is not None:
        commits.close()
    return n


def writer_command(
    path: Path, *, writer: int, seed: int, seconds: float, rate: float = 0, log: Path | None = None
) -> list[str]:
    """The argv that runs one writer in its own process."""
    return [
        sys.executable,
        "-m",
        "bench.workload",
        "write",
        str(path),
        "--writer",
        str(writer),
        "--seed",
        str(seed),
        "--seconds",
        str(seconds),
        "--rate",
        str(rate),
        *(["--log", str(log)] if log is not None else []),
    ]


def committed_counts(path: Path) -> dict[int, int]:
    """How many transactions each writer had committed in the state ``path`` holds."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute("SELECT writer, COUNT(*), MAX(seq) FROM ledger GROUP BY writer").fetchall()
    finally:
        connection.close()
    for writer, count, highest in rows:
        if count != highest:
            raise AssertionError(f"writer {writer}: ledger has {count} rows but reaches {highest}: a torn state")
    return {writer: count for writer, count, _ in rows}


def expected_state(base: Path, target: Path, seed: int, counts: dict[int, int]) -> None:
    """Rebuild the state after each writer's first ``counts[w]`` transactions, from ``base``."""
    shutil.copyfile(base, target)
    connection = sqlite3.connect(target, isolation_level=None)
    connection.execute("BEGIN")
    for writer, count in sorted(counts.items()):
        for n in range(1, count + 1):
            apply_transaction(connection, seed, writer, n)
    connection.execute("COMMIT")
    connection.close()


def content_digest(path: Path) -> str:
    """SHA-256 of every row of every table, in primary-key order: equal digests, equal content."""
    digest = hashlib.sha256()
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            digest.update(table.encode())
            for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):  # noqa: S608 - names from the schema
                digest.update(repr(row).encode())
    finally:
        connection.close()
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.workload")
    commands = parser.add_subparsers(dest="command", required=True)
    write_args = commands.add_parser("write")
    write_args.add_argument("database", type=Path)
    write_args.add_argument("--writer", type=int, required=True)
    write_args.add_argument("--seed", type=int, default=1)
    write_args.add_argument("--seconds", type=float, required=True)
    write_args.add_argument("--rate", type=float, default=0, help="transactions per second (0: as fast as possible)")
    write_args.add_argument("--log", type=Path, help="append 'n<TAB>commit time' for every commit")
    create_args = commands.add_parser("create")
    create_args.add_argument("database", type=Path)
    create_args.add_argument("--mib", type=int, default=16)
    args = parser.parse_args()
    if args.command == "write":
        last = write(
            args.database, writer=args.writer, seed=args.seed, seconds=args.seconds, rate=args.rate, log=args.log
        )
        print(last)
    else:
        create_database(args.database, args.mib << 20)


if __name__ == "__main__":
    main()
