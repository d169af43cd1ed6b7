"""What bench.standby's phases share: the S3 servers, the source database, `walship ship`, writers, segment listings.

The source is a copy of the cached benchmark database with two tables added:
ship_lag_marker (bench.ship_lag_writer's markers) and standby_balance, whose rows
a trigger on the workload's ledger moves an amount between in every transaction,
so the sum stays the same in every committed state and a torn one shows.
"""

import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import zstandard
from botocore.config import Config

from bench._common import ROOT, moto_bucket
from bench.ship_lag_writer import MARKER_TABLE, TOKEN_PATTERN
from walship.layout import parse_segment_key

WALSHIP = str(Path(sys.executable).parent / "walship")
WRITERS = 2
BALANCE_ROWS, BALANCE_START = 1000, 1000
BALANCE = f"""
CREATE TABLE standby_balance (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL, pad BLOB NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {BALANCE_ROWS})
INSERT INTO standby_balance SELECT i, {BALANCE_START}, randomblob(400) FROM n;
CREATE TRIGGER standby_transfer AFTER INSERT ON ledger BEGIN
    UPDATE standby_balance SET amount = amount - (NEW.seq % 97 + 1)
        WHERE id = (NEW.seq * 7 + NEW.writer * 131) % {BALANCE_ROWS} + 1;
    UPDATE standby_balance SET amount = amount + (NEW.seq % 97 + 1)
        WHERE id = (NEW.seq * 13 + NEW.writer * 17 + {BALANCE_ROWS // 2}) % {BALANCE_ROWS} + 1;
END;
"""  # noqa: S608 - the bench's own constants


@dataclass
class Backend:
    name: str
    endpoint: str
    bucket: str
    env: dict[str, str]  # for walship's processes: the server's credentials and nothing from ~/.aws

    def replica(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}"

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )


def _env(access_key: str, secret_key: str) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        AWS_ACCESS_KEY_ID=access_key,
        AWS_SECRET_ACCESS_KEY=secret_key,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )


@contextmanager
def backend(name: str) -> Iterator[Backend]:
    """moto's server or SeaweedFS (`weed mini`, authentication on), each in processes of their own."""
    if name == "moto":
        with moto_bucket() as (endpoint, bucket):
            yield Backend(name, endpoint, bucket, _env("testing", "testing"))
        return
    from tests.s3servers import SeaweedS3  # noqa: PLC0415 - only when asked for

    with SeaweedS3() as server:
        bucket = f"bench-{secrets.token_hex(4)}"
        server.create_bucket(bucket)
        yield Backend(name, server.endpoint, bucket, _env(server.access_key, server.secret_key))


def prepare_source(base: Path, source: Path) -> None:
    shutil.copyfile(base, source)
    with sqlite3.connect(source) as connection:
        connection.execute(MARKER_TABLE)
        connection.executescript(BALANCE)
    connection.close()


def start_shipper(server: Backend, source: Path, prefix: str, seconds: float, log: Path) -> subprocess.Popen[bytes]:
    """`walship ship` of ``source``; returns once its generation's snapshot is in the replica."""
    argv = [WALSHIP, "--no-prefect", "ship", str(source), "--replica", server.replica(prefix)]
    argv += ["--duration", str(seconds)]
    shipper = subprocess.Popen(argv, env=server.env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    client, deadline = server.client(), time.monotonic() + 300
    while not any("/snapshots/" in key for key, _ in list_keys(client, server.bucket, f"{prefix}/generations/")):
        if shipper.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"walship ship did not snapshot: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    return shipper


def stop(process: subprocess.Popen[Any], what: str) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        sys.exit(f"{what} did not stop within 120 s of SIGTERM")


def start_writers(source: Path, rate: float, seconds: float, work: Path) -> list[subprocess.Popen[str]]:
    """bench.ship_lag_writer processes, ``rate`` tx/s in total, each noting its markers' COMMIT times."""
    writer = [sys.executable, "-m", "bench.ship_lag_writer", str(source), "--seconds", str(seconds)]
    return [
        subprocess.Popen(
            [*writer, "--writer", str(w), "--rate", str(rate / WRITERS), "--log", str(work / f"markers-{w}.txt")],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(1, WRITERS + 1)
    ]


def finish_writers(writers: list[subprocess.Popen[str]], work: Path) -> dict[str, int]:
    """Wait for the writers; every marker's COMMIT time (ns)."""
    for process in writers:
        process.communicate()
    if any(process.returncode for process in writers):
        sys.exit("a writer failed")
    markers = {}
    for w in range(1, WRITERS + 1):
        for line in (work / f"markers-{w}.txt").read_text().splitlines():
            token, ns = line.split()
            markers[token] = int(ns)
    return markers


def list_keys(client: Any, bucket: str, prefix: str, after: str = "") -> list[tuple[str, int]]:
    """Keys and sizes under ``prefix`` past ``after``, in key order."""
    found: list[tuple[str, int]] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, StartAfter=after)
    for page in pages:
        found += [(obj["Key"], obj["Size"]) for obj in page.get("Contents", [])]
    return found


def segments(client: Any, bucket: str, prefix: str) -> dict[int, tuple[str, int]]:
    """The replica's segments by sequence: key and stored size."""
    listed = {}
    for key, size in list_keys(client, bucket, f"{prefix}/generations/"):
        parsed = parse_segment_key(key.removeprefix(f"{prefix}/"))
        if parsed is not None:
            listed[parsed.sequence] = (key, size)
    return listed


class Lister(threading.Thread):
    """When each segment first appeared in a listing of the replica (polled every ``every`` s): when it became
    durable, to within that, and the earliest a follower could see it."""

    def __init__(self, server: Backend, prefix: str, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.client, self.bucket, self.prefix, self.every = server.client(), server.bucket, prefix, every
        self.first_seen: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        last = ""
        while not self.done.wait(self.every):
            for key, _ in list_keys(self.client, self.bucket, f"{self.prefix}/generations/", after=last):
                if "/wal/" in key:
                    self.first_seen.setdefault(key, time.time_ns())
                    last = max(last, key)

    def durable(self) -> dict[str, int]:
        """For each marker token, when the first segment holding it was first listed."""
        self.done.set()
        self.join()
        when: dict[str, int] = {}
        for key, seen in sorted(self.first_seen.items(), key=lambda item: item[1]):
            data = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            if data[:4] == b"\x28\xb5\x2f\xfd":
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            for token in re.findall(TOKEN_PATTERN, data):
                when.setdefault(token.decode(), seen)
        return when
