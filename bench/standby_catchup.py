"""The catch-up phase of bench.standby: `restore --delta` of a copy left behind, against a full restore, one run.

A copy is restored ``--lead`` seconds after the generation's snapshot while
the writers run (a copy refreshed between two hourly snapshots is tens of
minutes past the newest), then left ``--behind`` seconds behind as they go
on and `walship ship` ships. Once the shipper has uploaded everything, both
bring a file to the replica's newest sequence, one after the other, with the
page cache's dirty pages written back before each: a full `walship restore`
into a new file, and `walship restore --delta` of the copy.
Besides, the generation's snapshot restored alone (`restore --snapshot`): what a
full restore would cost were there a snapshot of that very point, the cheapest
a full restore gets.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._common import ROOT
from bench.standby_setup import (
    WALSHIP,
    Backend,
    finish_writers,
    list_keys,
    prepare_source,
    segments,
    start_shipper,
    start_writers,
    stop,
)
from walship.copies import read_copy_record

QUIET_SECONDS = 3.0  # no new segment for this long after the writers stopped: the shipper has uploaded all


def _restore(server: Backend, prefix: str, output: Path, *options: str) -> tuple[float, str]:
    argv = [WALSHIP, "--no-prefect", "restore", "--replica", server.replica(prefix), "--output", str(output)]
    os.sync()
    began = time.monotonic()
    done = subprocess.run([*argv, *options], env=server.env, cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.monotonic() - began
    if done.returncode:
        sys.exit(f"walship restore {' '.join(options)} failed: {done.stderr[-2000:]}")
    return took, done.stdout


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def catch_up_run(server: Backend, base: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    here = work / f"{server.name}-catchup"
    here.mkdir()
    source, copy, fresh, alone = here / "source.db", here / "copy.db", here / "fresh.db", here / "snapshot.db"
    prepare_source(base, source)
    prefix = "catchup"
    shipper = start_shipper(server, source, prefix, args.lead + args.behind + 900, here / "ship.log")
    writers = start_writers(source, args.rate, args.lead + args.behind, here)
    time.sleep(args.lead)
    first_s, _ = _restore(server, prefix, copy)
    record = read_copy_record(copy)
    if record is None:
        sys.exit(f"the restore of {copy} left no record")
    finish_writers(writers, here)
    client, newest, quiet_since = server.client(), -1, time.monotonic()
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        time.sleep(0.5)
        now = max(segments(client, server.bucket, prefix), default=-1)
        if now != newest:
            newest, quiet_since = now, time.monotonic()
    stop(shipper, "walship ship")
    listed = segments(client, server.bucket, prefix)
    newest = max(listed)
    applied = {seq: size for seq, (_, size) in listed.items() if record.sequence < seq <= newest}
    full_s, _ = _restore(server, prefix, fresh, "--sequence", str(newest))
    # What a full restore would cost if a snapshot of this very point existed: the snapshot alone.
    (snapshot_key, snapshot_bytes), *_ = list_keys(
        client, server.bucket, f"{prefix}/generations/{record.generation}/snapshots/"
    )
    snapshot_s, _ = _restore(server, prefix, alone, "--snapshot", snapshot_key.removeprefix(f"{prefix}/"))
    alone.unlink()
    delta_s, said = _restore(server, prefix, copy, "--delta", "--sequence", str(newest))
    counted = re.search(r"\((\d+) segments applied; downloaded (\d+) bytes, [\d.]+ % of a full restore's (\d+)", said)
    if counted is None:
        sys.exit(f"restore --delta did not apply segments: {said.strip()[-500:]}")
    segments_applied, downloaded, full_bytes = (int(g) for g in counted.groups())
    segment_bytes = sum(applied.values())
    return {
        "backend": server.name,
        "behind": args.behind,
        "lead": args.lead,
        "database_bytes": fresh.stat().st_size,
        "copy_restored_s": round(first_s, 2),
        "segments": segments_applied,
        "segments_listed": len(applied),
        "segment_bytes": segment_bytes,
        "delta_bytes": downloaded,
        "full_bytes": full_bytes,
        "delta_over_segments": downloaded / segment_bytes,
        "delta_over_full_bytes": downloaded / full_bytes,
        "delta_s": delta_s,
        "full_s": full_s,
        "delta_over_full_s": delta_s / full_s,
        "snapshot_s": snapshot_s,
        "snapshot_bytes": snapshot_bytes,
        "delta_over_snapshot_s": delta_s / snapshot_s,
        "identical": _sha256(copy) == _sha256(fresh),
        "said": said.strip().splitlines()[-1],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
