"""Benchmark one shipper with several replicas (issue 26): two replicas against one, and a replica down.

compare  run A ships to one replica (s3: the bench's moto server over HTTP on 127.0.0.1), run B to two
         (s3: the same server, another bucket; file: a local directory), each from a fresh copy of the same
         database under the same writers (bench.ship_lag's: ``--rate`` tx/s for ``--seconds``). Per replica
         the commit-to-storage lag of the markers; the shipper's CPU (writers plus 5 s, and its whole life);
         the bytes it read from the WAL (bench/wal_reads.c) against the raw WAL bytes its segments hold.
outage   two replicas (s3 through a TcpProxy, file); ``--before`` s into the load the proxy stalls (a storage
         that hangs) or stops (refused connections) for ``--outage`` s, then the writers go on ``--after`` s.
         The file replica's lag before/during/after, how long the s3 replica took to catch up, their
         generations; then each replica restored and compared with the source.

    python -m bench.ship_replicas [--seconds 60] [--rate 500] [--outage 60] [--outage-mode stall|stop]
        [--before 20] [--after 40] [--rounds 1] [--skip-outage] [--skip-compare] [--keep]

Goals: lag p99 <= 1 s to each replica; CPU <= 1.3x one replica's; no extra reads of the WAL; with one
replica down, the other's lag p99 unchanged (within 10 %). Results: a table here, JSON in
build/bench/ship_replicas.json.
"""

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._common import BUILD, ROOT, database
from bench.ship_lag import use_moto_credentials
from bench.ship_lag_report import TARGET_P99, pct
from bench.ship_lag_s3 import RecordingS3
from bench.ship_replicas_report import print_compare, print_outage
from bench.ship_replicas_run import Outage, ship
from bench.ship_replicas_stored import Replica
from bench.workload import content_digest
from tests.tcpproxy import TcpProxy

RESULTS = BUILD / "ship_replicas.json"


