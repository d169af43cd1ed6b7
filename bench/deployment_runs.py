"""Where the time of an ad hoc deployment run goes, through a local process worker.

    .venv/bin/python -m bench.deployment_runs [--runs 5] [--variants baseline,fast,direct,serve] [--logs]

Starts a real `prefect server` (PREFECT_HOME under build/, a free port), one
process work pool and worker per variant, and deploys prefect.yaml's
snapshot-hourly and restore-adhoc into each (as `<name>-<variant>`, no
schedule, site values pointed at a 4 MiB database and a file:// replica);
a serve variant runs deployments/serve.py for them instead (no worker).
Then, one run at a time and variants taking turns, it creates ad hoc runs
through the API and reads each run's state history: created -> Pending (a
worker picked it up) -> Running (its process started, imported the flow) ->
Completed. Every restore is compared with the source. Timings live here,
never in tests.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.workload import content_digest, create_database
from deployments.config import PREFECT_YAML, ROOT, with_site
from deployments.local_server import prefect_env, start_server, stop_group, wait_healthy, wait_served
from deployments.worker import FAST_RUNS, worker_argv, worker_env

BIN = Path(sys.executable).parent
MEASURED = ("snapshot-hourly", "restore-adhoc")


@dataclass
class Variant:
    """A work pool, the worker that serves it and the job variables its deployments get."""

    name: str
    about: str
    worker_env: Callable[[dict[str, str]], dict[str, str]]
    job_variables: dict[str, Any] = field(default_factory=dict)
    # Served by deployments/serve.py (no pool, no worker) under prefect.yaml's own names.
    serve: bool = False

    @property
    def pool(self) -> str:
        return f"walship-{self.name}"

    def deployment(self, name: str) -> str:
        return name if self.serve else f"{name}-{self.name}"


def _today(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in FAST_RUNS}


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("baseline", "Prefect's defaults: a 10 s worker poll", _today),
        Variant("fast", "the shipped worker command (deployments.worker): FAST_RUNS", worker_env),
        # One Python start instead of two: the engine runs the pull step itself.
        Variant(
            "direct",
            "FAST_RUNS + job variable command: the engine without the workspace supervisor",
            worker_env,
            {"command": f"{BIN / 'python'} -m prefect.engine"},
        ),
        Variant("serve", "deployments/serve.py (make serve's way) with FAST_RUNS", worker_env, serve=True),
        # Both serve variants register the same names: run one or the other.
        Variant("serve-baseline", "deployments/serve.py with Prefect's 10 s poll", _today, serve=True),
    )
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Api:
    def __init__(self, port: int) -> None:
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30)

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        for attempt in range(6):
            response = self.client.request(method, path, json=body)
            if response.status_code not in (429, 503):  # a busy SQLite server, for a moment
                break
            time.sleep(0.5 * 2**attempt)
        response.raise_for_status()
        return response.json()


def _prefect(env: dict[str, str], *argv: str) -> None:
    result = subprocess.run(
        [str(BIN / "prefect"), *argv], cwd=ROOT, env=env, check=False, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(f"prefect {' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}")


def deploy(variant: Variant, site: dict[str, object], work: Path, env: dict[str, str]) -> None:
    """prefect.yaml's measured deployments, renamed for the variant, into its pool."""
    document = yaml.safe_load(with_site(PREFECT_YAML.read_text(), site))
    deployments = []
    for original in document["deployments"]:
        if original["name"] in MEASURED:
            pool = original["work_pool"]
            job_variables = {**pool.get("job_variables", {}), **variant.job_variables}
            pool = {**pool, "name": variant.pool, "job_variables": job_variables}
            deployments.append(
                {**original, "name": f"{original['name']}-{variant.name}", "schedules": [], "work_pool": pool}
            )
    copy = work / f"prefect-{variant.name}.yaml"
    copy.write_text(yaml.safe_dump({**document, "deployments": deployments}, sort_keys=False))
    _prefect(env, "work-pool", "create", variant.pool, "--type", "process")
    _prefect(env, "deploy", "--no-prompt", "--all", "--prefect-file", str(copy))


