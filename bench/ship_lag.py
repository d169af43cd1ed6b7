"""Benchmark walship's continuous WAL shipping against Litestream: lag, requests, CPU, memory.

Each side gets a fresh copy of the same WAL-mode database and the same writer schedule
(writer processes, stdlib sqlite3, autocheckpoint on, ``--rate`` tx/s in total for
``--seconds``, then ``--idle`` seconds with no writes), one after the other, against one
moto S3 server that runs in this process behind a middleware logging every request:

    walship     python -m bench.ship_lag_walship: the wal-ship flow's loop, core only
                (open; every --interval: sync, upload_pending when the spool has entries)
    litestream  litestream replicate (0.5.17, build/bench/litestream-venv, installed on
                first run), default sync interval, same moto server, its own bucket

Lag: every 20th transaction inserts a random token; its writer notes time.time_ns()
right after COMMIT returns. A token is durable when the first object holding it
(walship: zstd of raw WAL frames; Litestream: LTX, LZ4 pages) was completely written
to the server. Core only: the Prefect flow process is excluded (its import is measured).

    python -m bench.ship_lag [--rate 500] [--seconds 60] [--idle 60] [--interval 1] [--age]

``--age`` adds a third side, walship encrypting every object for one age recipient
(``walship+age``), and reports its CPU and lag against plaintext walship's. ``--baseline DIR``
adds ``walship@base``: the walship side of another checkout (say main's, from ``git archive``),
run from there in the same rounds, with the lag, requests and CPU of both side by side.
"""

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyrage
import zstandard
from pyrage import x25519

from bench._common import (
    BUILD,
    LS_VENV,
    LS_VERSION,
    ROOT,
    database,
    litestream,
    proc_stats,
    without_litestream,
)
from bench.ship_lag_report import KINDS, report, summary, versus_baseline
from bench.ship_lag_s3 import RecordingS3
from bench.ship_lag_writer import MARKER_TABLE, TOKEN_PATTERN
from bench.workload import content_digest

BUCKETS = {"walship": "walship-lag", "litestream": "litestream-lag", "walship+age": "walship-age-lag"}
BUCKETS["walship@base"] = "walship-base-lag"
AGE_SIDE, BASE_SIDE = "walship+age", "walship@base"
WRITERS = 2
DRAIN_SECONDS = 5.0  # after the writers stop: the last sync's upload belongs to the load


def litestream_config(db: Path, endpoint: str) -> str:
    return (
        "logging:\n  level: info\n  stderr: true\n"
        f"dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKETS['litestream']}\n"
        f"      path: litestream\n      endpoint: {endpoint}\n      region: us-east-1\n      force-path-style: true\n"
    )


def use_moto_credentials() -> None:
    """Both sides (and this process's checks) talk to the bench's moto server, and nothing else."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=RecordingS3.access_key,
        AWS_SECRET_ACCESS_KEY=RecordingS3.secret_key,
        AWS_DEFAULT_REGION=RecordingS3.region,
        AWS_REGION=RecordingS3.region,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )


def marked_copy(source: Path, here: Path) -> Path:
    """A fresh copy of the workload's database in ``here``, with the table the lag markers go to."""
    db = here / "db.sqlite"
    shutil.copyfile(source, db)
    with sqlite3.connect(db) as connection:
        connection.execute(MARKER_TABLE)
    connection.close()
    return db


