"""One shipping run of bench.ship_replicas: ``walship ship`` and its replicas under the writers' load.

The shipper is the CLI itself in direct mode (``python -m walship_cli --verbose ship DB --replica ...``),
under bench/wal_reads.c (LD_PRELOAD), which counts what the process reads from the -wal and -shm files
and from other files, and its peak RSS. The writers are bench.ship_lag's (markers with their commit times);
what reached each replica, and when, comes from bench.ship_replicas_stored.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench._common import BUILD, ROOT, proc_stats
from bench.ship_lag import DRAIN_SECONDS, WRITERS, marked_copy
from bench.ship_lag_s3 import RecordingS3
from bench.ship_replicas_stored import Replica, received
from tests.tcpproxy import TcpProxy

__all__ = ["Outage", "ship"]

_STILL_SPOOLED = re.compile(r"(\d+) still spooled")
_STOP_TIMEOUT = 600.0  # the final drain of a replica that was down has the full retry policy


@dataclass
class Outage:
    """The proxy in front of a replica stalls (a storage that hangs) or stops (refused connections)."""

    proxy: TcpProxy
    after: float  # seconds into the load
    seconds: float
    mode: str = "stall"
    times: dict[str, int] = field(default_factory=dict)  # time.time_ns() when it began and ended
    pid: int = 0  # the shipper's: its CPU seconds then go to ``cpu``
    cpu: dict[str, float] = field(default_factory=dict)

    def step(self, load_start: int) -> None:
        now = time.time_ns()
        if "start" not in self.times and now >= load_start + self.after * 1e9:
            if self.mode == "stall":
                self.proxy.stall()
            else:
                self.proxy.stop()
            self.times["start"], self.cpu["start"] = time.time_ns(), _stats(self.pid)[0]
        elif "start" in self.times and "end" not in self.times and now >= self.times["start"] + self.seconds * 1e9:
            self.end()

    def end(self) -> None:
        if "start" in self.times and "end" not in self.times:
            if self.mode == "stall":
                self.proxy.resume()
            else:
                self.proxy.start()
            self.times["end"], self.cpu["end"] = time.time_ns(), _stats(self.pid)[0]


def shim() -> Path:
    """bench/wal_reads.c built into build/bench (again when the source is newer)."""
    source, built = ROOT / "bench" / "wal_reads.c", BUILD / "wal_reads.so"
    if not built.exists() or built.stat().st_mtime < source.stat().st_mtime:
        argv = ["gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(built), str(source), "-ldl", "-lpthread"]
        subprocess.run(argv, check=True)
    return built


def ship(
    name: str,
    source: Path,
    replicas: list[Replica],
    server: RecordingS3,
    work: Path,
    *,
    rate: float,
    seconds: float,
    interval: float,
    spool_cap: float | None = None,
    outage: Outage | None = None,
) -> dict[str, Any]:
    """Ship a fresh copy of ``source`` while the writers run for ``seconds``, then SIGTERM the shipper; with
    an outage, only once every replica has caught up (the spool is empty)."""
    here = work / name
    here.mkdir()
    db = marked_copy(source, here)
    env = {**os.environ, "PREFECT_API_URL": "", "PYTHONPATH": str(ROOT), "LD_PRELOAD": str(shim())}
    env["WALSHIP_BENCH_READS"] = str(here / "reads")
    argv = [sys.executable, "-m", "walship_cli", "--verbose", "--debug", "ship", str(db)]
    argv += [arg for replica in replicas for arg in ("--replica", replica.url)]
    # Ended by SIGTERM (a final capture and drain, as under systemd); progress every second says when the
    # spool is empty.
    argv += ["--duration", "86400", "--interval", f"{interval:g}", "--progress-interval", "1"]
    argv += ["--spool-cap", f"{spool_cap:g}"] if spool_cap is not None else []
    log, out = (here / "shipper.log").open("w"), (here / "shipper.out").open("w")
    shipper = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=log)
    try:
        _wait_ready(shipper, replicas, server, here)
        # Dirty pages of the copy and of earlier runs' restores are written back now, not inside the load.
        os.sync()
        time.sleep(2.0)
        t_load, (cpu0, rss0, _) = time.time_ns(), proc_stats(shipper.pid)
        if outage is not None:
            outage.pid = shipper.pid
        written = _write(db, here, rate, seconds, outage)
        t_end, cpu_end = time.time_ns(), _stats(shipper.pid)[0]
        if outage is None:
            time.sleep(DRAIN_SECONDS)
        else:
            _wait_empty_spool(here / "shipper.log", (here / "shipper.log").stat().st_size, shipper)
        t_drained, (cpu1, rss1, hwm1) = time.time_ns(), _stats(shipper.pid)
        running = _running(shipper.pid)
        if running:
            shipper.send_signal(signal.SIGTERM)
        code, usage = _wait(shipper)
    finally:
        if shipper.poll() is None:
            shipper.kill()
        log.close()
        out.close()
    if outage is not None:
        outage.end()
    reads = here / f"reads.{shipper.pid}"
    counted = json.loads(reads.read_text()) if reads.exists() else {}
    peak = counted.pop("peak_rss_kib", math.nan)
    return {
        "name": name,
        "db": db,
        "replicas": replicas,
        "windows": {"load": t_load, "writers_end": t_end, "drained": t_drained, **(outage.times if outage else {})},
        "transactions": sum(w["transactions"] for w in written),
        "latencies": [s for w in written for s in w["latencies"]],
        "markers": _markers(here),
        "cpu_load": cpu1 - cpu0,
        "cpu_at": {"load": cpu0, "writers_end": cpu_end, **(outage.cpu if outage else {})},
        "cpu_total": usage.ru_utime + usage.ru_stime,
        "rss_mib": {"load_start": rss0, "drained": rss1, "peak_before_stop": hwm1, "peak": peak / 1024},
        "reads": counted,
        "exit_code": code,
        "ended_before_sigterm": not running,
        "said": _said((here / "shipper.log").read_text().splitlines()),
        "stdout": (here / "shipper.out").read_text().splitlines(),
        "warnings": [line for line in (here / "shipper.log").read_text().splitlines() if " WARNING " in line],
        "received": {r.name: received(r, server) for r in replicas},
        "loadavg": os.getloadavg()[1],
    }


def _wait_ready(shipper: subprocess.Popen[bytes], replicas: list[Replica], server: RecordingS3, here: Path) -> None:
    """Until every replica holds the generation's first snapshot."""
    deadline = time.monotonic() + 120
    while not all(replica.snapshotted(server) for replica in replicas):
        if shipper.poll() is not None or time.monotonic() > deadline:
            tail = (here / "shipper.log").read_text()[-3000:]
            sys.exit(f"{here.name}: the shipper did not start (exit {shipper.poll()}):\n{tail}")
        time.sleep(0.1)


