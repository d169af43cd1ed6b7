"""A local Prefect server and the served deployments, in the background: ``make serve`` / ``make stop``.

    .venv/bin/python -m deployments.local_server start   # server on 127.0.0.1, then serve.py
    .venv/bin/python -m deployments.local_server stop

The port comes from PREFECT_SERVER_API_PORT (default 4200), the server's
home from PREFECT_HOME (default build/prefect, so the server's database, logs
and profiles never touch ~/.prefect); pid files and logs sit there too.
``start`` serves prefect.yaml's deployments with its site values overridden
by ``--set KEY=VALUE`` or the environment (``WALSHIP_DATABASE``,
``WALSHIP_REPLICA``, ``WALSHIP_CREDENTIALS_BLOCK``...: ``WALSHIP_`` and the
site value's name in capitals); with no database given, ``make demo``'s
database and replica (nothing copied). It says which shipping window it
serves and refuses, before anything starts, one that breaks the window rules
(``check_shipping``) and whatever serve.py would refuse (an unknown site value).
Run again while it serves, it leaves the deployments as they are: with other
values it says so and how to apply them (``make stop`` first), since
re-serving would end the shipping run in flight. The tests start their
servers with the same functions.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deployments.config import (
    PREFECT_YAML,
    ROOT,
    SERVE_SPREAD,
    SiteError,
    check_progress,
    check_shipping,
    load_deployments,
    site_values,
    with_derived,
)
from deployments.serve import build, parse_site_value
from deployments.worker import FAST_RUNS

HOME = Path(os.environ.get("PREFECT_HOME") or ROOT / "build" / "prefect")
DEMO = ROOT / "build" / "demo"
BIN = Path(sys.executable).parent

__all__ = ["api_url", "prefect_env", "start_server", "stop_group", "wait_healthy", "wait_served", "wind_down"]


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def prefect_env(home: Path, port: int) -> dict[str, str]:
    """The environment a server, worker or CLI call needs to use the server on ``port``."""
    return {
        # Serve and workers poll every second (deployments/worker.py); a value in the environment wins.
        **FAST_RUNS,
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url(port),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        # The UI asks this port for its API: without it, it calls 4200.
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def start_server(
    home: Path, port: int, log: Path, settings: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``prefect server start`` on 127.0.0.1:``port`` in its own process group (so it can be ended whole);
    ``settings`` are more Prefect settings for the server (e.g. a test's shorter intervals)."""
    home.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env={**prefect_env(home, port), **(settings or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_healthy(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:
    """Return once /api/health answers; raise if the server exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with status {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{api_url(port)}/health", timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the Prefect server on port {port} was not healthy after {timeout:.0f} s")


def wait_served(port: int, count: int, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Return once the server holds ``count`` deployments; raise if ``process`` (serve.py) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve.py exited with status {process.returncode}")
        request = urllib.request.Request(f"{api_url(port)}/deployments/count", data=b"{}", method="POST")  # noqa: S310
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            if int(response.read()) >= count:
                return
        time.sleep(1)
    raise TimeoutError(f"serve.py had not registered {count} deployments after {timeout:.0f} s")


def stop_group(pid: int, timeout: float = 30) -> str:
    """SIGTERM the process group led by ``pid``, wait for it, SIGKILL it if it lingers; say what happened."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "was not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return "stopped"
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return f"killed (still running {timeout:.0f} s after SIGTERM)"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # A zombie leader of our own (started by this process) still counts as alive until reaped.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)
    return True


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _running(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and still ours (its command line has ``marker``)."""
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if marker.encode() in cmdline else None


_SHIPPING = ("ship_window", "ship_duration", "ship_handover_wait", "ship_progress_interval")


def served_values(overrides: dict[str, object]) -> dict[str, str]:
    """Every site value as it is served: prefect.yaml's, with ``overrides`` and the values that follow them."""
    site = site_values(PREFECT_YAML.read_text())
    return {name: str(value) for name, value in {**site, **with_derived(overrides, site)}.items()}


def shipping_window(values: dict[str, str], chosen: set[str], demo: bool) -> str:
    """The window served, checked against the rules; one line saying it and where it came from."""
    try:
        window, duration, wait, progress = (float(values[name]) for name in _SHIPPING)
    except ValueError:
        raise SiteError(f"{', '.join(f'{n}={values[n]!r}' for n in _SHIPPING)}: each must be seconds") from None
    check_shipping(window, duration, wait, SERVE_SPREAD)
    check_progress(progress, duration)
    line = f"shipping: a wal-ship run every {window:g} s, each {duration:g} s long, hand-over wait {wait:g} s"
    if not chosen & set(_SHIPPING):
        source = "make serve's demo values" if demo else "prefect.yaml's"
        line += f' ({source}; SET="ship_window=... ship_duration=... ship_handover_wait=..." to change)'
    return f"{line}; progress in each run's logs every {progress:g} s"


def _changes(served: dict[str, str], wanted: dict[str, str]) -> str:
    names = list(wanted) + [name for name in served if name not in wanted]
    return ", ".join(
        f"{name} {served.get(name, '-')} -> {wanted.get(name, '-')}"
        for name in names
        if served.get(name) != wanted.get(name)
    )


def site_overrides(given: dict[str, str], environ: dict[str, str]) -> dict[str, object]:
    """The site values to serve with: ``given`` (--set), else ``WALSHIP_<NAME>`` from ``environ``; with no
    database among them, ``make demo``'s database and replica."""
    overrides: dict[str, object] = {
        name: environ[f"WALSHIP_{name.upper()}"]
        for name in site_values(PREFECT_YAML.read_text())
        if f"WALSHIP_{name.upper()}" in environ
    }
    overrides.update(given)
    if "database" in overrides:
        return overrides
    demo: dict[str, object] = {
        "database": DEMO / "app.db",
        "replica": f"file://{DEMO / 'replica'}",
        "snapshot_replica": f"file://{DEMO / 'replica'}-snapshots",
        "restore_output": DEMO / "restored-from-prefect.db",
        "standby_output": DEMO / "standby.db",
        # Short shipping runs so the dashboard shows runs within two minutes;
        # they overlap by more than start-up varies (see prefect.yaml).
        "ship_window": 120,
        "ship_duration": 170,
    }
    return {**demo, **overrides}


def start(port: int, given: dict[str, str] | None = None) -> int:
    given = given or {}
    overrides = site_overrides(given, dict(os.environ))
    chosen = set(given) | {name for name in overrides if f"WALSHIP_{name.upper()}" in os.environ}
    wanted = served_values(overrides)
    try:
        # Whatever serve.py would refuse (an unknown site value, an entrypoint that does not import) is refused
        # here, before a server or serve process exists to be left behind.
        build(PREFECT_YAML, overrides)
        window = shipping_window(wanted, chosen, demo="database" not in chosen)
    except SiteError as exc:
        print(f"walship: {exc}", file=sys.stderr)
        return 2
    database = Path(str(overrides["database"]))
    if not database.exists():
        hint = "run 'make demo' first" if database == DEMO / "app.db" else "check WALSHIP_DATABASE or --set database="
        print(f"error: {database} does not exist: {hint}", file=sys.stderr)
        return 2
    serving = _running(HOME / "serve.pid", "deployments.serve")
    if serving and (served := _read_served(HOME / "served.json")) != wanted:
        print(
            f"walship: the deployments are served with other values ({_changes(served, wanted)}) and are left as "
            "they are: run 'make stop' (it ends the runs in flight), then 'make serve' with the new values",
            file=sys.stderr,
        )
        return 2
    server_was_running = _running(HOME / "server.pid", "prefect")
    if code := _start_server(port):
        return code
    if serving:
        print(f"the deployments are already served with these values (pid {serving})")
    elif code := _serve(port, overrides, wanted, database):
        if not server_was_running and (pid := _running(HOME / "server.pid", "prefect")):
            # A refusal serve.py made after all: the server started for it goes too, not left for the next start.
            print(f"Prefect server: {stop_group(pid)} (pid {pid})", file=sys.stderr)
            (HOME / "server.pid").unlink(missing_ok=True)
        return code
    print(window)
    print(f"\nPrefect UI: http://127.0.0.1:{port}")
    print(f"For the CLI: export PREFECT_API_URL={api_url(port)} PREFECT_HOME={HOME}")
    return 0


def _start_server(port: int) -> int:
    """Start the server unless it runs; 0 once it is healthy."""
    server_pid_file = HOME / "server.pid"
    if pid := _running(server_pid_file, "prefect"):
        print(f"the Prefect server is already running (pid {pid}): http://127.0.0.1:{port}")
        return 0
    if _listening(port):
        print(
            f"error: something else listens on 127.0.0.1:{port}: set PREFECT_SERVER_API_PORT to a free port",
            file=sys.stderr,
        )
        return 1
    server = start_server(HOME, port, HOME / "server.log")
    server_pid_file.write_text(str(server.pid))
    print(f"starting the Prefect server on 127.0.0.1:{port} (pid {server.pid}, log {HOME / 'server.log'})")
    try:
        wait_healthy(port, server)
    except (RuntimeError, TimeoutError) as exc:
        stop_group(server.pid)
        print(f"error: {exc}; see {HOME / 'server.log'}", file=sys.stderr)
        return 1
    return 0


def _serve(port: int, overrides: dict[str, object], wanted: dict[str, str], database: Path) -> int:
    """serve.py with ``overrides``, remembering the values it serves; 0 once every deployment is registered."""
    argv = [str(BIN / "python"), "-m", "deployments.serve"]
    for name, value in overrides.items():
        argv += ["--set", f"{name}={value}"]
    with (HOME / "serve.log").open("ab") as out:
        serving = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=prefect_env(HOME, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (HOME / "serve.pid").write_text(str(serving.pid))
    (HOME / "served.json").write_text(json.dumps(wanted))
    print(f"serving prefect.yaml's deployments for {database} (pid {serving.pid}, log {HOME / 'serve.log'})")
    try:
        wait_served(port, len(load_deployments()), serving)
    except (RuntimeError, TimeoutError) as exc:
        stop_group(serving.pid)
        tail = (HOME / "serve.log").read_text().strip().splitlines()[-1:]
        print(f"error: {exc}: {' '.join(tail)}", file=sys.stderr)
        return 1
    return 0


def _read_served(path: Path) -> dict[str, str]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}  # served by an older walship: its values are unknown


def _api(port: int, path: str, body: object, method: str = "POST", attempts: int = 6) -> Any:
    request = urllib.request.Request(f"{api_url(port)}{path}", data=json.dumps(body).encode(), method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            # A busy server (its SQLite database locked by the scheduler) answers
            # 503 or 429 for a moment: worth another try, unlike anything else.
            if exc.code not in (429, 503) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def wind_down(port: int, timeout: float = 60) -> int:
    """Pause every deployment, cancel the runs in flight and wait for them to end; return how many.

    A run killed with its serve process stays Running on the server and keeps
    its deployment's concurrency slot: with CANCEL_NEW, every later shipping
    run would be cancelled. Cancelling lets serve end each run and free it;
    pausing first keeps a new run from starting in between (serve pauses them
    on shutdown anyway, and resumes them when it starts).
    """
    for deployment in _api(port, "/deployments/filter", {}):
        _api(port, f"/deployments/{deployment['id']}", {"paused": True}, method="PATCH")
    active = {"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}}
    runs = _api(port, "/flow_runs/filter", active)
    for run in runs:
        _api(port, f"/flow_runs/{run['id']}/set_state", {"state": {"type": "CANCELLING", "name": "Cancelling"}})
    deadline = time.monotonic() + timeout
    while runs and _api(port, "/flow_runs/filter", active) and time.monotonic() < deadline:
        time.sleep(1)
    # Whatever serve could not end (its process already gone) is marked so by force.
    for run in _api(port, "/flow_runs/filter", active):
        cancelled = {"state": {"type": "CANCELLED", "name": "Cancelled"}, "force": True}
        _api(port, f"/flow_runs/{run['id']}/set_state", cancelled)
    return len(runs)


def stop(port: int) -> int:
    if _running(HOME / "server.pid", "prefect") and _listening(port):
        print(f"deployments paused, flow runs cancelled: {wind_down(port)}")
    # The served runs first, so they end while the server can still record it.
    for name, pid_file, marker in (
        ("served deployments", HOME / "serve.pid", "deployments.serve"),
        ("Prefect server", HOME / "server.pid", "prefect"),
    ):
        pid = _running(pid_file, marker)
        print(f"{name}: {stop_group(pid) + f' (pid {pid})' if pid else 'not running'}")
        pid_file.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.local_server")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument(
        "--set",
        dest="site",
        type=parse_site_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a site value",
    )
    args = parser.parse_args(argv)
    port = int(os.environ.get("PREFECT_SERVER_API_PORT", "4200"))
    raise SystemExit(start(port, dict(args.site)) if args.command == "start" else stop(port))


if __name__ == "__main__":
    main()
