"""Restoring many segments as written now against the same replica in the earlier segment format, in one run.

    python -m bench.segment_restore [--segments 400] [--rounds 3] [--backends local,moto,seaweedfs] [--json]

A small database takes ``--segments`` small commits, each captured by the core's
shipper (in this process) as one real segment into a spool; the spool is captured
once. For each backend the same spool is uploaded twice, to two prefixes:

    format 2  as walship writes now: each segment ends with its description (a zstd skippable frame),
              so a restore reads it with one GET and no HEAD
    format 1  the same objects minus that frame, described by user metadata alone, as the walship
              before b12db55 wrote them: a restore finds no description at the end and HEADs each segment

Each round restores both (order alternating), with the core in-process
(current_snapshots, select_snapshot, restore_snapshot), into a fresh file;
every restore is checked against the source's content digest and its requests
are counted (store calls: open and get_bytes are GETs, head a HEAD, list a
LIST). moto and SeaweedFS run in processes of their own on 127.0.0.1, as a
real server would. The machine is shared: read the ratio, not the seconds.
"""

import argparse
import json
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, cast

import zstandard

from bench._common import moto_bucket
from bench.workload import content_digest
from walship.catalog import select_snapshot
from walship.chain import list_segment_keys
from walship.index import current_snapshots
from walship.restore import restore_snapshot
from walship.segment import description_trailer, from_trailer, segment_metadata
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.storage import ObjectStore, StorageCredentials, open_store
from walship.trailer import DESCRIPTION_LIMIT
from walship.upload import upload_pending

FORMATS = ("format 2", "format 1")
Replica = tuple[str, StorageCredentials | None]  # a replica URL's base (no prefix yet) and how to sign in


def capture_spool(work: Path, segments: int) -> tuple[Path, str]:
    """A spool holding a generation's snapshot and ``segments`` segments (nothing uploaded), and the digest of
    the database they restore to."""
    database, spool_dir = work / "app.db", work / "spool"
    # The application's connection stays open until the shipper is done: its last close would checkpoint.
    application = sqlite3.connect(database, isolation_level=None)
    application.execute("PRAGMA journal_mode=WAL")
    application.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    with application:
        application.executemany("INSERT INTO notes (body) VALUES (?)", ((f"note {n} " * 40,) for n in range(3000)))
    spool = Spool(spool_dir)
    shipper = Shipper(database, spool, ShipConfig(database_id="bench"))
    try:
        shipper.open()  # the generation's snapshot, into the spool
        for n in range(segments):
            with application:  # one small transaction a segment: a restore's cost is then mostly per object
                application.executemany("INSERT INTO notes (body) VALUES (?)", ((f"segment {n} " * 40,),) * 3)
            shipper.sync()
    finally:
        shipper.close()
        spool.close()
    digest = content_digest(database)
    application.close()
    spooled = [entry for entry in Spool(spool_dir, lock=False).pending() if entry.segment]
    if len(spooled) != segments:
        sys.exit(f"FAIL: {segments} commits were captured as {len(spooled)} segments")
    return spool_dir, digest


def upload(pristine: Path, store: ObjectStore) -> None:
    """Upload a copy of the spool (an upload empties the spool it drains)."""
    copy = pristine.with_name(f"spool-{secrets.token_hex(4)}")
    shutil.copytree(pristine, copy)
    spool = Spool(copy)
    try:
        upload_pending(store, spool, holder="bench")
    finally:
        spool.close()
        shutil.rmtree(copy)


def to_format1(store: ObjectStore) -> None:
    """Rewrite every segment as format 1 had it: the body's zstd frame alone, described by its metadata."""
    generation = current_snapshots(store)[-1].generation
    for key in list_segment_keys(store, generation).values():
        with store.open(key) as stream:
            data = stream.read()
        segment = from_trailer(data[-DESCRIPTION_LIMIT:], key)
        if segment is None:
            sys.exit(f"FAIL: {key} carries no description at its end")
        body = data[: -len(description_trailer(segment))]
        # Exactly one zstd frame must be left, holding the raw bytes: nothing of the description, nothing cut.
        decoder = zstandard.ZstdDecompressor().decompressobj()
        raw = decoder.decompress(body)
        if not decoder.eof or decoder.unused_data or len(raw) != segment.raw_size:
            sys.exit(f"FAIL: {key} without its description is not one zstd frame of {segment.raw_size} bytes")
        described = segment.model_copy(update={"compressed_size": len(body)})
        store.put_bytes(key, body, metadata=segment_metadata(described))