def lag_stats(run: dict[str, Any], replica: str, since: int = 0, until: int = 1 << 62) -> dict[str, Any]:
    """Lag percentiles (s) of the markers committed in [since, until), and how many never reached ``replica``."""
    durable = run["received"][replica]["durable"]
    chosen = {t: ns for t, ns in run["markers"].items() if since <= ns < until}
    lags = [(durable[t] - ns) / 1e9 for t, ns in chosen.items() if t in durable]
    stats = {"markers": len(chosen), "missing": len(chosen) - len(lags)}
    return stats | {"p50": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": pct(lags, 1.0)}


def summary(run: dict[str, Any]) -> dict[str, Any]:
    first = run["replicas"][0].name
    captured = run["received"][first]["wal_bytes"]
    received = {
        name: lag_stats(run, name) | {k: got[k] for k in ("wal_bytes", "objects", "generations")}
        for name, got in run["received"].items()
    }
    return {
        "replicas": {r.name: r.url for r in run["replicas"]},
        "transactions": run["transactions"],
        "writer_p99_ms": pct(run["latencies"], 0.99) * 1e3,
        "received": received,
        "cpu_load_s": run["cpu_load"],
        "cpu_total_s": run["cpu_total"],
        "rss_mib": run["rss_mib"],
        "reads": run["reads"],
        "wal_read_per_captured": run["reads"].get("wal_bytes", float("nan")) / captured if captured else float("nan"),
        "exit_code": run["exit_code"],
        "ended_before_sigterm": run["ended_before_sigterm"],
        "said": run["said"],
        "stdout": run["stdout"],
        "warnings": run["warnings"],
        "loadavg": run["loadavg"],
    }


def compare(server: RecordingS3, source: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    rounds = []
    for n in range(args.rounds):
        runs: dict[str, dict[str, Any]] = {}
        # Alternate who goes first: load on a shared machine drifts within a round.
        for side in ("A", "B") if n % 2 == 0 else ("B", "A"):
            name = f"{side}{n + 1}"
            bucket = f"replicas-{name.lower()}"
            server.create_bucket(bucket)
            replicas = [
                Replica("s3", f"s3://{bucket}/walship?endpoint={server.endpoint}", bucket=bucket, prefix="walship")
            ]
            if side == "B":
                replicas.append(Replica("file", (work / f"{name}-file").as_uri(), path=work / f"{name}-file"))
            print(
                f"compare, round {n + 1}, run {side}: {len(replicas)} replica(s), {args.seconds:g} s ...",
                file=sys.stderr,
            )
            run = ship(
                name, source, replicas, server, work, rate=args.rate, seconds=args.seconds, interval=args.interval
            )
            runs[side] = summary(run)
        rounds.append(runs)
    return {"rounds": rounds, "ratios": ratios(rounds)}


def ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, float]:
    """B over A, the median over the rounds (a round's two runs ran back to back) where both shippers exited 0."""
    rounds = [r for r in rounds if r["A"]["exit_code"] == 0 and r["B"]["exit_code"] == 0]
    if not rounds:
        return dict.fromkeys(("cpu_load", "cpu_total", "s3_lag_p99", "wal_read_per_captured", "rounds"), math.nan)
    measures: dict[str, Callable[[dict[str, Any]], float]] = {
        "cpu_load": lambda s: float(s["cpu_load_s"]),
        "cpu_total": lambda s: float(s["cpu_total_s"]),
        "s3_lag_p99": lambda s: float(s["received"]["s3"]["p99"]),
        "wal_read_per_captured": lambda s: float(s["wal_read_per_captured"]),
    }
    return {k: statistics.median(m(r["B"]) / m(r["A"]) for r in rounds) for k, m in measures.items()} | {
        "rounds": len(rounds)
    }


def outage(server: RecordingS3, source: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    bucket = "replicas-outage"
    server.create_bucket(bucket)
    port = urlsplit(server.endpoint).port
    assert port is not None
    with TcpProxy("127.0.0.1", port) as proxy:
        s3 = Replica("s3", f"s3://{bucket}/walship?endpoint={proxy.endpoint}", bucket=bucket, prefix="walship")
        replicas = [s3, Replica("file", (work / "outage-file").as_uri(), path=work / "outage-file")]
        down = Outage(proxy, args.before, args.outage, args.outage_mode)
        seconds = args.before + args.outage + args.after
        print(
            f"outage: {seconds:g} s of writes, s3 down ({args.outage_mode}) from {args.before:g} s "
            f"for {args.outage:g} s ...",
            file=sys.stderr,
        )
        run = ship(
            "outage",
            source,
            replicas,
            server,
            work,
            rate=args.rate,
            seconds=seconds,
            interval=args.interval,
            spool_cap=args.spool_cap,
            outage=down,
        )
        restored = {r.name: restore(r, run["db"], work) for r in replicas}
    w = run["windows"]
    spans = {"before": (w["load"], w["start"]), "during": (w["start"], w["end"]), "after": (w["end"], w["writers_end"])}
    windows = {name: {r.name: lag_stats(run, r.name, *span) for r in replicas} for name, span in spans.items()}
    s3_durable = run["received"]["s3"]["durable"]
    before_resume = [t for t, ns in run["markers"].items() if ns < w["end"]]
    drained = None
    if all(t in s3_durable for t in before_resume):
        drained = (max(s3_durable[t] for t in before_resume) - w["end"]) / 1e9
    back = None  # from this marker on (committed after the resume) every one reached s3 within the lag target
    for token, ns in sorted(((t, ns) for t, ns in run["markers"].items() if ns >= w["end"]), key=lambda m: -m[1]):
        if token not in s3_durable or (s3_durable[token] - ns) / 1e9 > TARGET_P99:
            break
        back = (ns - w["end"]) / 1e9
    cpu, at = run["cpu_at"], {"before": ("load", "start"), "during": ("start", "end"), "after": ("end", "writers_end")}
    cpu_rate = {name: (cpu[b] - cpu[a]) / ((w[b] - w[a]) / 1e9) for name, (a, b) in at.items()}
    healthy = windows["during"]["file"]["p99"] / windows["before"]["file"]["p99"]
    generations = {name: got["generations"] for name, got in run["received"].items()}
    return {
        "mode": args.outage_mode,
        "seconds": {"before": args.before, "outage": args.outage, "after": args.after},
        "outage_took_s": (w["end"] - w["start"]) / 1e9,
        "summary": summary(run),
        "windows": windows,
        "shipper_cpu_per_second": cpu_rate,
        "file_p99_during_over_before": healthy,
        "file_p99_after_over_before": windows["after"]["file"]["p99"] / windows["before"]["file"]["p99"],
        "s3_backlog_drained_s": drained,
        "s3_lag_back_under_target_s": back,
        "drain_after_writers_s": (w["drained"] - w["writers_end"]) / 1e9,
        "generations": generations,
        "same_generation": len({tuple(g) for g in generations.values()}) == 1 and len(generations["s3"]) == 1,
        "restores": restored,
    }


def restore(replica: Replica, source: Path, work: Path) -> dict[str, Any]:
    """``walship restore`` of the replica's newest state, compared with the source (row counts, content digest)."""
    out = work / f"restored-{replica.name}.db"
    env = {**os.environ, "PREFECT_API_URL": "", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "walship_cli", "restore", "--replica", replica.url, "--output", str(out)]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - started
    result: dict[str, Any] = {
        "exit_code": proc.returncode,
        "seconds": took,
        "said": (proc.stdout + proc.stderr).strip()[-600:],
    }
    result["source_rows"] = _rows(source)
    if proc.returncode == 0:
        result["rows"] = _rows(out)
        result["equal"] = result["rows"] == result["source_rows"] and content_digest(out) == content_digest(source)
    else:
        result["equal"] = False
    return result


def _rows(db: Path) -> dict[str, int]:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = ("ledger", "orders", "ship_lag_marker")
        return {t: connection.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ship_replicas", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="seconds of writes in each compare run (default 60)")
    parser.add_argument("--rate", type=float, default=500, help="transactions per second, all writers (default 500)")
    parser.add_argument("--outage", type=float, default=60, help="seconds the s3 replica is down (default 60)")
    parser.add_argument(
        "--outage-mode",
        choices=("stall", "stop"),
        default="stall",
        help="the proxy hangs (stall) or refuses (stop); default stall",
    )
    parser.add_argument("--before", type=float, default=20, help="seconds of writes before the outage (default 20)")
    parser.add_argument("--after", type=float, default=40, help="seconds of writes after it (default 40)")
    parser.add_argument(
        "--spool-cap", type=float, help="walship ship --spool-cap MIB in the outage run (default: walship's)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="walship ship --interval (default 1)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="compare rounds, alternating which run goes first (default 1)"
    )
    parser.add_argument("--mib", type=int, default=16, help="database size in MiB (default 16)")
    parser.add_argument("--skip-compare", action="store_true", help="only the outage run")
    parser.add_argument("--skip-outage", action="store_true", help="only the compare runs")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, replicas) under build/bench"
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: the shipper and writers this started are killed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    BUILD.mkdir(parents=True, exist_ok=True)
    source, _ = database(args.mib)
    use_moto_credentials()
    work = Path(tempfile.mkdtemp(dir=BUILD, prefix="replicas-"))
    server = RecordingS3(work / "bodies")
    results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count()}
    try:
        if not args.skip_compare:
            results["compare"] = compare(server, source, work, args)
            print_compare(results["compare"], args)
        if not args.skip_outage:
            results["outage"] = outage(server, source, work, args)
            print_outage(results["outage"])
    finally:
        server.stop()
        RESULTS.write_text(json.dumps(results, indent=1, default=str))
        print(f"\nJSON: {RESULTS}" + (f"; work directory kept: {work}" if args.keep else ""))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