def run_side(side: str, server: RecordingS3, source: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ship one copy of the database under load, then idle; return timings, markers and samples."""
    here = work / side
    here.mkdir()
    db = marked_copy(source, here)
    server.create_bucket(BUCKETS[side])
    env = dict(os.environ)
    if side.startswith("walship"):
        replica = f"s3://{BUCKETS[side]}/walship?endpoint={server.endpoint}"
        if side == AGE_SIDE:
            config = json.loads(env.get("WALSHIP_BENCH_CONFIG", "{}"))
            env["WALSHIP_BENCH_CONFIG"] = json.dumps({**config, "recipients": [str(args.age.to_public())]})
        argv = [sys.executable, "-m", "bench.ship_lag_walship", str(db), replica]
        if side == BASE_SIDE:
            env["PYTHONPATH"] = str(args.baseline)
        argv += ["--interval", str(args.interval), "--events", str(here / "events.json")]
    else:
        env.pop("AWS_CA_BUNDLE", None)  # Go's SDK would load it, and there is no TLS here
        (here / "litestream.yml").write_text(litestream_config(db, server.endpoint))
        argv = [str(LS_VENV / "bin" / "litestream"), "replicate", "-config", str(here / "litestream.yml")]
    log = (here / "shipper.log").open("w")
    out = subprocess.PIPE if side.startswith("walship") else log  # walship says "ready" on stdout
    cwd = args.baseline if side == BASE_SIDE else ROOT
    shipper = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=log, text=True)
    if side.startswith("walship"):
        assert shipper.stdout is not None
        if shipper.stdout.readline().strip() != "ready":
            sys.exit(f"walship shipper failed to start: see {here / 'shipper.log'}")
    else:
        while not server.objects(BUCKETS[side]):
            if shipper.poll() is not None:
                sys.exit(f"litestream failed to start: {(here / 'shipper.log').read_text()[-2000:]}")
            time.sleep(0.1)
    # Dirty pages the copy, the snapshot and earlier sides' restores left are written back now: inside the
    # load, their writeback would slow the writers' fsyncs of whichever side comes first in a round.
    os.sync()
    time.sleep(2.0)  # let the initial snapshot settle on both sides
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), proc_stats(shipper.pid)[1]))
            stop.wait(args.sample)

    sampler = threading.Thread(target=sample, daemon=True)
    per_writer = args.rate / WRITERS
    writer = [sys.executable, "-m", "bench.ship_lag_writer", "--seconds", str(args.seconds)]
    writer += ["--batch", str(args.batch)]
    t_load0, cpu0 = time.time_ns(), proc_stats(shipper.pid)[0]
    sampler.start()
    writers = [
        subprocess.Popen(
            [*writer, str(db), "--writer", str(w), "--rate", str(per_writer), "--log", str(here / f"markers-{w}.txt")],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(1, WRITERS + 1)
    ]
    written = [json.loads(w.communicate()[0]) for w in writers]
    if any(w.returncode for w in writers):
        sys.exit(f"{side}: a writer failed")
    t_load1, cpu1 = time.time_ns(), proc_stats(shipper.pid)[0]
    time.sleep(args.idle)
    t_end = time.time_ns()
    cpu2, _, hwm = proc_stats(shipper.pid)
    stop.set()
    sampler.join()
    shipper.send_signal(signal.SIGTERM)
    shipper.wait(timeout=60)
    log.close()
    markers = {}
    for w in range(1, WRITERS + 1):
        for line in (here / f"markers-{w}.txt").read_text().splitlines():
            token, ns = line.split()
            markers[token] = int(ns)
    events = json.loads((here / "events.json").read_text()) if side.startswith("walship") else {}
    said = re.search(r"sync-interval=(\S+)", (here / "shipper.log").read_text())
    return {
        "db": db,
        "windows": (t_load0, t_load1, t_end),
        "transactions": sum(w["transactions"] for w in written),
        "latencies": [seconds for w in written for seconds in w["latencies"]],
        "markers": markers,
        "cpu": (cpu1 - cpu0, cpu2 - cpu1),
        "hwm": hwm,
        "samples": samples,
        "events": events,
        "sync_interval": said.group(1) if said else f"{args.interval:g}s",
        "loadavg": os.getloadavg()[1],  # 5-minute average at the end: other work on the machine skews all this
    }


def durable(server: RecordingS3, side: str, work: Path, identity: Any = None) -> tuple[dict[str, int], dict[str, str]]:
    """For each token, when the first object holding it was completely written, and that object's key."""
    when: dict[str, int] = {}
    where: dict[str, str] = {}
    found: list[tuple[int, str, list[str]]] = []
    objects = server.objects(BUCKETS[side])
    if side.startswith("walship"):
        for obj in objects:
            data = obj.read()
            if data.startswith(b"age-encryption.org/v1\n"):
                data = pyrage.decrypt(data, [identity])
            if data[:4] == b"\x28\xb5\x2f\xfd":
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            found.append((obj.done_ns, obj.key, [t.decode() for t in re.findall(TOKEN_PATTERN, data)]))
    else:
        files = {}
        for n, obj in enumerate(o for o in objects if o.key.endswith(".ltx")):
            path = obj.parts[0] if len(obj.parts) == 1 else work / f"ltx-{n}"
            if len(obj.parts) > 1:
                path.write_bytes(obj.read())
            files[str(path)] = obj
        helper = [str(LS_VENV / "bin" / "python"), str(ROOT / "bench" / "ship_lag_ltx.py")]
        out = subprocess.run(helper, input="\n".join(files), capture_output=True, text=True, check=True).stdout
        found = [(files[p].done_ns, files[p].key, tokens) for p, tokens in json.loads(out).items()]
    for done_ns, key, tokens in sorted(found):
        for token in tokens:
            if token not in when:
                when[token], where[token] = done_ns, key
    return when, where


def requests(server: RecordingS3, side: str, windows: tuple[int, int, int]) -> dict[str, dict[str, float]]:
    """Requests per minute by kind, under load (writers running + drain) and idle (after that)."""
    t0, t1, t2 = windows
    drained = t1 + int(DRAIN_SECONDS * 1e9)
    spans = {"load": (t0, drained), "idle": (drained, t2)}
    rates: dict[str, dict[str, float]] = {}
    for name, (start, end) in spans.items():
        counts = dict.fromkeys(KINDS, 0)
        for r in server.log:
            if r.bucket == BUCKETS[side] and start <= r.done_ns < end:
                counts[r.kind] = counts.get(r.kind, 0) + 1
        minutes = (end - start) / 60e9
        rates[name] = {k: v / minutes for k, v in counts.items()} | {"total": float(sum(counts.values()))}
    return rates


def verify_walship(server: RecordingS3, db: Path, work: Path, side: str = "walship", identity: Any = None) -> bool:
    from walship import catalog, index, restore  # noqa: PLC0415 - after the run, in this process
    from walship.envelope import Keyring  # noqa: PLC0415
    from walship.storage import open_store  # noqa: PLC0415

    store = open_store(f"s3://{BUCKETS[side]}/walship?endpoint={server.endpoint}")
    keys = Keyring([identity], "the benchmark's identity") if identity is not None else None
    try:
        chosen = catalog.select_snapshot(index.current_snapshots(store))
        restore.restore_snapshot(store, chosen, work / "walship-restored.db", keys=keys, force=True)
    except Exception as exc:  # any failure is the verdict, reported below the table
        print(f"walship restore failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return content_digest(work / "walship-restored.db") == content_digest(db)


def verify_litestream(db: Path, work: Path) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    out = work / "litestream-restored.db"
    argv = [str(LS_VENV / "bin" / "litestream"), "restore", "-config", str(db.parent / "litestream.yml")]
    proc = subprocess.run([*argv, "-o", str(out), str(db)], env=env, capture_output=True, check=False)
    return proc.returncode == 0 and without_litestream(out) == without_litestream(db)


def prefect_import() -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of a python that imports prefect and the flow module."""
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.monotonic()
        code = "import prefect, flows.ship"
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, sys.executable, "-c", code], cwd=ROOT, check=True)
        return int(peak.read().split()[-1]) / 1024, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ship_lag", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=500, help="transactions per second, all writers (default 500)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of writes (default 60)")
    parser.add_argument("--idle", type=float, default=60, help="seconds with no writes after that (default 60)")
    parser.add_argument("--interval", type=float, default=1.0, help="walship sync interval (default 1)")
    parser.add_argument("--batch", type=int, default=1, help="workload transactions per commit (default 1)")
    parser.add_argument("--mib", type=int, default=16, help="database size in MiB (default 16)")
    parser.add_argument("--sample", type=float, default=5.0, help="RSS sampling period, seconds (default 5)")
    parser.add_argument("--age", action="store_true", help="also walship encrypting with age (a third side)")
    parser.add_argument("--baseline", type=Path, help="also run the walship side of this checkout (walship@base)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run both sides this many times, alternating who goes first (default 1)"
    )
    args = parser.parse_args()
    args.writers, args.drain = WRITERS, DRAIN_SECONDS
    args.age = x25519.Identity.generate() if args.age else None
    if not shutil.which("/usr/bin/time"):
        sys.exit("this benchmark needs GNU time: run 'apt-get install time'")
    BUILD.mkdir(parents=True, exist_ok=True)
    litestream()
    source, _ = database(args.mib)
    use_moto_credentials()
    rounds: list[dict[str, dict[str, Any]]] = []
    for n in range(args.rounds):
        # Alternate who goes first: on a shared machine, load drifts between the two halves of a round.
        sides = [s for s in BUCKETS if (s != AGE_SIDE or args.age is not None) and (s != BASE_SIDE or args.baseline)]
        order = sides if n % 2 == 0 else sides[::-1]
        rounds.append(one_round(source, args, order, full_report=n == 0))
    if args.rounds > 1:
        summary(rounds)
        if args.baseline:
            versus_baseline(rounds)


def one_round(source: Path, args: argparse.Namespace, order: list[str], *, full_report: bool) -> dict[str, Any]:
    """Both sides once, each on a fresh moto server and work directory; the first round prints the full report."""
    with tempfile.TemporaryDirectory(dir=BUILD, prefix="lag-") as tmp:
        work = Path(tmp)
        server = RecordingS3(work / "bodies")
        sides: dict[str, dict[str, Any]] = {}
        for side in order:
            print(f"{side}: {args.seconds:g} s at {args.rate:g} tx/s, then {args.idle:g} s idle ...", file=sys.stderr)
            sides[side] = run_side(side, server, source, work, args)
            sides[side]["durable"], sides[side]["where"] = durable(server, side, work, args.age)
            sides[side]["requests"] = requests(server, side, sides[side]["windows"])
        ok = {"walship": verify_walship(server, sides["walship"]["db"], work)}
        ok["litestream"] = verify_litestream(sides["litestream"]["db"], work)
        if AGE_SIDE in sides:
            ok[AGE_SIDE] = verify_walship(server, sides[AGE_SIDE]["db"], work, AGE_SIDE, args.age)
        if BASE_SIDE in sides:
            ok[BASE_SIDE] = verify_walship(server, sides[BASE_SIDE]["db"], work, BASE_SIDE)
        server.stop()
        if full_report:
            report(sides, args, ok, prefect_import(), LS_VERSION, litestream_config(Path("DB"), "ENDPOINT"))
    if AGE_SIDE in sides:
        _age_cost(sides)
    if BASE_SIDE in sides:
        versus_baseline([sides])
    if not all(ok[side] for side in ok if side.startswith("walship")):
        sys.exit("FAIL: a walship restore differs from the source database")
    return sides


def _age_cost(sides: dict[str, dict[str, Any]]) -> None:
    """Encrypted walship against plaintext walship of the same round: shipping CPU and lag."""
    rows = []
    for side in ("walship", AGE_SIDE):
        data = sides[side]
        lags = sorted((data["durable"][t] - ns) / 1e9 for t, ns in data["markers"].items() if t in data["durable"])
        rows.append((side, data["cpu"][0], data["cpu"][1], lags[len(lags) // 2] if lags else float("nan")))
    print("\n| side | CPU s under load | CPU s idle | median lag s |\n|---|---:|---:|---:|")
    for side, load, idle, lag in rows:
        print(f"| {side} | {load:.2f} | {idle:.2f} | {lag:.3f} |")
    plain, sealed = rows
    print(
        f"\nage encryption, encrypted over plaintext: shipping CPU under load {sealed[1] / max(plain[1], 1e-9):.3f}, "
        f"CPU load + idle {(sealed[1] + sealed[2]) / max(plain[1] + plain[2], 1e-9):.3f}"
    )


if __name__ == "__main__":
    main()
