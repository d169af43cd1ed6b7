"""What `walship query` costs on a big backup: a primary-key lookup from a cold cache, and a count at a time.

    python -m bench.query [--mib 1024] [--rounds 4] [--lookups 5] [--backend seaweedfs|moto|local] [--json]

A ``--mib`` database (bench.workload: accounts and bulk orders) is shipped by
the core's shipper in this process into a replica on ``--backend`` (SeaweedFS
by default: it serves real ranged GETs, where moto reads the whole object for
each range): the generation's framed snapshot, then ``--rounds`` segments, each
after the application (a process of its own) added rows to a table ``late``.

Then, each time from a fresh cache (a new temporary directory):

    lookup      open the newest point (describe the replica, read the snapshot's tables, apply its
                segments) and SELECT one order by its primary key; the wall time of both, and the bytes
                read of the snapshot object (its tables and the frames the lookup needed) as a share of it
    count       SELECT count(*) FROM late at a --timestamp between two segments, against the count in a
                restore (walship restore's core) to that same moment

Goals: a cold lookup within 1 s and 2 % of the snapshot's bytes; the counts equal.
The machine is shared: read the shares, and the seconds as an order of magnitude.
"""

import argparse
import json
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import BUILD, database, moto_bucket
from walship.chain import list_segment_keys, read_segment_info
from walship.lease import holder_for
from walship.query import open_point
from walship.restore import StoreRestoreSteps, run_restore
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.storage import ObjectStore, StorageCredentials, open_store
from walship.upload import upload_pending

_LATE = (
    "CREATE TABLE IF NOT EXISTS late (id INTEGER PRIMARY KEY, body TEXT);"
    "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 500) "
    "INSERT INTO late (body) SELECT hex(randomblob(100)) FROM n;"
)


def _app_commits(path: Path) -> None:
    code = "import apsw, sys; c = apsw.Connection(sys.argv[1]); c.execute(sys.argv[2]).fetchall(); c.close()"
    subprocess.run([sys.executable, "-c", code, str(path), _LATE], check=True)


def ship(path: Path, store: ObjectStore, spool_dir: Path, rounds: int) -> tuple[str, float]:
    """The snapshot and ``rounds`` segments; the generation and the seconds the snapshot took."""
    spool = Spool(spool_dir)
    shipper = Shipper(path, spool, ShipConfig(database_id=path.name))
    started = time.monotonic()
    opened = shipper.open()
    upload_pending(store, spool, holder=holder_for(path))
    snapshot_seconds = time.monotonic() - started
    for _ in range(rounds):
        _app_commits(path)
        shipper.sync()
        upload_pending(store, spool, holder=holder_for(path))
    shipper.finish()
    upload_pending(store, spool, holder=holder_for(path))
    shipper.close()
    spool.close()
    assert opened.new_generation is not None
    return opened.new_generation, snapshot_seconds


def lookup(store: ObjectStore, order_id: int) -> dict[str, Any]:
    """One primary-key lookup at the newest point, from a cold cache."""
    started = time.monotonic()
    with open_point(store) as backup:
        opened = time.monotonic()
        rows = backup.connection.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchall()
        done = time.monotonic()
        assert len(rows) == 1, rows
        return {
            "seconds": done - started,
            "open_seconds": opened - started,
            "select_seconds": done - opened,
            "fetched_bytes": backup.fetched_bytes,
            "snapshot_bytes": backup.snapshot.compressed_size,
            "share": backup.fetched_bytes / backup.snapshot.compressed_size,
            "segments_applied": backup.segments_applied,
            "frames_fetched": backup.cache.misses,
        }


def count_at(store: ObjectStore, generation: str, work: Path) -> dict[str, Any]:
    """count(*) FROM late between the last two segments, by a query and in a restore to the same moment."""
    segments = [read_segment_info(store, key) for _, key in sorted(list_segment_keys(store, generation).items())]
    with_commits = [s for s in segments if getattr(s, "commits", 0)]
    before, after = with_commits[-2], with_commits[-1]
    moment: datetime = before.captured_at + (after.captured_at - before.captured_at) / 2
    started = time.monotonic()
    with open_point(store, timestamp=moment) as backup:
        [(queried,)] = backup.connection.execute("SELECT count(*) FROM late").fetchall()
        query_seconds, fetched = time.monotonic() - started, backup.fetched_bytes
    started = time.monotonic()
    output = work / "restored.db"
    run_restore(StoreRestoreSteps(store), output, timestamp=moment, force=True)
    restore_seconds = time.monotonic() - started
    import apsw  # noqa: PLC0415 - only here

    connection = apsw.Connection(str(output), flags=apsw.SQLITE_OPEN_READONLY)
    [(restored,)] = connection.execute("SELECT count(*) FROM late").fetchall()
    connection.close()
    assert queried == restored, (queried, restored)
    return {
        "timestamp": moment.isoformat(),
        "query_count": queried,
        "restore_count": restored,
        "query_seconds": query_seconds,
        "query_fetched_bytes": fetched,
        "restore_seconds": restore_seconds,
    }


