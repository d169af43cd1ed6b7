"""The cost of one upload of a large spooled segment: ``upload_pending`` of a spool holding one segment.

A spool with one segment of about ``--mib`` MiB (random rows: zstd keeps them at their size) is captured
once; each round uploads a fresh copy of it, to a ``file://`` replica, moto's S3 server and SeaweedFS (both
in their own processes, as a real server would be). What is timed is what a shipper pays: the spool's check
of the entry, the upload, and the entry's removal. Run it from two trees to compare them:

    PYTHONPATH=TREE python -m bench.spooled_upload [--mib 64] [--repeat 5] [--backends local,moto,seaweedfs]
"""

import argparse
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._common import moto_bucket
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.storage import open_store
from walship.upload import upload_pending

_ROW = 3000  # bytes of random data per row: an overflow page or so each


def spool_one_segment(directory: Path, mib: int) -> Path:
    """A spool whose only pending entry is one segment of about ``mib`` MiB; its snapshot already went up."""
    database, spool_dir = directory / "app.db", directory / "spool"
    application = sqlite3.connect(database, isolation_level=None)
    application.execute("PRAGMA journal_mode=WAL")
    application.execute("CREATE TABLE blobs (data BLOB)")
    spool = Spool(spool_dir)
    shipper = Shipper(database, spool, ShipConfig(database_id="bench", checkpoint_pages=10**9, restart_pages=10**9))
    try:
        shipper.open()
        upload_pending(open_store(f"file://{directory / 'first'}"), spool, holder="bench")
        application.execute("BEGIN")
        for _ in range((mib << 20) // _ROW):
            application.execute("INSERT INTO blobs VALUES (randomblob(?))", (_ROW,))
        application.execute("COMMIT")
        shipper.sync()
    finally:
        shipper.close()
        spool.close()
        application.close()
    pending = Spool(spool_dir, lock=False).pending()
    assert [entry.kind for entry in pending] == ["segment"], pending
    return spool_dir


@contextmanager
def moto_replica() -> Iterator[str]:
    with moto_bucket() as (endpoint, bucket):
        moto_keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}  # moto checks none
        os.environ.update(moto_keys, AWS_DEFAULT_REGION="us-east-1")
        yield f"s3://{bucket}/spooled?endpoint={endpoint}"


@contextmanager
def seaweed_replica() -> Iterator[str]:
    from tests.s3servers import SeaweedS3  # noqa: PLC0415 - only when asked for

    with SeaweedS3() as server:
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION=server.region,
        )
        bucket = f"bench-{secrets.token_hex(4)}"
        server.create_bucket(bucket)
        yield f"s3://{bucket}/spooled?endpoint={server.endpoint}"


@contextmanager
def local_replica(directory: Path) -> Iterator[str]:
    yield f"file://{directory / 'replica'}"


def time_uploads(pristine: Path, work: Path, replica: str, repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and this process's CPU seconds of each upload (the servers run in processes of their own)."""
    store = open_store(replica)
    seconds, cpu = [], []
    for round_ in range(repeat + 1):  # the first round warms the connection and the page cache
        copy = work / f"spool-{round_}"
        shutil.copytree(pristine, copy)
        spool = Spool(copy)
        try:
            start, start_cpu = time.perf_counter(), time.process_time()
            result = upload_pending(store, spool, holder="bench")
            elapsed, used = time.perf_counter() - start, time.process_time() - start_cpu
        finally:
            spool.close()
        assert result.segments == 1
        assert not Spool(copy, lock=False).pending()
        shutil.rmtree(copy)
        if round_:
            seconds.append(elapsed)
            cpu.append(used)
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="local,moto,seaweedfs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spooled-upload-") as scratch:
        directory = Path(scratch)
        pristine = spool_one_segment(directory, args.mib)
        size = sum(path.stat().st_size for path in (pristine / "pending").rglob("*.zst"))
        replicas: dict[str, Callable[[], object]] = {
            "local": lambda: local_replica(directory),
            "moto": moto_replica,
            "seaweedfs": seaweed_replica,
        }
        report: dict[str, object] = {"segment_bytes": size}
        for name in args.backends.split(","):
            with replicas[name]() as replica:  # type: ignore[attr-defined]
                seconds, cpu = time_uploads(pristine, directory, replica, args.repeat)
            report[name] = {
                "median_s": round(statistics.median(seconds), 3),
                "median_cpu_s": round(statistics.median(cpu), 3),
                "runs_s": [round(s, 3) for s in seconds],
            }
        print(json.dumps(report))


if __name__ == "__main__":
    main()
