"""Write replicas and a spool as walship wrote them before segments described themselves (format 1 of
docs/FORMAT.md's "WAL segments": the description in user metadata only, no trailer).

Run against a checkout of that walship (commit fd5e0e8), from this repository's root:

    PYTHONPATH=/path/to/that/checkout .venv/bin/python tests/data/format1/make.py tests/data/format1

It writes, beside this file: ``replica/`` (a snapshot, WAL segments, a resync segment and WAL segments
after it), ``replica-age/`` (the same, encrypted for ``age.key``), ``spool/`` with ``replica-spooled/``
(segments captured into the spool and never uploaded) and ``expected.json`` (each one's content digest).
tests/test_segment_format.py restores them all with today's walship.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from pyrage import x25519

import walship
from bench.workload import content_digest
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool, default_spool_dir

WALSHIP = str(Path(sys.executable).parent / "walship")


def commit(application: sqlite3.Connection, first: int, count: int) -> None:
    for n in range(first, first + count):
        application.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (n, f"note {n} " * 30))


def open_application(database: Path) -> sqlite3.Connection:
    """The application's connection, open throughout: its last close would checkpoint and delete the WAL."""
    application = sqlite3.connect(database, isolation_level=None)
    application.execute("PRAGMA journal_mode=WAL")
    application.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    return application


def ship(database: Path, replica: Path, *extra: str) -> None:
    subprocess.run(
        [
            str(Path(sys.executable).parent / "walship"),
            "ship",
            str(database),
            "--replica",
            f"file://{replica}",
            "--once",
            *extra,
        ],
        check=True,
        env={**os.environ, "PREFECT_API_URL": ""},
    )


def checkpoint_truncate(database: Path) -> None:
    connection = sqlite3.connect(database, timeout=30)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


def replica_with_a_resync(work: Path, out: Path, name: str, *extra: str) -> str:
    """A generation: snapshot, segments, a resync after a TRUNCATE nobody watched, segments after it."""
    database = work / f"{name}.db"
    application = open_application(database)
    commit(application, 1, 20)
    ship(database, out / name, *extra)
    for batch in range(3):
        commit(application, 100 + 10 * batch, 10)
        ship(database, out / name, *extra)
    commit(application, 500, 10)
    checkpoint_truncate(database)  # while no shipper runs: the next one resyncs
    ship(database, out / name, *extra)
    for batch in range(2):
        commit(application, 700 + 10 * batch, 10)
        ship(database, out / name, *extra)
    digest = content_digest(database)
    application.close()
    return digest


def spooled(work: Path, out: Path) -> str:
    """A replica with a snapshot and a segment, and a spool holding three captured segments after it."""
    database = work / "spooled.db"
    application = open_application(database)
    commit(application, 1, 20)
    ship(database, out / "replica-spooled")
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id=database.name))
    try:
        shipper.open()
        for batch in range(3):
            commit(application, 200 + 10 * batch, 10)
            shipper.sync()
    finally:
        shipper.close()
        spool.close()
    digest = content_digest(database)
    application.close()
    shutil.copytree(default_spool_dir(database) / "pending", out / "spool" / "pending")
    return digest


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    assert "segment" not in {p.name for p in Path(walship.__file__).parent.iterdir()}, "run it with the older walship"
    for name in ("replica", "replica-age", "replica-spooled", "spool"):
        shutil.rmtree(out / name, ignore_errors=True)
    identity = x25519.Identity.generate()
    (out / "age.key").write_text(f"{identity}\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        expected = {
            "replica": replica_with_a_resync(work, out, "replica"),
            "replica-age": replica_with_a_resync(
                work, out, "replica-age", "--age-recipient", str(identity.to_public())
            ),
            "replica-spooled": spooled(work, out),
        }
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    for leftover in [*out.glob("replica*/.lock"), *out.glob("replica*/.tmp"), *out.glob("replica*/lease.json")]:
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


if __name__ == "__main__":
    main()
