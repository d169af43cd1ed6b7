"""Benchmark issue 25's goals: a standby that follows its replica, and a kept copy caught up, with baselines.

    python -m bench.standby [--backends moto,seaweedfs] [--intervals 0.2,0.5] [--seconds 60] [--rate 500]
                            [--follow-mib 64] [--mib 256] [--behind 120] [--lead 5] [--skip-follow | --skip-catchup]
                            [--json]

Per backend (moto's server, SeaweedFS's `weed mini`; each in processes of their own on 127.0.0.1):

follow, once per ``--intervals``
    A source (``--follow-mib``) written at ``--rate`` tx/s by two bench.ship_lag_writer processes
    for ``--seconds``, shipped by `walship ship`, kept by `walship follow --interval S`; a reader
    process (bench.standby_reader) loops over a consistency query on the standby and notes when
    each marker becomes visible. Follower lag: a marker's COMMIT to its visibility in the standby.
    Baseline from the same run: the shipper's commit-to-durable lag, the marker's COMMIT to the
    first listing of the replica that shows the segment holding it (polled every 0.1 s; what a
    follower could see at best). Reader: reads, errors and inconsistent states (goal 0 and 0).

catch-up (bench.standby_catchup)
    A ``--mib`` source restored ``--lead`` s after the generation's snapshot, then left
    ``--behind`` s behind while the writers run and the shipper ships; then a full
    `walship restore` and `restore --delta` of the copy to the same sequence, in the same
    run: bytes downloaded (delta's over the bytes of the segments it applies) and seconds
    (delta's over the full restore's), both copies byte for byte equal.

Issue 25's goals: follower lag p99 <= 1.5 s at 500 tx/s; 0 errors, 0 inconsistent states in 10
minutes; catch-up downloads <= 1.1x its segments' bytes in <= 20 % of a full restore's time.
The machine is shared: read the ratios, and the load average printed with each run.
"""

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._common import BUILD, ROOT, database, proc_stats
from bench.standby_catchup import catch_up_run
from bench.standby_setup import (
    BALANCE_ROWS,
    BALANCE_START,
    WALSHIP,
    Backend,
    Lister,
    backend,
    finish_writers,
    prepare_source,
    start_shipper,
    start_writers,
    stop,
)
from walship.copies import read_copy_record

DRAIN_SECONDS = 30.0  # after the writers: the last markers still to become visible


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {"n": len(values), "p50": statistics.median(ordered), "p99": p99, "max": ordered[-1]}


