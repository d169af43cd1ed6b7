"""A gap bridged by a resync against a full snapshot of the same database, in the same run.

    python -m bench.resync [--mib 1024] [--rate 500] [--ship 10] [--down 60]

A database of ``--mib`` MiB (built once under build/bench/, copied fresh each
run) takes ``--rate`` transactions a second from two writer processes with
SQLite's default autocheckpoint, from start to end. The shipper (the core, as
the tasks call it, in this process) ships ``--ship`` seconds into a file://
replica, stops for ``--down`` seconds, and opens again: its autocheckpointed,
restarted WAL cannot be continued, so it resyncs. Right after, writers still
going, the same shipper takes a full snapshot of the same database (a new
generation, as before resyncs existed): the baseline. For each: wall time
(capture into the spool, then upload), bytes uploaded, and how long writers
waited for the write lock.
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import BUILD, ROOT
from bench.workload import create_database, writer_command
from walship.lease import holder_for
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.storage import open_store
from walship.upload import upload_pending

SEED = 11


def source_database(mib: int) -> Path:
    cached = BUILD / f"resync-{mib}.db"
    if not cached.exists():
        BUILD.mkdir(parents=True, exist_ok=True)
        print(f"building a {mib} MiB database in {cached} (once)...", flush=True)
        create_database(cached, mib << 20, seed=SEED)
    return cached


def _upload(shipper: Shipper, replica: str) -> tuple[float, int]:
    """Upload what the spool holds; seconds and bytes."""
    started = time.monotonic()
    uploaded = upload_pending(open_store(replica), shipper.spool, holder=holder_for(shipper.database))
    return time.monotonic() - started, uploaded.bytes


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    database = work / "app.db"
    shutil.copyfile(source_database(args.mib), database)
    replica = f"file://{work / 'replica'}"
    writers = [
        subprocess.Popen(
            writer_command(database, writer=w, seed=SEED, seconds=3600, rate=args.rate / 2),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        for w in (1, 2)
    ]
    try:
        spool = Spool(work / "spool")
        shipper = Shipper(database, spool, ShipConfig(database_id="app.db"))
        started = time.monotonic()
        first = shipper.open()
        first_spooled = time.monotonic() - started
        first_upload, first_bytes = _upload(shipper, replica)
        assert first.new_generation is not None
        deadline = time.monotonic() + args.ship
        while time.monotonic() < deadline:
            shipper.sync()
            _upload(shipper, replica)
            time.sleep(1.0)
        shipper.finish()
        _upload(shipper, replica)
        shipper.close()
        spool.close()

        print(f"shipper down for {args.down:.0f} s while writers go on...", flush=True)
        time.sleep(args.down)

        spool = Spool(work / "spool")
        shipper = Shipper(database, spool, ShipConfig(database_id="app.db"))
        started = time.monotonic()
        opened = shipper.open()
        resync_spooled = time.monotonic() - started
        resync_pause = shipper.capture.last_pause_seconds
        resync_upload, resync_bytes = _upload(shipper, replica)
        if opened.resync is None:
            raise SystemExit(f"no resync: {opened.reason}")

        started = time.monotonic()
        full = shipper.start_generation("bench: the full snapshot a gap used to cost")
        full_spooled = time.monotonic() - started
        full_pause = shipper.capture.last_pause_seconds
        full_upload, full_bytes = _upload(shipper, replica)
        assert full.new_generation is not None
        shipper.close()
        spool.close()
    finally:
        for writer in writers:
            writer.terminate()
        for writer in writers:
            writer.wait(timeout=30)
    resync = opened.resync
    return {
        "database_mib": database.stat().st_size / 2**20,
        "rate": args.rate,
        "down_seconds": args.down,
        "first_snapshot": {"spooled_s": first_spooled, "upload_s": first_upload, "bytes": first_bytes},
        "resync": {
            "pages": resync.pages,
            "page_count": resync.page_count,
            "raw_bytes": resync.raw_bytes,
            "bytes": resync_bytes,
            "spooled_s": resync_spooled,
            "upload_s": resync_upload,
            "writers_pause_s": resync_pause,
        },
        "full_snapshot": {
            "bytes": full_bytes,
            "spooled_s": full_spooled,
            "upload_s": full_upload,
            "writers_pause_s": full_pause,
        },
    }


def report(result: dict[str, Any]) -> None:
    resync, full = result["resync"], result["full_snapshot"]
    size, rate, down = result["database_mib"], result["rate"], result["down_seconds"]
    print(f"\n{size:.0f} MiB database, {rate} tx/s, shipper down {down:.0f} s")
    print("| after the gap | resync | full snapshot | resync / full |")
    print("|---|---:|---:|---:|")
    print(f"| bytes uploaded | {resync['bytes']:,} | {full['bytes']:,} | {resync['bytes'] / full['bytes']:.2%} |")
    resync_wall = resync["spooled_s"] + resync["upload_s"]
    full_wall = full["spooled_s"] + full["upload_s"]
    print(f"| wall time (spool + upload) | {resync_wall:.2f} s | {full_wall:.2f} s | {resync_wall / full_wall:.2f} |")
    print(
        f"| writers' pause | {resync['writers_pause_s'] * 1000:.1f} ms | {full['writers_pause_s'] * 1000:.1f} ms "
        f"| {resync['writers_pause_s'] / max(full['writers_pause_s'], 1e-9):.2f} |"
    )
    print(f"| pages shipped | {resync['pages']:,} of {resync['page_count']:,} | all | |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rate", type=float, default=500, help="transactions per second, all writers together")
    parser.add_argument("--ship", type=float, default=10, help="seconds of shipping before the gap")
    parser.add_argument("--down", type=float, default=60, help="seconds with no shipper")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="walship-resync-", dir=BUILD if BUILD.exists() else None) as tmp:
        result = measure(args, Path(tmp))
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
