"""``python -m tests.torture --seed S [--length N]`` replays one seed; ``--for T`` runs seeds for T seconds.

Exit status 1 when any seed failed; each failing seed's directory is kept
and its replay command printed. Add a seed that ever failed to
``tests/torture/seeds.py``: ``make test`` replays it from then on.
"""

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.s3servers import MotoS3
from tests.torture.checks import check
from tests.torture.run import TortureRun
from tests.torture.schedule import KINDS, VERSION, plan
from tests.torture.shipper import HungError


def torture(
    seed: int, seconds: float, workdir: Path, moto: MotoS3 | None, version: int = VERSION
) -> tuple[TortureRun, list[str]]:
    """Run one seed in ``workdir`` and check it; the failures (empty when it held)."""
    run = TortureRun(plan(seed, seconds, version), seconds, workdir, moto)
    with run.storage(), run.spool_disk():
        try:
            run.run()
        except HungError as hung:
            failures = [str(hung)]  # the run stopped there: what the checks would find follows from it
        else:
            failures = []
        finally:
            run.stop_everything()
        failures = failures or check(run)
        if failures:
            run.keep_replica()
        return run, failures


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.torture")
    parser.add_argument("--seed", type=int, help="one seed (default: random seeds)")
    parser.add_argument("--length", type=float, default=12.0, help="each schedule's length in seconds")
    parser.add_argument("--version", type=int, choices=sorted(KINDS), default=VERSION, help="schedule version")
    parser.add_argument("--for", dest="total", type=float, default=0.0, help="run seeds for this many seconds")
    parser.add_argument("--verbose", action="store_true", help="print what happened in every seed")
    parser.add_argument("--dir", type=Path, default=None, help="where runs are kept (default: a temporary dir)")
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="walship-torture-"))
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.total
    seeds = [args.seed] if args.seed is not None else None
    failed: list[int] = []
    ran = two = 0
    with MotoS3() as moto:
        while True:
            seed = seeds.pop() if seeds else random.SystemRandom().randrange(1, 10**6)
            started = time.monotonic()
            run, failures = torture(seed, args.length, root / f"seed-{seed}", moto, args.version)
            ran += 1
            two += run.plan.second_replica
            took = time.monotonic() - started
            if failures:
                failed.append(seed)
                print(f"seed {seed}: FAILED in {took:.0f} s ({root / f'seed-{seed}'})", flush=True)
                print(f"  {run.plan}", flush=True)
                for line in run.happened:
                    print(f"  {line}", flush=True)
                for failure in failures:
                    print(f"  {failure}", flush=True)
                print(f"  replay: make torture SEED={seed} LENGTH={args.length:g} VERSION={args.version}", flush=True)
            else:
                replicas = ", two replicas" if run.plan.second_replica else ""
                print(f"seed {seed}: ok in {took:.0f} s ({len(run.happened)} events{replicas})", flush=True)
                for line in run.happened if args.verbose else []:
                    print(f"  {line}", flush=True)
                shutil.rmtree(root / f"seed-{seed}", ignore_errors=True)
            if args.seed is not None or time.monotonic() >= deadline:
                break
    which = f": {', '.join(map(str, failed))}" if failed else ""
    print(f"{ran} seeds ({two} with two replicas), {len(failed)} failed{which}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
