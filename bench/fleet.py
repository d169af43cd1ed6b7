"""Benchmark one process shipping a fleet: walship ship-many against one litestream replicate.

Each side gets its own copies of N small WAL-mode databases and ships them
all from one process into file replicas (local disk: the bench measures the
shippers, not a storage server), one side after the other:

    walship     walship --no-prefect ship-many 'DIR/*.db' --replica file:///.../{name}
    litestream  litestream replicate (0.5.17, build/bench/litestream-venv as bench.ship_lag
                installs it) with one ``dbs:`` entry per database, file replicas

    before      walship ship-many of another source tree (``--before``: a git worktree of an
                older revision), run by PYTHONPATH: the same-run baseline

Phases: start-up (until every database's replica holds its first object),
a settling wait past ``--park-after`` (so that idle databases are parked),
``--idle`` seconds with no writes (CPU of the shipper process: the idle
cost; its open descriptors at the end), then ``--load`` seconds of writes
to ``--active`` of the databases (spread over the fleet; bench.ship_lag_writer,
``--rate`` tx/s each, a marker token every 5th transaction; with
``--writer-processes K``, K bench.fleet_writer processes share them, as an
application serving many tenants does), then a drain.
Lag: from a marker's COMMIT returning to the mtime of the first replica file
holding it (files are written whole, then renamed). Peak RSS is the
shipper's VmHWM. At the end, with the shipper stopped, every written
database is restored and compared with its source (content digest).

``--warm``: the first window is a ``ship-many --once`` (Litestream: replicate
until every database has its first object, then SIGTERM), so that every
database has its generation and its caught-up record; then one marker commit
per written database while no shipper runs, and the measured window's
start-up lasts until those commits are in the replicas (bench.fleet_checks).
``--first-window-only`` stops after that first (cold) window.

    python -m bench.fleet [--databases 1000] [--active 20] [--rate 20] [--idle 30] [--load 60] [--warm]
"""

import argparse
import json
import os
import re
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
from bench.fleet_checks import commit_markers, descriptors, restored_equal, spread, wait_markers
from bench.ship_lag_report import pct
from bench.ship_lag_writer import MARKER_TABLE, TOKEN_PATTERN
from bench.workload import create_database, database_copies
from deployments.local_server import api_url, prefect_env, start_server, stop_group, wait_healthy

WALSHIP = Path(sys.executable).parent / "walship"
DRAIN_SECONDS = 5.0
MARKER_EVERY = 5
PORT = 4281  # the --prefect server's
# After --park-after: the last written databases parked (and parked again, when their end touched the files).
SETTLE_PAST_PARKING = 30.0


def start(
    side: str,
    dbs: list[Path],
    replicas: Path,
    args: argparse.Namespace,
    log: Path,
    env: dict[str, str] | None,
    once: bool = False,
) -> subprocess.Popen[bytes]:
    """The shipper; ``env``: walship as a flow run on the Prefect server it names, or the baseline's tree."""
    if side != "litestream":
        template = f"file://{replicas}/{{name}}"
        pattern = str(dbs[0].parent / "*.db")
        mode = "--prefect" if env and side == "walship" else "--no-prefect"
        argv = [str(WALSHIP), mode, "ship-many", pattern, "--replica", template, "--interval", str(args.interval)]
        argv += ["--once"] if once else ["--duration", "86400"]
        if side == "walship" and args.park_after is not None:
            argv += ["--park-after", str(args.park_after)]
    else:
        entries = "".join(
            f"  - path: {db}\n    replica:\n      type: file\n      path: {replicas / db.name}\n" for db in dbs
        )
        config = replicas.parent / "litestream.yml"
        config.write_text(f"logging:\n  level: warn\n  stderr: true\ndbs:\n{entries}")
        argv = [str(LS_VENV / "bin" / "litestream"), "replicate", "-config", str(config)]
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env or None
        )


def started(side: str, dbs: list[Path], replicas: Path) -> int:
    """How many databases have their first object in their replica."""
    suffix = ".ltx" if side == "litestream" else ".zst"
    return sum(any(p.name.endswith(suffix) for p in (replicas / db.name).rglob("*")) for db in dbs)


def cpu_over(pid: int, seconds: float) -> float:
    """The process's CPU use over ``seconds``, in % of one core."""
    cpu0, t0 = proc_stats(pid)[0], time.monotonic()
    time.sleep(seconds)
    return 100 * (proc_stats(pid)[0] - cpu0) / (time.monotonic() - t0)


