"""Benchmark one process shipping a fleet: walship ship-many against one litestream replicate.

Each side gets its own copies of N small WAL-mode databases and ships them
all from one process into file replicas (local disk: the bench measures the
shippers, not a storage server), one side after the other:

    walship     walship --no-prefect ship-many 'DIR/*.db' --replica file:///.../{name}
    litestream  litestream replicate (0.5.17, build/bench/litestream-venv as bench.ship_lag
                installs it) with one ``dbs:`` entry per database, file replicas

Phases: start-up (until every database's replica holds its first object),
``--idle`` seconds with no writes (CPU of the shipper process: the idle
cost), then ``--load`` seconds of writes to ``--active`` of the databases
(bench.ship_lag_writer, ``--rate`` tx/s each, a marker token every 5th
transaction), then a drain. Lag: from a marker's COMMIT returning to the
mtime of the first replica file holding it (files are written whole, then
renamed). Peak RSS is the shipper's VmHWM.

    python -m bench.fleet [--databases 1000] [--active 20] [--rate 20] [--idle 30] [--load 60]
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
import time
from pathlib import Path
from typing import Any

import httpx
import zstandard

from bench._common import LS_VENV, LS_VERSION, ROOT, litestream, proc_stats
from bench.ship_lag_report import pct
from bench.ship_lag_writer import MARKER_TABLE, TOKEN_PATTERN
from bench.workload import create_database
from deployments.local_server import api_url, prefect_env, start_server, stop_group, wait_healthy

WALSHIP = Path(sys.executable).parent / "walship"
DRAIN_SECONDS = 5.0
MARKER_EVERY = 5
PORT = 4281  # the --prefect server's


def prepare(directory: Path, count: int, base: Path) -> list[Path]:
    directory.mkdir(parents=True)
    paths = [directory / f"db{i:04d}.db" for i in range(count)]
    for path in paths:
        shutil.copyfile(base, path)
    return paths


def start(
    side: str, dbs: list[Path], replicas: Path, interval: float, log: Path, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    """The shipper; ``env``: walship as a flow run on the Prefect server it names."""
    if side == "walship":
        template = f"file://{replicas}/{{name}}"
        pattern = str(dbs[0].parent / "*.db")
        mode = "--prefect" if env else "--no-prefect"
        argv = [str(WALSHIP), mode, "ship-many", pattern, "--replica", template]
        argv += ["--duration", "86400", "--interval", str(interval)]
    else:
        entries = "".join(
            f"  - path: {db}\n    replica:\n      type: file\n      path: {replicas / db.name}\n" for db in dbs
        )
        config = replicas.parent / "litestream.yml"
        config.write_text(f"logging:\n  level: warn\n  stderr: true\ndbs:\n{entries}")
        argv = [str(LS_VENV / "bin" / "litestream"), "replicate", "-config", str(config)]
    with log.open("wb") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env or None
        )


def started(side: str, dbs: list[Path], replicas: Path) -> int:
    """How many databases have their first object in their replica."""
    suffix = ".zst" if side == "walship" else ".ltx"
    return sum(any(p.name.endswith(suffix) for p in (replicas / db.name).rglob("*")) for db in dbs)


def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU use over ``seconds``, in % of one core."""
    cpu0, t0 = proc_stats(pid)[0], time.monotonic()
    time.sleep(seconds)
    return 100 * (proc_stats(pid)[0] - cpu0) / (time.monotonic() - t0)


def tokens_in(side: str, files: list[Path]) -> list[tuple[int, list[str]]]:
    """(mtime ns, tokens) of each replica file."""
    if side == "walship":
        found = []
        for path in files:
            data = path.read_bytes()
            if data[:4] == b"\x28\xb5\x2f\xfd":
                data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            found.append((path.stat().st_mtime_ns, [t.decode() for t in re.findall(TOKEN_PATTERN, data)]))
        return found
    helper = [str(LS_VENV / "bin" / "python"), str(ROOT / "bench" / "ship_lag_ltx.py")]
    out = subprocess.run(helper, input="\n".join(map(str, files)), capture_output=True, text=True, check=True).stdout
    return [(Path(p).stat().st_mtime_ns, tokens) for p, tokens in json.loads(out).items()]


def lags(side: str, active: list[Path], replicas: Path, logs: list[Path]) -> tuple[list[float], int]:
    committed: dict[str, int] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            token, ns = line.split()
            committed[token] = int(ns)
    suffix = ".wal.zst" if side == "walship" else ".ltx"
    files = [p for db in active for p in (replicas / db.name).rglob(f"*{suffix}")]
    durable: dict[str, int] = {}
    for mtime, tokens in sorted(tokens_in(side, files)):
        for token in tokens:
            durable.setdefault(token, mtime)
    return [(durable[t] - ns) / 1e9 for t, ns in committed.items() if t in durable], len(committed)


def writer_argv(db: Path, log: Path, args: argparse.Namespace) -> list[str]:
    return [
        *(sys.executable, "-m", "bench.ship_lag_writer", str(db), "--writer", "1", "--rate", str(args.rate)),
        *("--seconds", str(args.load), "--marker-every", str(MARKER_EVERY), "--log", str(log)),
    ]


