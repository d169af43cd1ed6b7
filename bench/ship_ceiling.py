"""How much WAL each shipper sustains: raise the write rate until commit-to-durable lag p99 passes 5 s.

Steps first raise the commit rate of two writer processes (bulk inserts of the
workload's transactions), then, at the highest rate, the size of each
transaction (``--batch`` workload transactions per commit). At every step
walship's shipping loop (core only, as in bench.ship_lag) and Litestream ship
the same load one after the other against one moto server. A side's ceiling
is the WAL rate of its last step whose lag p99 stayed within the limit with
every marker durable. The WAL rate of a step is what walship captured during
its load window (every committed frame, exactly), over that window; both
sides get the same offered load.

    python -m bench.ship_ceiling [--seconds 20] [--limit 5]
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._common import BUILD, database, litestream
from bench.ship_lag import DRAIN_SECONDS, WRITERS, durable, run_side, use_moto_credentials
from bench.ship_lag_report import lags, pct
from bench.ship_lag_s3 import RecordingS3

# (commits per second, workload transactions per commit)
# Plaintext walship against Litestream: ship_lag's encrypted side is its own question (--age there).
SIDES = ("walship", "litestream")
STEPS = [(500, 1), (1000, 1), (2000, 1), (4000, 1), (2000, 4), (2000, 16), (2000, 64)]


def wal_mb_per_second(side: dict[str, Any]) -> float:
    t0, t1 = (float(t) for t in side["windows"][:2])
    captured: list[int] = [
        s["raw_size"] for s in side["events"]["segments"] if t0 / 1e9 <= s["captured_at"] <= t1 / 1e9
    ]
    return sum(captured) / 1e6 / ((t1 - t0) / 1e9)


def step(rate: int, batch: int, source: Path, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    shape = argparse.Namespace(**vars(args), rate=rate, batch=batch, writers=WRITERS, drain=DRAIN_SECONDS)
    with tempfile.TemporaryDirectory(dir=BUILD, prefix="ceiling-") as tmp:
        server = RecordingS3(Path(tmp) / "bodies")
        sides = {}
        for side in SIDES:
            print(f"  {side}: {rate} commits/s x {batch} ...", file=sys.stderr)
            sides[side] = run_side(side, server, source, Path(tmp), shape)
            sides[side]["durable"], _ = durable(server, side, Path(tmp))
        server.stop()
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ship_ceiling", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="seconds of writes per step (default 20)")
    parser.add_argument("--idle", type=float, default=5, help="seconds after the writes per step (default 5)")
    parser.add_argument("--limit", type=float, default=5.0, help="lag p99 ceiling, seconds (default 5)")
    parser.add_argument("--interval", type=float, default=1.0, help="walship sync interval (default 1)")
    parser.add_argument("--mib", type=int, default=16, help="database size in MiB (default 16)")
    args = parser.parse_args()
    args.sample = 5.0
    if not shutil.which("/usr/bin/time"):
        sys.exit("this benchmark needs GNU time: run 'apt-get install time'")
    BUILD.mkdir(parents=True, exist_ok=True)
    litestream()
    source, _ = database(args.mib)
    use_moto_credentials()
    ceiling: dict[str, float] = dict.fromkeys(SIDES, 0.0)
    failed: set[str] = set()
    print("| commits/s x batch | commits done | WAL MB/s | walship lag p99 (s) | litestream lag p99 (s) |")
    print("|---|---:|---:|---:|---:|")
    for rate, batch in STEPS:
        sides = step(rate, batch, source, args)
        mb = wal_mb_per_second(sides["walship"])
        cells = []
        for name, side in sides.items():
            lag = lags(side)
            p99 = pct(lag, 0.99)
            within = p99 <= args.limit and len(lag) == len(side["markers"])
            if within and name not in failed:
                ceiling[name] = max(ceiling[name], mb)  # bigger transactions can offer less WAL per second
            else:
                failed.add(name)
            missing = len(side["markers"]) - len(lag)
            cells.append(f"{p99:.2f}" + (f" ({missing} markers never durable)" if missing else ""))
        done = sides["walship"]["transactions"]
        print(f"| {rate} x {batch} | {done} | {mb:.1f} | {cells[0]} | {cells[1]} |", flush=True)
        if failed == set(SIDES):
            break
    for name, best in ceiling.items():
        verdict = "passed the limit at a later step" if name in failed else "never passed the limit: raise the steps"
        print(f"\n{name}: sustained up to {best:.1f} MB/s of WAL with lag p99 <= {args.limit:g} s ({verdict})")
    print(f"5-minute load average at the end: {os.getloadavg()[1]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