@contextmanager
def replica(backend: str, work: Path) -> Iterator[tuple[str, StorageCredentials | None]]:
    if backend == "local":
        with nullcontext():
            yield f"file://{work / 'replica'}", None
    elif backend == "moto":
        with moto_bucket() as (endpoint, bucket):
            keys = StorageCredentials(access_key_id="any", secret_access_key="any", region="us-east-1")  # noqa: S106
            yield f"s3://{bucket}/query?endpoint={endpoint}", keys
    else:
        from tests.s3servers import SeaweedS3  # noqa: PLC0415 - only when asked for

        with SeaweedS3() as server:
            bucket = f"bench-{secrets.token_hex(4)}"
            server.create_bucket(bucket)
            keys = StorageCredentials(
                access_key_id=server.access_key, secret_access_key=server.secret_key, region=server.region
            )
            yield f"s3://{bucket}/query?endpoint={server.endpoint}", keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="database size (default 1024)")
    parser.add_argument("--rounds", type=int, default=4, help="segments after the snapshot (default 4)")
    parser.add_argument("--lookups", type=int, default=5, help="cold lookups, each from a fresh cache (default 5)")
    parser.add_argument("--backend", default="seaweedfs", choices=("seaweedfs", "moto", "local"))
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args()
    source, _ = database(args.mib)
    with tempfile.TemporaryDirectory(prefix="query-", dir=BUILD) as scratch:
        work = Path(scratch)
        path = work / "app.db"
        shutil.copyfile(source, path)
        with replica(args.backend, work) as (url, keys):
            store = open_store(url, keys) if keys is not None else open_store(url)
            print(f"shipping {args.mib} MiB and {args.rounds} segments to {args.backend} ...", file=sys.stderr)
            generation, snapshot_seconds = ship(path, store, work / "spool", args.rounds)
            orders = int(_scalar(path, "SELECT max(id) FROM orders"))
            rng = random.Random(7)
            lookups = [lookup(store, rng.randint(1, orders)) for _ in range(args.lookups)]
            counted = count_at(store, generation, work)
    report = {
        "mib": args.mib,
        "backend": args.backend,
        "snapshot_seconds": snapshot_seconds,
        "lookups": lookups,
        "lookup_median_seconds": statistics.median(x["seconds"] for x in lookups),
        "lookup_median_share": statistics.median(x["share"] for x in lookups),
        "count": counted,
    }
    print(json.dumps(report, indent=2) if args.json else _table(report))


def _scalar(path: Path, sql: str) -> Any:
    import apsw  # noqa: PLC0415

    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return connection.execute(sql).fetchall()[0][0]
    finally:
        connection.close()


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"\n{report['mib']} MiB on {report['backend']}; snapshot shipped in {report['snapshot_seconds']:.1f} s\n",
        "| cold lookup | wall s | open s | select s | frames | fetched bytes | share of snapshot |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for n, x in enumerate(report["lookups"], 1):
        lines.append(
            f"| {n} | {x['seconds']:.3f} | {x['open_seconds']:.3f} | {x['select_seconds']:.3f} | "
            f"{x['frames_fetched']} | {x['fetched_bytes']} | {100 * x['share']:.3f} % |"
        )
    count = report["count"]
    lines += [
        f"\nmedian: {report['lookup_median_seconds']:.3f} s, {100 * report['lookup_median_share']:.3f} % "
        f"of {report['lookups'][0]['snapshot_bytes']} bytes (goals: 1 s, 2 %)",
        f"count(*) at {count['timestamp']}: query {count['query_count']} in {count['query_seconds']:.2f} s, "
        f"restore {count['restore_count']} in {count['restore_seconds']:.1f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