def _when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def timeline(api: Api, run_id: str, timeout: float = 180) -> dict[str, float]:
    """Seconds from creation to each state the run went through (first time it entered it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api("GET", f"/flow_runs/{run_id}")
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(0.25)
    else:
        raise TimeoutError(f"flow run {run_id} did not finish within {timeout:.0f} s")
    if run["state_type"] != "COMPLETED":
        raise RuntimeError(f"flow run {run_id} ended {run['state_name']}: {run['state'].get('message')}")
    created = _when(run["created"])
    marks: dict[str, float] = {}
    for state in sorted(api("GET", f"/flow_run_states/?flow_run_id={run_id}"), key=lambda s: s["timestamp"]):
        marks.setdefault(state["type"], _when(state["timestamp"]) - created)
    return marks


def one_run(
    api: Api, variant: Variant, deployment: str, parameters: dict[str, Any], verbose: bool = False
) -> dict[str, float]:
    [found] = api("POST", "/deployments/filter", {"deployments": {"name": {"any_": [variant.deployment(deployment)]}}})
    run = api("POST", f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters})
    marks = timeline(api, run["id"])
    if verbose:
        created = _when(run["created"])
        logs = api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "sort": "TIMESTAMP_ASC"})
        for line in logs:
            print(f"    {_when(line['timestamp']) - created:6.2f} {line['message'][:100]}")
    return {
        "pick-up": marks["PENDING"],
        "start": marks["RUNNING"] - marks["PENDING"],
        "work": marks["COMPLETED"] - marks["RUNNING"],
        "total": marks["COMPLETED"],
    }


def process_costs(repeat: int = 3) -> dict[str, float]:
    """Median wall time of a bare Python, one importing Prefect, and one importing the restore flow."""
    costs = {}
    for label, code in (
        ("python", "pass"),
        ("import prefect", "import prefect"),
        ("import flows.restore", "import flows.restore"),
    ):
        laps = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([str(BIN / "python"), "-c", code], check=True, cwd=ROOT)
            laps.append(time.perf_counter() - started)
        costs[label] = statistics.median(laps)
    return costs


def report(results: dict[str, dict[str, list[dict[str, float]]]], costs: dict[str, float]) -> None:
    for name in results:
        print(f"{name}: {VARIANTS[name].about}")
    print("\nseconds from creation; median / max over the runs")
    print(
        f"{'variant':<10} {'deployment':<16} {'n':>2} "
        + " ".join(f"{c:>13}" for c in ("pick-up", "start", "work", "total"))
    )
    for variant, by_deployment in results.items():
        for deployment, runs in by_deployment.items():
            cells = []
            for column in ("pick-up", "start", "work", "total"):
                values = [r[column] for r in runs]
                cells.append(f"{statistics.median(values):6.2f} /{max(values):6.2f}")
            print(f"{variant:<10} {deployment:<16} {len(runs):>2} " + " ".join(f"{c:>13}" for c in cells))
    print(
        "\nprocess costs (median wall time of a fresh process): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in costs.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.deployment_runs", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="ad hoc restores per variant")
    parser.add_argument("--snapshots", type=int, default=2, help="ad hoc snapshots per variant (first)")
    parser.add_argument(
        "--variants", default="baseline,fast,direct,serve", help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--logs", action="store_true", help="print each run's log lines, seconds from creation")
    parser.add_argument("--json", type=Path, help="also write the per-run timings here")
    args = parser.parse_args()
    if args.snapshots < 1:
        parser.error("--snapshots must be 1 or more: the restores restore what the snapshots wrote")
    variants = [VARIANTS[name] for name in args.variants.split(",")]
    if sum(v.serve for v in variants) > 1:
        parser.error("the serve variants register the same deployment names: measure one per run")
    work = ROOT / "build" / "bench-deployment-runs" / time.strftime("%Y%m%dT%H%M%S")
    home, port = work / "prefect", _free_port()
    work.mkdir(parents=True)
    database, replica = work / "app.db", f"file://{work / 'replica'}"
    create_database(database, 4 << 20, seed=11)
    site = {"database": database, "replica": replica, "snapshot_replica": replica, "restore_output": work / "unused.db"}
    env = {**prefect_env(home, port), "WALSHIP_PROJECT_DIR": str(ROOT)}
    costs = process_costs()
    processes: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, list[dict[str, float]]]] = {v.name: {d: [] for d in MEASURED} for v in variants}
    try:
        processes.append(start_server(home, port, work / "server.log"))
        wait_healthy(port, processes[0])
        api = Api(port)
        for index, variant in enumerate(variants):
            if variant.serve:
                argv = [str(BIN / "python"), "-m", "deployments.serve"] + [f"--only={name}" for name in MEASURED]
                argv += [f"--set={key}={value}" for key, value in site.items()]
            else:
                deploy(variant, site, work, env)
                argv = worker_argv(variant.pool)
            with (work / f"worker-{variant.name}.log").open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        argv,
                        cwd=ROOT,
                        env=variant.worker_env(env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            if variant.serve:
                wait_served(port, len(MEASURED) * (index + 1), processes[-1])
        print(f"server on port {port}, {len(variants)} workers; logs in {work}", flush=True)
        digest, arrivals = content_digest(database), random.Random(7)
        rounds = [("snapshot-hourly", i) for i in range(args.snapshots)]
        rounds += [("restore-adhoc", i) for i in range(args.runs)]
        for deployment, i in rounds:
            for variant in variants:
                output = work / f"restored-{variant.name}-{i}.db"
                parameters = {"output": str(output)} if deployment == "restore-adhoc" else {}
                # Ad hoc runs arrive at any moment of a worker's poll cycle, not in step with it.
                time.sleep(arrivals.uniform(0, 10))
                timings = one_run(api, variant, deployment, parameters, args.logs)
                if deployment == "restore-adhoc" and content_digest(output) != digest:
                    raise RuntimeError(f"{output} differs from {database}")
                results[variant.name][deployment].append(timings)
                print(
                    f"{variant.name:<10} {deployment:<16} " + " ".join(f"{k} {v:5.2f}" for k, v in timings.items()),
                    flush=True,
                )
    finally:
        for process in reversed(processes):
            stop_group(process.pid)
            process.wait()
    report(results, costs)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "process_costs": costs}, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