def tokens_in(side: str, files: list[Path]) -> list[tuple[int, list[str]]]:
    """(mtime ns, tokens) of each replica file."""
    if not files:
        return []
    if side != "litestream":
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
    suffix = ".ltx" if side == "litestream" else ".zst"
    files = [p for db in active for p in (replicas / db.name).rglob(f"*{suffix}")]
    durable: dict[str, int] = {}
    for mtime, tokens in sorted(tokens_in(side, files)):
        for token in tokens:
            durable.setdefault(token, mtime)
    return [(durable[t] - ns) / 1e9 for t, ns in committed.items() if t in durable], len(committed)


def writers_argv(active: list[Path], logs: list[Path], args: argparse.Namespace) -> list[list[str]]:
    """A writer process per written database, or ``--writer-processes`` processes sharing them."""
    timing = ("--rate", str(args.rate), "--seconds", str(args.load), "--marker-every", str(MARKER_EVERY))
    if not args.writer_processes:
        return [
            [sys.executable, "-m", "bench.ship_lag_writer", str(db), "--writer", "1", *timing, "--log", str(log)]
            for db, log in zip(active, logs, strict=True)
        ]
    pairs = [f"{db}:{log}" for db, log in zip(active, logs, strict=True)]
    groups = [pairs[i :: args.writer_processes] for i in range(min(args.writer_processes, len(pairs)))]
    return [[sys.executable, "-m", "bench.fleet_writer", *timing, *group] for group in groups]