def run_side(
    side: str, work: Path, base: Path, args: argparse.Namespace, env: dict[str, str] | None = None
) -> dict[str, Any]:
    here = work / side
    dbs = prepare(here / "dbs", args.databases, base)
    replicas = here / "replicas"
    replicas.mkdir()
    began = time.monotonic()
    shipper = start(side, dbs, replicas, args.interval, here / "shipper.log", env if side == "walship" else None)
    result: dict[str, Any] = {}
    try:
        deadline = began + args.startup_timeout
        while (done := started(side, dbs, replicas)) < len(dbs):
            if shipper.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{side}: {done} of {len(dbs)} started; log: {(here / 'shipper.log').read_text()[-2000:]}")
            time.sleep(1)
        result["startup_seconds"] = time.monotonic() - began
        time.sleep(5)  # the first snapshots' compression and uploads settle
        result["idle_cpu_percent"] = cpu_over(shipper.pid, args.idle)
        active = dbs[: args.active]
        logs = [here / f"w{i}.log" for i in range(len(active))]
        cpu0, t0 = proc_stats(shipper.pid)[0], time.monotonic()
        writers = [
            subprocess.Popen(writer_argv(db, log, args), cwd=ROOT, stdout=subprocess.DEVNULL)
            for db, log in zip(active, logs, strict=True)
        ]
        for writer in writers:
            writer.wait()
        time.sleep(DRAIN_SECONDS)
        result["load_cpu_percent"] = 100 * (proc_stats(shipper.pid)[0] - cpu0) / (time.monotonic() - t0)
        result["peak_rss_mib"] = proc_stats(shipper.pid)[2]
    finally:
        os.killpg(shipper.pid, signal.SIGTERM)
        try:
            shipper.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(shipper.pid, signal.SIGKILL)
    values, committed = lags(side, active, replicas, logs)
    result.update(
        tokens=committed,
        durable=len(values),
        lag_p50=pct(values, 0.5),
        lag_p99=pct(values, 0.99),
        lag_max=max(values, default=float("nan")),
    )
    return result


def api_server(pid: int) -> dict[str, Any]:
    """What the fleet's flow run cost the Prefect server: CPU, peak RSS of its process group, and what it holds."""
    cpu = rss = 0.0
    group = subprocess.run(["pgrep", "-g", str(pid)], check=False, capture_output=True, text=True).stdout.split()
    for child in {pid, *map(int, group)}:
        try:
            used, _, hwm = proc_stats(child)
        except FileNotFoundError:
            continue
        cpu, rss = cpu + used, max(rss, hwm)
    counts = {}
    for kind in ("flow_runs", "task_runs", "artifacts"):
        response = httpx.post(f"{api_url(PORT)}/{kind}/count", json={}, timeout=30)
        counts[kind] = response.json()
    events = httpx.post(f"{api_url(PORT)}/events/filter", json={"limit": 1}, timeout=30).json()["total"]
    return {"server_cpu_seconds": cpu, "server_peak_rss_mib": rss, "server_events": events, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--databases", type=int, default=1000)
    parser.add_argument("--active", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20, help="transactions/s per active database")
    parser.add_argument("--idle", type=float, default=30, help="seconds of the idle measurement")
    parser.add_argument("--load", type=float, default=60, help="seconds of writes")
    parser.add_argument("--interval", type=float, default=1.0, help="walship's sync interval")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--sides", default="walship,litestream")
    parser.add_argument(
        "--prefect", action="store_true", help="walship as a wal-ship-fleet flow run on a local Prefect server (SQLite)"
    )
    args = parser.parse_args()
    litestream()
    with tempfile.TemporaryDirectory(prefix="walship-fleet-") as tmp:
        work = Path(tmp)
        base = work / "base.db"
        create_database(base, 64 << 10, seed=1)
        connection = sqlite3.connect(base, isolation_level=None)
        connection.execute(MARKER_TABLE)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copies are of the file alone
        connection.close()
        server = start_server(work / "prefect", PORT, work / "server.log") if args.prefect else None
        try:
            if server is not None:
                wait_healthy(PORT, server)
            env = prefect_env(work / "prefect", PORT) if server is not None else None
            results = {side: run_side(side, work, base, args, env) for side in args.sides.split(",")}
            if server is not None:
                results["walship"].update(api_server(server.pid))
        finally:
            if server is not None:
                stop_group(server.pid)
    print(f"\n{args.databases} databases, {args.active} written at {args.rate:g} tx/s each for {args.load:g} s")
    print(f"(litestream {LS_VERSION}; loadavg {os.getloadavg()[1]:.2f})\n")
    print(f"{'':28}" + "".join(f"{side:>14}" for side in results))
    rows = [
        ("start-up (s)", "startup_seconds", 1),
        ("peak RSS (MiB)", "peak_rss_mib", 1),
        ("CPU, all idle (% of a core)", "idle_cpu_percent", 2),
        ("CPU, under load (%)", "load_cpu_percent", 1),
        ("lag p50 (s)", "lag_p50", 2),
        ("lag p99 (s)", "lag_p99", 2),
        ("lag max (s)", "lag_max", 2),
        ("markers durable / committed", None, 0),
    ]
    for label, key, digits in rows:
        if key is None:
            cells = [f"{r['durable']}/{r['tokens']}" for r in results.values()]
        else:
            cells = [f"{r[key]:.{digits}f}" for r in results.values()]
        print(f"{label:28}" + "".join(f"{c:>14}" for c in cells))
    if args.prefect:
        w = results["walship"]
        print(
            f"Prefect server (SQLite): {w['server_cpu_seconds']:.0f} CPU s, "
            f"peak RSS {w['server_peak_rss_mib']:.0f} MiB; "
            f"holds {w['flow_runs']} flow runs, {w['task_runs']} task runs, {w['artifacts']} artifacts, "
            f"{w['server_events']} events"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
