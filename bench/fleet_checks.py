"""bench.fleet's second window and its checks: commits made while no shipper ran, descriptors, restores.

A warm start-up is timed by what an operator waits for: one marker commit is
made in each written database while no shipper runs (as a fleet restarted on
a worker finds some databases changed), and the start-up ends when every one
of those commits is in a replica file. walship looks at every database of the
fleet (opens it, or reads its caught-up record) before its first sync, so
this also bounds "every database looked at"; the written databases are spread
over the fleet, the last one included, so no order favours them.
"""

import os
import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench._common import LS_VENV, without_litestream
from bench.ship_lag_writer import MARKER_TABLE
from bench.workload import content_digest

__all__ = ["commit_markers", "descriptors", "restored_equal", "spread", "wait_markers"]

TokensIn = Callable[[str, list[Path]], list[tuple[int, list[str]]]]


def spread(dbs: list[Path], count: int) -> list[Path]:
    """``count`` databases evenly over the fleet, its last one included."""
    step = max(len(dbs) // max(count, 1), 1)
    return [dbs[len(dbs) - 1 - k * step] for k in range(min(count, len(dbs)))][::-1]


def commit_markers(dbs: list[Path]) -> dict[Path, str]:
    """One committed marker token per database (no shipper running)."""
    tokens = {}
    for db in dbs:
        token = f"MRK{secrets.token_hex(12)}"
        connection = sqlite3.connect(db, timeout=30, isolation_level=None)
        connection.execute(MARKER_TABLE)
        connection.execute("INSERT INTO ship_lag_marker VALUES (?, 0, 0)", (token,))
        connection.close()
        tokens[db] = token
    return tokens


def wait_markers(
    side: str,
    tokens: dict[Path, str],
    replicas: Path,
    tokens_in: TokensIn,
    alive: Callable[[], bool],
    timeout: float,
) -> tuple[float | None, int]:
    """Seconds until every marker is in its replica (None: not within ``timeout``, or the shipper exited), and how
    many made it."""
    suffix = ".ltx" if side == "litestream" else ".zst"
    began, pending, seen = time.monotonic(), dict(tokens), set[Path]()
    while pending:
        if not alive() or time.monotonic() - began > timeout:
            return None, len(tokens) - len(pending)
        fresh = [p for db in pending for p in (replicas / db.name).rglob(f"*{suffix}") if p not in seen]
        seen.update(fresh)
        found = {token for _, ts in tokens_in(side, fresh) for token in ts}
        pending = {db: t for db, t in pending.items() if t not in found}
        if pending:
            time.sleep(0.5)
    return time.monotonic() - began, len(tokens)


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def restored_equal(side: str, dbs: list[Path], replicas: Path, env: dict[str, str] | None, walship: Path) -> int:
    """How many of ``dbs`` restore from their replica with the content of their source (shipper stopped)."""
    equal = 0
    with tempfile.TemporaryDirectory(prefix="fleet-restore-") as tmp:
        for db in dbs:
            out = Path(tmp) / db.name
            if side == "litestream":
                config = replicas.parent / "litestream.yml"
                argv = [str(LS_VENV / "bin" / "litestream"), "restore", "-config", str(config), "-o", str(out), str(db)]
            else:
                argv = [str(walship), "--no-prefect", "restore", "--replica", f"file://{replicas / db.name}"]
                argv += ["--output", str(out)]
            done = subprocess.run(argv, env=env or None, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{side}: restore of {db.name} failed: {done.stderr.strip()[-500:]}")
                continue
            digest = without_litestream if side == "litestream" else content_digest
            if digest(out) == digest(db):
                equal += 1
            else:
                print(f"{side}: {db.name} restored differently from its source")
    return equal
