"""Benchmark walship's snapshot and restore against the shell pipeline a user would write.

Both sides move the same database through the same moto S3 server:

    walship   take_snapshot -> compress_file -> upload_snapshot -> add_snapshot      (one child process)
              current_snapshots -> select_snapshot -> restore_snapshot               (one child process)
    pipeline  sqlite3 .backup && zstd -3 && aws s3 cp
              aws s3 cp && zstd -d && sqlite3 "PRAGMA integrity_check"

Core only: the children call the functions the Prefect tasks call; the CLI
process (python + prefect import, flow and task orchestration) is excluded.
Peak RSS is GNU time's %M for each process. awscli lives in its own
venv (build/bench/awscli-venv), installed on first run.

    python -m bench.snapshot_restore [--mib 256] [--level 3] [--repeat 1]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.workload import content_digest, create_database

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
AWS_VENV = BUILD / "awscli-venv"
BUCKET = "walship-bench"
PIPE_KEY = f"s3://{BUCKET}/pipeline/snapshot.sqlite.zst"

Stages = dict[str, float]


class Laps:
    """Seconds per named stage, each measured from the end of the previous one."""

    def __init__(self) -> None:
        self.stages: Stages = {}
        self._last = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now

    def wrap(self, owner: Any, name: str) -> None:
        """Time every call of ``owner.name`` as its own stage (the caller's lap excludes it)."""
        inner: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return inner(*args, **kwargs)
            finally:
                self.stages[name] = self.stages.get(name, 0.0) + time.monotonic() - start
                self._last += time.monotonic() - start

        setattr(owner, name, timed)


def child_snapshot(database: Path, replica: str, work: Path, level: int) -> dict[str, Any]:
    lap = Laps()
    from walship import codec, index, snapshot, sqlite  # noqa: PLC0415 - timed as a stage
    from walship.storage import open_store  # noqa: PLC0415

    lap("import walship")
    # One store per step, as each Prefect task opens its own.
    snapshot.check_database_id(open_store(replica), database.name)
    lap("check replica")
    scratch = Path(tempfile.mkdtemp(prefix="walship-snapshot-", dir=work))
    source = sqlite.take_snapshot(database, scratch / "snapshot.db")
    lap("backup copy")
    compressed = codec.compress_file(source.path, scratch / "snapshot.db.zst", level)
    lap("compress")
    info = snapshot.upload_snapshot(open_store(replica), source, compressed, database_id=database.name)
    lap("upload")
    index.add_snapshot(open_store(replica), info)
    lap("update index")
    shutil.rmtree(scratch)
    lap("cleanup")
    return {"stages": lap.stages, "compressed": info.compressed_size}


def child_restore(replica: str, output: Path) -> dict[str, Any]:
    lap = Laps()
    from walship import catalog, index, restore  # noqa: PLC0415 - timed as a stage
    from walship.storage import open_store  # noqa: PLC0415

    lap("import walship")
    chosen = catalog.select_snapshot(index.current_snapshots(open_store(replica)))
    lap("list snapshots")
    lap.wrap(restore, "decompress_to_file")  # download + decompress + hash + write, streamed
    lap.wrap(restore, "integrity_check")
    restore.restore_snapshot(open_store(replica), chosen, output)
    lap("head, fsync, rename")
    return {"stages": lap.stages}


def run(argv: list[str]) -> tuple[float, float, str]:
    """Run ``argv``: wall seconds, peak RSS in MiB, stdout.

    The peak comes from GNU time (%M), not from our own wait4: a child's
    ru_maxrss starts at its parent's RSS (exec keeps the vfork'ed mm's high
    water mark), and this parent holds moto with every object in memory.
    """
    with tempfile.NamedTemporaryFile("r") as peak:
        started = time.monotonic()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv], stdout=subprocess.PIPE, cwd=ROOT, check=False
        )
        elapsed = time.monotonic() - started
        if proc.returncode:
            sys.exit(f"failed with exit code {proc.returncode}: {' '.join(argv)}")
        return elapsed, int(peak.read().split()[-1]) / 1024, proc.stdout.decode()


def awscli() -> str:
    aws = AWS_VENV / "bin" / "aws"
    if not aws.exists():
        print(f"installing awscli into its own venv {AWS_VENV} (once)", file=sys.stderr)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", "--clear", AWS_VENV], check=True)
        subprocess.run([AWS_VENV / "bin" / "pip", "install", "--quiet", "awscli"], check=True)
    return str(aws)


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