def follow_run(server: Backend, base: Path, work: Path, interval: float, args: argparse.Namespace) -> dict[str, Any]:
    here = work / f"{server.name}-follow-{interval:g}"
    here.mkdir()
    source, standby, stopfile = here / "source.db", here / "standby.db", here / "stop"
    prepare_source(base, source)
    prefix = f"follow-{interval:g}"
    shipper = start_shipper(server, source, prefix, args.seconds + 600, here / "ship.log")
    argv = [WALSHIP, "--no-prefect", "follow", "--replica", server.replica(prefix), "--output", str(standby)]
    follow_log = (here / "follow.log").open("wb")
    follower = subprocess.Popen(
        [*argv, "--interval", str(interval)], env=server.env, cwd=ROOT, stdout=follow_log, stderr=subprocess.STDOUT
    )
    while read_copy_record(standby) is None:
        if follower.poll() is not None:
            sys.exit(f"walship follow failed: {(here / 'follow.log').read_text()[-2000:]}")
        time.sleep(0.1)
    lister = Lister(server, prefix)
    lister.start()
    reader_argv = [sys.executable, "-m", "bench.standby_reader", str(standby), "--stop", str(stopfile)]
    reader_argv += ["--total", str(BALANCE_ROWS * BALANCE_START), "--rows", str(BALANCE_ROWS)]
    reader = subprocess.Popen(reader_argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    if reader.stdout.readline().strip() != "reading":
        sys.exit("the standby's reader failed to start")
    os.sync()  # the copies' dirty pages written back before the load, not inside it
    cpu0 = {name: proc_stats(p.pid)[0] for name, p in (("follower", follower), ("shipper", shipper))}
    began = time.monotonic()
    sampler = CpuSampler(follower.pid)
    sampler.start()
    markers = finish_writers(start_writers(source, args.rate, args.seconds, here), here)
    loaded = time.monotonic() - began
    cpu1 = {name: proc_stats(p.pid)[0] for name, p in (("follower", follower), ("shipper", shipper))}
    sampler.done.set()
    hwm = proc_stats(follower.pid)[2]
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline and not _all_visible(standby, len(markers)):
        time.sleep(0.2)
    stopfile.touch()
    seen_report = json.loads(reader.communicate(timeout=60)[0])
    durable = lister.durable()
    stop(follower, "walship follow")
    stop(shipper, "walship ship")
    follow_log.close()
    seen: dict[str, int] = seen_report.pop("seen")
    follow_lag = [(seen[t] - ns) / 1e9 for t, ns in markers.items() if t in seen]
    ship_lag = [(durable[t] - ns) / 1e9 for t, ns in markers.items() if t in durable]
    return {
        "backend": server.name,
        "interval": interval,
        "seconds": round(loaded, 1),
        "markers": len(markers),
        "follower_lag": percentiles(follow_lag),
        "durable_lag": percentiles(ship_lag),
        "unseen": len(markers) - len(follow_lag),
        "reader": seen_report,
        "cpu_per_minute": {name: round((cpu1[name] - cpu0[name]) * 60 / loaded, 2) for name in cpu0},
        # The follower's CPU and lag in each minute of the load: whether they grow with the replica's segments.
        "follower_cpu_by_minute": sampler.by_minute(),
        "follower_lag_p99_by_minute": _p99_by_minute(markers, seen),
        "follower_peak_rss_mib": round(hwm, 1),
        "updates": _updates((here / "follow.log").read_text()),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


class CpuSampler(threading.Thread):
    """A process's CPU seconds, every ``every`` s until ``done``."""

    def __init__(self, pid: int, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.done = pid, every, threading.Event()
        self.samples: list[tuple[float, float]] = []

    def run(self) -> None:
        while True:
            self.samples.append((time.monotonic(), proc_stats(self.pid)[0]))
            if self.done.wait(self.every):
                return

    def by_minute(self) -> list[float]:
        """CPU seconds the process used in each whole minute after the first sample."""
        start = self.samples[0][0]
        at = [max(cpu for t, cpu in self.samples if t <= start + 60 * m + 0.5) for m in range(self.minutes() + 1)]
        return [round(b - a, 2) for a, b in itertools.pairwise(at)]

    def minutes(self) -> int:
        return int((self.samples[-1][0] - self.samples[0][0] + 0.5) // 60)


def _p99_by_minute(markers: dict[str, int], seen: dict[str, int]) -> list[float]:
    """The follower lag's p99 of the markers committed in each minute of the load."""
    if not markers:
        return []
    start, minutes = min(markers.values()), dict[int, list[float]]()
    for token, ns in markers.items():
        if token in seen:
            minutes.setdefault(int((ns - start) // 60e9), []).append((seen[token] - ns) / 1e9)
    return [round(percentiles(minutes[m])["p99"], 3) for m in sorted(minutes)]


def _updates(said: str) -> dict[str, Any]:
    """What the follower's own lines say of its updates: segments applied in each, and its lag from the capture."""
    found = re.findall(r"\((\d+) segments applied;.*?; ([\d.]+) s after its capture\)", said)
    sizes, lags = [int(n) for n, _ in found], [float(lag) for _, lag in found]
    return {"count": len(found), "segments": percentiles([float(n) for n in sizes]), "lag": percentiles(lags)}


def _all_visible(standby: Path, markers: int) -> bool:
    import sqlite3  # noqa: PLC0415 - the reader's way: read-only, a transaction of its own

    connection = sqlite3.connect(f"file:{standby}?mode=ro", uri=True, timeout=10)
    try:
        return bool(connection.execute("SELECT count(*) FROM ship_lag_marker").fetchone()[0] >= markers)
    except sqlite3.Error:
        return False
    finally:
        connection.close()


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['settings']}\n")
    if report["follow"]:
        print(
            "| backend | --interval | markers | follower lag p50 / p99 / max s | durable lag p50 / p99 / max s", end=""
        )
        print(" | p99 over durable p99 | reads | errors | inconsistent | follower CPU s/min | load avg 1/5 min |")
        print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|")
        for run in report["follow"]:
            f, d, r = run["follower_lag"], run["durable_lag"], run["reader"]
            ratio = f["p99"] / d["p99"] if d.get("p99") else float("nan")
            print(
                f"| {run['backend']} | {run['interval']:g} | {run['markers']} (unseen {run['unseen']}) "
                f"| {f['p50']:.2f} / {f['p99']:.2f} / {f['max']:.2f} | {d['p50']:.2f} / {d['p99']:.2f} / "
                f"{d['max']:.2f} | **{ratio:.2f}** | {r['reads']} | {r['errors']} | {r['inconsistent']} "
                f"| {run['cpu_per_minute']['follower']:.1f} | {run['loadavg'][0]:.2f} / {run['loadavg'][1]:.2f} |"
            )
    if report["catchup"]:
        print("\n| backend | lead s | behind s | segments applied | delta bytes / segment bytes ", end="")
        print("| delta bytes / full bytes | delta s | full s | delta s / full s | snapshot alone s ", end="")
        print("| delta s / snapshot alone s | same bytes | load avg 1/5 min |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for run in report["catchup"]:
            print(
                f"| {run['backend']} | {run.get('lead', 5):.0f} | {run['behind']:.0f} | {run['segments']} "
                f"| **{run['delta_over_segments']:.3f}** "
                f"| {run['delta_over_full_bytes']:.3f} | {run['delta_s']:.2f} | {run['full_s']:.2f} "
                f"| **{run['delta_over_full_s']:.3f}** | {run.get('snapshot_s', float('nan')):.2f} "
                f"| {run.get('delta_over_snapshot_s', float('nan')):.2f} | {run['identical']} "
                f"| {run['loadavg'][0]:.2f} / {run['loadavg'][1]:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="moto,seaweedfs", help="comma-separated (default moto,seaweedfs)")
    parser.add_argument("--intervals", default="0.2,0.5", help="follow --interval values (default 0.2,0.5)")
    parser.add_argument("--seconds", type=float, default=60, help="writing per follow run (default 60)")
    parser.add_argument("--rate", type=float, default=500, help="transactions per second in total (default 500)")
    parser.add_argument("--follow-mib", type=int, default=64, help="database for the follow runs (default 64)")
    parser.add_argument("--mib", type=int, default=256, help="database for the catch-up (default 256)")
    parser.add_argument("--behind", type=float, default=120, help="seconds the copy is left behind (default 120)")
    parser.add_argument(
        "--lead",
        type=float,
        default=5,
        help="seconds of writes between the generation's snapshot and the copy's restore (default 5: the delta's worst "
        "case, a full restore replaying nearly the same segments)",
    )
    parser.add_argument("--skip-follow", action="store_true")
    parser.add_argument("--skip-catchup", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    follow_base = None if args.skip_follow else database(args.follow_mib)[0]
    catchup_base = None if args.skip_catchup else database(args.mib)[0]
    report: dict[str, Any] = {"follow": [], "catchup": []}
    report["settings"] = (
        f"{args.rate:g} tx/s in 2 writer processes; follow runs: {args.follow_mib} MiB, {args.seconds:g} s of writes; "
        f"catch-up: {args.mib} MiB restored {args.lead:g} s past its snapshot, left {args.behind:g} s behind; "
        f"{os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(dir=BUILD, prefix="standby-") as tmp:
        work = Path(tmp)
        for name in args.backends.split(","):
            with backend(name) as server:
                for interval in [] if follow_base is None else [float(i) for i in args.intervals.split(",")]:
                    assert follow_base is not None
                    print(f"{name}: follow --interval {interval:g} ...", file=sys.stderr, flush=True)
                    report["follow"].append(follow_run(server, follow_base, work, interval, args))
                if catchup_base is not None:
                    print(f"{name}: catch-up, {args.behind:g} s behind ...", file=sys.stderr, flush=True)
                    report["catchup"].append(catch_up_run(server, catchup_base, work, args))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