class Counting:
    """A store that counts the calls a reader makes of it (one call, one request: a listing of fewer than
    1,000 keys is one page)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return value(*args, **kwargs)

        return counted

    def requests(self) -> dict[str, int]:
        get = self.calls.get("open", 0) + self.calls.get("get_bytes", 0)
        return {"GET": get, "HEAD": self.calls.get("head", 0), "LIST": self.calls.get("list", 0)}


def restore_once(store: ObjectStore, output: Path, digest: str, segments: int) -> tuple[float, dict[str, int]]:
    """Seconds of one restore of the newest state, as the CLI's does it, and the requests it made."""
    counting = Counting(store)
    proxy = cast(ObjectStore, counting)
    started = time.perf_counter()
    result = restore_snapshot(proxy, select_snapshot(current_snapshots(proxy)), output)
    seconds = time.perf_counter() - started
    if result.segments_applied != segments or content_digest(output) != digest:
        sys.exit(f"FAIL: a restore applied {result.segments_applied} of {segments} segments or differs from the source")
    output.unlink()
    return seconds, counting.requests()


def measure(replica: Replica, pristine: Path, digest: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base, credentials = replica
    stores = {name: open_store(base.replace("{prefix}", name.replace(" ", "")), credentials) for name in FORMATS}
    for store in stores.values():
        upload(pristine, store)
    to_format1(stores["format 1"])
    seconds: dict[str, list[float]] = {name: [] for name in FORMATS}
    requests: dict[str, dict[str, int]] = {}
    for round_ in range(args.rounds):
        # Alternating which goes first: neither always gets the warmer cache or connection.
        for name in FORMATS if round_ % 2 == 0 else FORMATS[::-1]:
            took, made = restore_once(stores[name], work / f"restored-{round_}.db", digest, args.segments)
            seconds[name].append(took)
            if requests.setdefault(name, made) != made:
                sys.exit(f"FAIL: {name} restores made different requests: {requests[name]} then {made}")
    # What the change is about: format 2 HEADs only the snapshot, format 1 each segment besides.
    if requests["format 2"]["HEAD"] != 1 or requests["format 1"]["HEAD"] != args.segments + 1:
        sys.exit(f"FAIL: unexpected HEADs: {requests}")
    medians = {name: statistics.median(seconds[name]) for name in FORMATS}
    return {
        "median_s": {name: round(value, 3) for name, value in medians.items()},
        "ratio_1_over_2": round(medians["format 1"] / medians["format 2"], 3),
        "requests": requests,
        "runs_s": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
    }


@contextmanager
def moto_replica() -> Iterator[Replica]:
    with moto_bucket() as (endpoint, bucket):
        keys = StorageCredentials(access_key_id="any", secret_access_key="any", region="us-east-1")  # noqa: S106 - moto checks none
        yield f"s3://{bucket}/{{prefix}}?endpoint={endpoint}", keys


@contextmanager
def seaweed_replica() -> Iterator[Replica]:
    from tests.s3servers import SeaweedS3  # noqa: PLC0415 - only when asked for

    with SeaweedS3() as server:
        bucket = f"bench-{secrets.token_hex(4)}"
        server.create_bucket(bucket)
        keys = StorageCredentials(
            access_key_id=server.access_key, secret_access_key=server.secret_key, region=server.region
        )
        yield f"s3://{bucket}/{{prefix}}?endpoint={server.endpoint}", keys


def print_table(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"\n{args.segments} segments, median of {args.rounds} restore(s) each; requests per restore\n")
    print("| backend | format 2 s | format 1 s | 1 / 2 | GET/HEAD/LIST format 2 | format 1 |")
    print("|---|---:|---:|---:|---|---|")
    for backend, measured in report["backends"].items():
        median, made = measured["median_s"], measured["requests"]
        counts = ["/".join(str(made[name][kind]) for kind in ("GET", "HEAD", "LIST")) for name in FORMATS]
        print(
            f"| {backend} | {median['format 2']:.3f} | {median['format 1']:.3f} | "
            f"**{measured['ratio_1_over_2']:.2f}** | {counts[0]} | {counts[1]} |"
        )
    print("\nevery restore verified: content equals the source (bench.workload.content_digest)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--segments", type=int, default=400, help="segments after the snapshot (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="restores of each format per backend (default 3)")
    parser.add_argument("--backends", default="local,moto,seaweedfs", help="comma-separated (default: all three)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="segment-restore-") as scratch:
        work = Path(scratch)
        print(f"capturing {args.segments} segments ...", file=sys.stderr, flush=True)
        pristine, digest = capture_spool(work, args.segments)
        replicas: dict[str, Callable[[], AbstractContextManager[Replica]]] = {
            "local": lambda: nullcontext((f"file://{work / 'replicas'}/{{prefix}}", None)),
            "moto": moto_replica,
            "seaweedfs": seaweed_replica,
        }
        segment_bytes = sum(path.stat().st_size for path in (pristine / "pending").rglob("*.wal.zst"))
        report: dict[str, Any] = {"segments": args.segments, "segment_bytes": segment_bytes, "backends": {}}
        for backend in args.backends.split(","):
            print(f"{backend}: uploading, converting, restoring ...", file=sys.stderr, flush=True)
            with replicas[backend]() as replica:
                report["backends"][backend] = measure(replica, pristine, digest, args, work)
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report, args)


if __name__ == "__main__":
    main()
