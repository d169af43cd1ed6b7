"""A process worker for prefect.yaml's work pool, with the settings that make ad hoc runs start fast.

    WALSHIP_PROJECT_DIR=/opt/walship .venv/bin/python -m deployments.worker [--pool walship] [worker options]

It replaces itself with ``prefect worker start`` (same pid, same signals), so
a service manager sees the worker itself. Every option after the pool is
passed on (``--work-queue``, ``--run-once``...). A setting already in the
environment wins: FAST_RUNS are defaults, not overrides. docs/OPERATIONS.md,
"Fast ad hoc runs", has the measurements behind each value.
"""

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from deployments.config import ROOT

BIN = Path(sys.executable).parent
POOL = "walship"

__all__ = ["FAST_RUNS", "POOL", "worker_argv", "worker_env"]

# The default poll is every 10 s: an ad hoc run waited 5 s on average, 10 s at
# worst, before a worker even saw it. One poll a second is one small API query
# a second per worker, which a local server or PostgreSQL barely notices.
# serve.py's runner has its own poll with the same 10 s default.
FAST_RUNS = {
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
}


def worker_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with FAST_RUNS filled in where unset."""
    env = dict(os.environ if base is None else base)
    for name, value in FAST_RUNS.items():
        env.setdefault(name, value)
    # prefect.yaml's pull step changes into this directory: the checkout this module runs from.
    env.setdefault("WALSHIP_PROJECT_DIR", str(ROOT))
    return env


def worker_argv(pool: str = POOL, extra: Sequence[str] = ()) -> list[str]:
    return [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process", *extra]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=POOL, help=f"the work pool to serve (default {POOL}, as prefect.yaml says)")
    args, extra = parser.parse_known_args(argv)
    command = worker_argv(args.pool, extra)
    os.execve(command[0], command, worker_env())  # noqa: S606 - a fixed executable, no shell


if __name__ == "__main__":
    main()