def _write(db: Path, here: Path, rate: float, seconds: float, outage: Outage | None) -> list[dict[str, Any]]:
    argv = [sys.executable, "-m", "bench.ship_lag_writer", str(db), "--rate", str(rate / WRITERS)]
    argv += ["--seconds", str(seconds)]
    # Into files: each prints every transaction's latency, more than a pipe holds until it ends.
    outputs = [(here / f"writer-{w}.json").open("w") for w in range(1, WRITERS + 1)]
    writers = [
        subprocess.Popen([*argv, "--writer", str(w), "--log", str(here / f"markers-{w}.txt")], cwd=ROOT, stdout=out)
        for w, out in enumerate(outputs, 1)
    ]
    load_start = time.time_ns()
    try:
        while any(w.poll() is None for w in writers):
            if outage is not None:
                outage.step(load_start)
            time.sleep(0.05)
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    if outage is not None:
        outage.end()  # writers shorter than the outage: storage comes back as they stop
    for out in outputs:
        out.close()
    if any(w.returncode for w in writers):
        sys.exit(f"{here.name}: a writer failed")
    return [json.loads(Path(out.name).read_text()) for out in outputs]


def _markers(here: Path) -> dict[str, int]:
    markers = {}
    for w in range(1, WRITERS + 1):
        for line in (here / f"markers-{w}.txt").read_text().splitlines():
            token, ns = line.split()
            markers[token] = int(ns)
    return markers


def _wait_empty_spool(log: Path, offset: int, shipper: subprocess.Popen[bytes]) -> None:
    """Until a progress line written after ``offset`` says nothing is spooled: every replica caught up."""
    deadline = time.monotonic() + _STOP_TIMEOUT
    while time.monotonic() < deadline and _running(shipper.pid):
        with log.open() as lines:
            lines.seek(offset)
            if any(m and m.group(1) == "0" for m in map(_STILL_SPOOLED.search, lines)):
                return
        time.sleep(0.5)
    print(f"{log.parent.name}: the spool was not empty after {_STOP_TIMEOUT:g} s; stopping anyway", file=sys.stderr)


def _said(log: list[str]) -> list[str]:
    """The CLI's own lines on stderr, and the traceback --debug adds to a failure."""
    traceback = next((n for n, line in enumerate(log) if line.startswith("Traceback")), len(log))
    return [line for line in log[:traceback] if line.startswith("walship: ")] + log[traceback:]


def _running(pid: int) -> bool:
    """Whether the shipper still runs, without reaping it (``Popen.poll`` would: its usage is read at the end)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _stats(pid: int) -> tuple[float, float, float]:
    """``proc_stats``, or NaNs once the shipper ended on its own (a zombie has no RSS)."""
    try:
        return proc_stats(pid)
    except (KeyError, FileNotFoundError):
        return math.nan, math.nan, math.nan


def _wait(shipper: subprocess.Popen[bytes]) -> tuple[int, Any]:
    """Its exit code and resource usage (its CPU and peak RSS over its whole life)."""
    deadline = time.monotonic() + _STOP_TIMEOUT
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(shipper.pid, os.WNOHANG)
        if pid:
            shipper.returncode = os.waitstatus_to_exitcode(status)
            return shipper.returncode, usage
        time.sleep(0.1)
    shipper.kill()
    _, status, usage = os.wait4(shipper.pid, 0)
    shipper.returncode = os.waitstatus_to_exitcode(status)
    print("the shipper did not end after SIGTERM: killed", file=sys.stderr)
    return shipper.returncode, usage