def one_round(db: Path, digest: str, replica: str, endpoint: str, aws: str, level: int, work: Path) -> dict[str, Any]:
    me = [sys.executable, "-m", "bench.snapshot_restore", "--child"]
    s3 = [aws, "s3", "cp", "--only-show-errors", "--endpoint-url", endpoint]
    pipe_db, pipe_zst, pipe_out = work / "pipe.db", work / "pipe.db.zst", work / "pipe-restored.db"
    wal_out = work / "walship-restored.db"
    result: dict[str, Any] = {}

    def measure(name: str, steps: dict[str, list[str]]) -> str:
        stages, rss, out = {}, 0.0, ""
        for stage, argv in steps.items():
            os.sync()  # start each step with no dirty pages from the previous one
            stages[stage], peak, out = run(argv)
            rss = max(rss, peak)
        result[name] = {"seconds": sum(stages.values()), "rss": rss, "stages": stages}
        return out

    def walship(name: str, argv: list[str]) -> dict[str, Any]:
        out = measure(name, {"total": me + argv})
        reported = json.loads(out.splitlines()[-1])
        stages = reported.pop("stages")
        started = result[name]["seconds"] - sum(stages.values())
        result[name]["stages"] = {"python start": started, **stages}
        return dict(reported)

    snap = walship(
        "walship snapshot",
        ["snapshot", "--db", str(db), "--replica", replica, "--work", str(work), "--level", str(level)],
    )
    measure(
        "pipeline snapshot",
        {
            "backup copy": ["sqlite3", str(db), f".backup '{pipe_db}'"],
            "compress": ["zstd", f"-{level}", "-q", str(pipe_db), "-o", str(pipe_zst)],
            "upload": [*s3, str(pipe_zst), PIPE_KEY],
        },
    )
    result["sizes"] = {"walship": snap["compressed"], "zstd": pipe_zst.stat().st_size}
    pipe_db.unlink()
    pipe_zst.unlink()
    walship("walship restore", ["restore", "--replica", replica, "--output", str(wal_out)])
    check = measure(
        "pipeline restore",
        {
            "download": [*s3, PIPE_KEY, str(pipe_zst)],
            "decompress": ["zstd", "-d", "-q", str(pipe_zst), "-o", str(pipe_out)],
            "integrity check": ["sqlite3", str(pipe_out), "PRAGMA integrity_check"],
        },
    )
    if check.strip() != "ok":
        sys.exit(f"FAIL: pipeline restore: integrity_check says {check.strip()[:200]!r}")
    for name, restored in (("walship", wal_out), ("pipeline", pipe_out)):
        if content_digest(restored) != digest:
            sys.exit(f"FAIL: the {name} restore differs from the source database")
    for leftover in (wal_out, pipe_out, pipe_zst):
        leftover.unlink()
    return result


def report(rounds: list[dict[str, Any]], db: Path, level: int) -> None:
    size = db.stat().st_size

    def med(name: str, field: str) -> float:
        return statistics.median(r[name][field] for r in rounds)

    print(f"\ndatabase: {size / 2**20:.1f} MiB ({size} bytes), {len(rounds)} run(s), median shown\n")
    print("| operation | walship MB/s | pipeline MB/s | ratio (walship/pipeline) | walship peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for op in ("snapshot", "restore"):
        ours, theirs = size / 1e6 / med(f"walship {op}", "seconds"), size / 1e6 / med(f"pipeline {op}", "seconds")
        print(f"| {op} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f} | {med(f'walship {op}', 'rss'):.0f} |")
    sizes = rounds[-1]["sizes"]
    print(
        f"\ncompressed: walship {sizes['walship'] / 2**20:.1f} MiB ({size / sizes['walship']:.2f}x), "
        f"zstd -{level} CLI {sizes['zstd'] / 2**20:.1f} MiB ({size / sizes['zstd']:.2f}x)"
    )
    rss = {op: med(f"pipeline {op}", "rss") for op in ("snapshot", "restore")}
    print(
        f"pipeline peak RSS (largest of its processes): snapshot {rss['snapshot']:.0f} MiB, "
        f"restore {rss['restore']:.0f} MiB"
    )
    print(
        "core only: the Prefect CLI process (python + prefect import, flow/task orchestration) is excluded; "
        "walship times are child processes calling the core functions the tasks call (python start included)."
    )
    for op in ("snapshot", "restore"):
        print(f"\n| {op} stage | walship s | pipeline s |\n|---|---:|---:|")
        names = list(rounds[0][f"walship {op}"]["stages"]) + list(rounds[0][f"pipeline {op}"]["stages"])
        for stage in dict.fromkeys(names):
            cells = [
                f"{statistics.median(r[f'{side} {op}']['stages'][stage] for r in rounds):.2f}"
                if stage in rounds[0][f"{side} {op}"]["stages"]
                else ""
                for side in ("walship", "pipeline")
            ]
            print(f"| {stage} | {' | '.join(cells)} |")
        print(f"| **total** | {med(f'walship {op}', 'seconds'):.2f} | {med(f'pipeline {op}', 'seconds'):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot_restore", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="database size in MiB (default 256)")
    parser.add_argument("--level", type=int, default=3, help="zstd level for both sides (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported (default 1)")
    parser.add_argument("--child", choices=("snapshot", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replica", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "snapshot":
        print(json.dumps(child_snapshot(args.db, args.replica, args.work, args.level)))
        return
    if args.child == "restore":
        print(json.dumps(child_restore(args.replica, args.output)))
        return
    missing = [tool for tool in ("sqlite3", "zstd", "/usr/bin/time") if not shutil.which(tool)]
    if missing:
        sys.exit(f"this benchmark needs {', '.join(missing)}: run 'apt-get install sqlite3 zstd time'")
    BUILD.mkdir(parents=True, exist_ok=True)
    aws = awscli()
    db, digest = database(args.mib)
    from tests.s3servers import MotoS3  # noqa: PLC0415 - moto only in the parent, never in the children

    with MotoS3() as server, tempfile.TemporaryDirectory(dir=BUILD, prefix="run-") as tmp:
        server.create_bucket(BUCKET)
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION=server.region,
            # Keep ~/.aws (profiles, s3 transfer settings) out of both sides.
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        replica = f"s3://{BUCKET}/walship?endpoint={server.endpoint}"
        rounds = []
        for n in range(args.repeat):
            print(f"run {n + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            rounds.append(one_round(db, digest, replica, server.endpoint, aws, args.level, Path(tmp)))
    report(rounds, db, args.level)
    print("\nrestores verified: content equals the source (bench.workload.content_digest)")


if __name__ == "__main__":
    main()
