"""What Prefect costs a CLI command: the same snapshot and restore run directly and as flow runs.

Three ways, same database and local-directory replica, each command run in a
fresh process as an operator would:

    direct    walship --no-prefect ...        (the core; what the CLI does with no API configured)
    server    walship --prefect ...           (flow runs reported to a local `prefect server` this bench starts)
    imports   python -X importtime -c "import flows.<name>"   (what each flow module costs to import)

    python -m bench.cli_overhead [--mib 32] [--repeat 3]

It says whether Prefect's bytecode is precompiled (``make install`` does it):
where Python may not write .pyc files (PYTHONDONTWRITEBYTECODE, a read-only
venv) a flow run otherwise compiles Prefect from source each time.
"""

import argparse
import importlib.util
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import BUILD, ROOT
from bench.workload import content_digest, create_database
from deployments.local_server import prefect_env, start_server, stop_group, wait_healthy

WALSHIP = str(Path(sys.executable).parent / "walship")
FLOWS = ["snapshot", "restore", "ship", "verify", "retention", "snapshot_many"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(argv: list[str], env: dict[str, str] | None) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - started


def import_seconds(module: str) -> tuple[float, float]:
    """Seconds to import ``module`` in a fresh python, and of that the part that is Prefect's own import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    total = prefect = 0.0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if match and not match[2]:  # top-level imports only: their cumulative times add up
            total += int(match[1]) / 1e6
        if match and match[3] == "prefect":  # wherever it is first imported from
            prefect = max(prefect, int(match[1]) / 1e6)
    return total, prefect


def prefect_precompiled() -> bool:
    """Whether Prefect's package has its bytecode beside it (found without importing Prefect)."""
    spec = importlib.util.find_spec("prefect")
    return spec is not None and spec.origin is not None and Path(importlib.util.cache_from_source(spec.origin)).exists()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=32, help="database size (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command per mode (default 3)")
    args = parser.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD, prefix="cli-") as tmp:
        work = Path(tmp)
        database = work / "app.db"
        create_database(database, args.mib << 20, seed=5)
        port = free_port()
        env = prefect_env(work / "prefect", port)
        server = start_server(work / "prefect", port, work / "server.log")
        try:
            wait_healthy(port, server)
            direct_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
            times: dict[tuple[str, str], list[float]] = {}
            for n in range(args.repeat):
                for mode, flag, mode_env in (("direct", "--no-prefect", direct_env), ("server", "--prefect", env)):
                    replica = f"file://{work / f'{mode}-{n}'}"
                    output = work / f"{mode}-{n}.db"
                    snap = timed([WALSHIP, flag, "snapshot", str(database), "--replica", replica], mode_env)
                    rest = timed([WALSHIP, flag, "restore", "--replica", replica, "--output", str(output)], mode_env)
                    if content_digest(output) != content_digest(database):
                        sys.exit(f"FAIL: the {mode} restore differs from the source")
                    times.setdefault((mode, "snapshot"), []).append(snap)
                    times.setdefault((mode, "restore"), []).append(rest)
        finally:
            stop_group(server.pid)
        shutil.rmtree(work / "prefect", ignore_errors=True)
    bytecode = "precompiled" if prefect_precompiled() else "not precompiled"
    print(f"\n{args.mib} MiB database, file:// replica; median of {args.repeat} (seconds, whole command)")
    print(f"Prefect's bytecode: {bytecode}\n")
    print("| command | direct (--no-prefect) | flow run, local server (--prefect) | Prefect's overhead |")
    print("|---|---:|---:|---:|")
    for command in ("snapshot", "restore"):
        direct = statistics.median(times[("direct", command)])
        served = statistics.median(times[("server", command)])
        print(f"| {command} | {direct:.2f} | {served:.2f} | {served - direct:+.2f} |")
    print(f"\nmedian of {args.repeat}\n\n| module | import (s) | of which `import prefect` (s) |\n|---|---:|---:|")
    for name in ["walship_cli", *(f"flows.{flow}" for flow in FLOWS)]:
        samples = [import_seconds(name) for _ in range(args.repeat)]  # one import is as noisy as one command
        total, prefect = (statistics.median(sample[i] for sample in samples) for i in (0, 1))
        print(f"| {name} | {total:.2f} | {prefect:.2f} |")


if __name__ == "__main__":
    main()