def stop(shipper: subprocess.Popen[bytes], after: float = 0.0) -> None:
    """SIGTERM (after ``after`` seconds of waiting for it to exit by itself), then SIGKILL after 300 s."""
    try:
        shipper.wait(timeout=after)
        return
    except subprocess.TimeoutExpired:
        pass
    os.killpg(shipper.pid, signal.SIGTERM)
    try:
        shipper.wait(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(shipper.pid, signal.SIGKILL)
        shipper.wait()


def first_window(
    side: str, dbs: list[Path], replicas: Path, args: argparse.Namespace, log: Path, env: dict[str, str] | None
) -> tuple[float | None, int]:
    """``--warm``'s first window: seconds until every database's replica holds its first object (None: not all
    did), and how many did."""
    began = time.monotonic()
    shipper = start(side, dbs, replicas, args, log, env, once=side != "litestream")
    try:
        while (done := started(side, dbs, replicas)) < len(dbs):
            if shipper.poll() is not None or time.monotonic() - began > args.startup_timeout:
                return None, done
            time.sleep(1)
        return time.monotonic() - began, done
    finally:
        if side == "litestream":
            stop(shipper)
        else:
            stop(shipper, after=args.startup_timeout)


def run_side(
    side: str, work: Path, base: Path, args: argparse.Namespace, env: dict[str, str] | None = None
) -> dict[str, Any]:
    here = work / side
    dbs = database_copies(here / "dbs", base, args.databases)
    replicas = here / "replicas"
    replicas.mkdir()
    log = here / "shipper.log"
    active = spread(dbs, args.active)
    result: dict[str, Any] = {}
    if args.warm:
        result["startup_seconds"], result["started"] = first_window(side, dbs, replicas, args, log, env)
        if args.first_window_only:
            return result
        markers = commit_markers(active)
    began = time.monotonic()
    shipper = start(side, dbs, replicas, args, log, env)
    logs = [here / f"w{i}.log" for i in range(len(active))]
    try:
        if args.warm:
            alive = lambda: shipper.poll() is None  # noqa: E731
            seconds, made = wait_markers(side, markers, replicas, tokens_in, alive, args.startup_timeout)
            result["warm_startup_seconds"], result["warm_started"] = seconds, made
            if seconds is None:
                result["error"] = f"{made} of {len(active)} pre-start commits shipped"
        else:
            while (done := started(side, dbs, replicas)) < len(dbs):
                if shipper.poll() is not None or time.monotonic() - began > args.startup_timeout:
                    result["error"] = f"{done} of {len(dbs)} started"
                    break
                time.sleep(1)
            else:
                result["startup_seconds"] = time.monotonic() - began
        if "error" in result:
            result["peak_rss_mib"] = proc_stats(shipper.pid)[2] if shipper.poll() is None else float("nan")
            return result
        time.sleep(args.settle)  # first snapshots settle; past --park-after, idle databases are parked
        result["idle_cpu_percent"] = cpu_over(shipper.pid, args.idle)
        result["idle_descriptors"] = descriptors(shipper.pid)
        cpu0, t0 = proc_stats(shipper.pid)[0], time.monotonic()
        writers = [
            subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL) for argv in writers_argv(active, logs, args)
        ]
        for writer in writers:
            writer.wait()
        time.sleep(DRAIN_SECONDS)
        result["load_cpu_percent"] = 100 * (proc_stats(shipper.pid)[0] - cpu0) / (time.monotonic() - t0)
        result["peak_rss_mib"] = proc_stats(shipper.pid)[2]
    finally:
        stop(shipper)
        if "error" in result:
            result["log_tail"] = log.read_text(errors="replace")[-1500:]
        print(f"{side}: {json.dumps(result)}", flush=True)
    values, committed = lags(side, active, replicas, logs)
    result.update(
        tokens=committed,
        durable=len(values),
        lag_p50=pct(values, 0.5),
        lag_p99=pct(values, 0.99),
        lag_max=max(values, default=float("nan")),
        restored=f"{restored_equal(side, active, replicas, env, WALSHIP)}/{len(active)}",
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


def cell(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.{digits}f}"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--databases", type=int, default=1000)
    parser.add_argument("--active", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20, help="transactions/s per active database")
    parser.add_argument("--idle", type=float, default=30, help="seconds of the idle measurement")
    parser.add_argument("--load", type=float, default=60, help="seconds of writes")
    parser.add_argument(
        "--writer-processes", type=int, help="processes writing the --active databases (default: one each)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="walship's sync interval")
    parser.add_argument("--startup-timeout", type=float, default=600)
    parser.add_argument("--sides", default="walship,litestream", help="of walship, before, litestream")
    parser.add_argument("--before", type=Path, help="the baseline's source tree (side 'before'), by PYTHONPATH")
    parser.add_argument("--park-after", type=float, help="walship's --park-after (default: its own)")
    parser.add_argument("--settle", type=float, help="start-up to idle phase, s (default: park-after + 30)")
    parser.add_argument("--warm", action="store_true", help="time the start-up of a second window (see above)")
    parser.add_argument(
        "--first-window-only", action="store_true", help="with --warm: time the first window only, then stop"
    )
    parser.add_argument(
        "--prefect", action="store_true", help="walship as a wal-ship-fleet flow run on a local Prefect server (SQLite)"
    )
    args = parser.parse_args()
    if args.settle is None:
        args.settle = (30.0 if args.park_after is None else args.park_after) + SETTLE_PAST_PARKING
    if args.first_window_only and not args.warm:
        parser.error("--first-window-only needs --warm")
    if "before" in args.sides and args.before is None:
        parser.error("side 'before' needs --before TREE")
    return args


def main() -> None:
    args = arguments()
    before_env = {**os.environ, "PYTHONPATH": str(args.before)} if args.before else None
    load_before = os.getloadavg()
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
            envs = {"walship": env, "before": before_env, "litestream": None}
            results = {side: run_side(side, work, base, args, envs[side]) for side in args.sides.split(",")}
            if server is not None:
                results["walship"].update(api_server(server.pid))
        finally:
            if server is not None:
                stop_group(server.pid)
    print(f"\n{args.databases} databases, {args.active} written at {args.rate:g} tx/s each for {args.load:g} s")
    loads = "/".join(f"{x:.1f}" for x in (*load_before, *os.getloadavg()))
    print(f"(litestream {LS_VERSION}; loadavg 1/5/15 min before, then after: {loads})\n")
    print(f"{'':28}" + "".join(f"{side:>14}" for side in results))
    rows = [
        ("start-up (s)", "startup_seconds", 1),
        ("start-up, 2nd window (s)", "warm_startup_seconds", 1),
        ("peak RSS (MiB)", "peak_rss_mib", 1),
        ("CPU, all idle (% of a core)", "idle_cpu_percent", 2),
        ("CPU, under load (%)", "load_cpu_percent", 1),
        ("lag p50 (s)", "lag_p50", 2),
        ("lag p99 (s)", "lag_p99", 2),
        ("lag max (s)", "lag_max", 2),
        ("descriptors, idle", "idle_descriptors", 0),
        ("markers durable / committed", None, 0),
        ("restored equal / written", "restored", 0),
    ]
    for label, key, digits in rows:
        if key is None:
            cells = [f"{r.get('durable', '-')}/{r.get('tokens', '-')}" for r in results.values()]
        else:
            cells = [cell(r.get(key), digits) for r in results.values()]
        print(f"{label:28}" + "".join(f"{c:>14}" for c in cells))
    for side, r in results.items():
        if "error" in r:
            print(f"{side}: {r['error']}")
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
