"""Litestream's restore of the same database, from the same moto server (a side of bench.snapshot_restore).

Litestream 0.5.17 (build/bench/litestream-venv, shared with bench.ship_lag)
replicates a copy of the benchmark database until its objects stop changing
(not timed); then `litestream restore` is timed like the other sides, and its
result checked row for row against the source.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import LS_VENV, litestream

BUCKET_PATH = "litestream"
SETTLE_SECONDS = 3.0  # objects unchanged this long: the initial replication is done
REPLICATE_TIMEOUT = 600.0


def config(db: Path, bucket: str, endpoint: str) -> str:
    return (
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {bucket}\n"
        f"      path: {BUCKET_PATH}\n      endpoint: {endpoint}\n"
        "      region: us-east-1\n      force-path-style: true\n"
    )


def replicate(source: Path, bucket: str, endpoint: str, client: Any, work: Path) -> tuple[Path, Path]:
    """Replicate a copy of ``source``; returns the copy's path and the config file."""
    binary = litestream()
    db, cfg = work / "litestream-source.db", work / "litestream.yml"
    shutil.copyfile(source, db)
    cfg.write_text(config(db, bucket, endpoint))
    log = (work / "litestream-replicate.log").open("wb")
    proc = subprocess.Popen([str(binary), "replicate", "-config", str(cfg)], stdout=log, stderr=log, env=clean_env())
    try:
        last, stable_since, deadline = None, time.monotonic(), time.monotonic() + REPLICATE_TIMEOUT
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if proc.poll() is not None:
                sys.exit(f"litestream replicate failed: {(work / 'litestream-replicate.log').read_text()[-2000:]}")
            listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{BUCKET_PATH}/").get("Contents", [])
            now = sorted((o["Key"], o["Size"]) for o in listing)
            if now != last:
                last, stable_since = now, time.monotonic()
            elif now and time.monotonic() - stable_since >= SETTLE_SECONDS:
                break
        else:
            sys.exit("litestream did not finish replicating in time")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    return db, cfg


def restore_argv(db: Path, cfg: Path, output: Path) -> list[str]:
    return [str(LS_VENV / "bin" / "litestream"), "restore", "-config", str(cfg), "-o", str(output), str(db)]


def clean_env() -> dict[str, str]:
    """The environment without AWS_CA_BUNDLE: Litestream's AWS SDK refuses a CA bundle for its HTTP client."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
