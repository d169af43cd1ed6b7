"""Benchmark framed snapshots (issue 28) against the single-stream snapshots walship wrote before, and Litestream.

One database goes through one SeaweedFS server (`weed mini`, as tests/s3servers.py starts it: a real S3
server, which serves a ranged GET by reading only that range; moto reads the whole object for each) in the
same run, every timed side in a child process of its own (peak RSS is GNU time's %M for that child):

    framed snapshot   walship.snapshot.stream_snapshot (frames compressed on a thread pool, every frame's
                      SHA-256 and the whole file's) -> index.add_snapshot
    single snapshot   one zstd stream (codec.compress_blocks with its trailer: tests/helpers.py
                      single_stream_snapshot, walship's format before frames) -> index.add_snapshot
    framed restore    restore.restore_snapshot of the framed snapshot: fetch_framed's parallel ranged GETs
    single restore    restore.restore_snapshot of the single-stream one: one GET, streamed
    litestream        `litestream restore` of its own replica, made beforehand and not timed

Both walship restores are restore_snapshot as the CLI calls it (integrity_check and fsync included, and the
copy record written), from the newest snapshot of the replica each round's snapshot wrote; the two kinds of
snapshot go to replicas of their own. The order of the walship sides alternates from round to round, after
an untimed restore (the first restore of a round ran slower, whichever side it was). Every
walship restore is compared byte for byte (SHA-256) with the source file, Litestream's row for row in the
first round (``--verify-all``: every round). Ratios are taken within a round, then their median reported.

    python -m bench.framed_restore [--mib 1024] [--level 3] [--repeat 3] [--no-litestream] [--no-single]
                                   [--cap 90] [--variants 4x8,8x16] [--profile]

``--cap MB_S`` puts the restores behind a proxy that sends each connection's responses at most MB_S MB/s, as S3
serves one connection (about 90 MB/s): on this machine a local server otherwise serves one stream faster than
two cores decompress and hash it, and the restore is bound by CPU, not by the network framed snapshots split.

``--variants WxR`` adds framed restores with W fetch threads (``_WORKERS``) and runs of R MiB (``RUN_BYTES``)
beside the default, for tuning. ``--profile`` writes a cProfile of each framed restore child to build/bench.
"""

import argparse
import contextlib
import cProfile
import gc
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import BUILD, Laps, database, run, without_litestream
from bench.snapshot_restore_litestream import clean_env, config, replicate, restore_argv

BUCKET = "walship-bench"
STREAM = "read + compress + upload"
FETCH = "download + decompress + hash + write"
_BURST = 256 << 10
_WEED_VOLUMES = "-volume.max=1000"  # 64 MiB volumes: room for a few GiB of snapshots (the tests' 100 are 6.4 GB)


class CappedProxy:
    """A TCP proxy to the server that sends each connection's responses at most ``mb_s`` MB/s, as S3 serves one
    connection (about 90 MB/s): with it, one stream is bound by the network as on S3, not by this machine's CPUs.
    Threads in the parent process; what it costs in CPU is the same per byte for every side."""

    def __init__(self, port: int, mb_s: float) -> None:
        self._target, self._rate = ("127.0.0.1", port), mb_s * 1e6
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pipe, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self._rate), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, rate: float) -> None:
        buffer = memoryview(bytearray(64 << 10))
        tokens, last = float(_BURST), time.monotonic()  # a token bucket: bursts of _BURST bytes, then ``rate``
        try:
            while n := source.recv_into(buffer):
                if rate:
                    now = time.monotonic()
                    tokens, last = min(_BURST, tokens + (now - last) * rate), now
                    if tokens < n:
                        wait = (n - tokens) / rate
                        time.sleep(wait)
                        tokens, last = 0.0, now + wait  # from when it was due: oversleeping is made up
                    else:
                        tokens -= n
                sink.sendall(buffer[:n])
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._listener.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_snapshot(kind: str, database: str, replica: str, level: int) -> dict[str, Any]:
    lap, db = Laps(), Path(database)
    from tests.helpers import single_stream_snapshot  # noqa: PLC0415 - both sides import both, timed as a stage
    from walship import index, snapshot  # noqa: PLC0415
    from walship.storage import open_store  # noqa: PLC0415

    lap("import")
    store = open_store(replica)
    cpu = _cpu()
    if kind == "framed":
        info = snapshot.stream_snapshot(store, db, database_id=db.name, level=level)
    else:
        info = single_stream_snapshot(store, db, level=level)
    lap(STREAM)
    stream_cpu = _cpu() - cpu
    index.add_snapshot(open_store(replica), info)
    lap("update index")
    return {"stages": lap.stages, "compressed": info.compressed_size, "envelope": info.envelope, "cpu": stream_cpu}


def child_restore(replica: str, output: str, workers: int = 0, run_mib: int = 0, profile: str = "") -> dict[str, Any]:
    lap = Laps()
    from walship import catalog, index, placement  # noqa: PLC0415 - timed as a stage
    from walship.frames import _fetch  # noqa: PLC0415
    from walship.restore import _apply, restore_snapshot  # noqa: PLC0415
    from walship.storage import open_store  # noqa: PLC0415

    if workers:
        _fetch._WORKERS = workers  # the tuning knob under test
    if run_mib:
        _fetch.RUN_BYTES = run_mib << 20
    lap("import")
    chosen = catalog.select_snapshot(index.current_snapshots(open_store(replica)))
    lap("list snapshots")
    lap.wrap(_apply, "fetch_framed", FETCH)
    lap.wrap(_apply, "open_to_file", FETCH)
    lap.wrap(placement, "integrity_check", "integrity_check (fsync beside it)")
    profiler = cProfile.Profile() if profile else None
    cpu = _cpu()
    if profiler is not None:
        profiler.enable()
    restore_snapshot(open_store(replica), chosen, Path(output))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    lap("head, rename, copy record")
    return {"stages": lap.stages, "envelope": chosen.envelope, "cpu": _cpu() - cpu}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def one_round(n: int, args: argparse.Namespace, db: Path, sha: str, digest: str, ctx: dict[str, Any]) -> dict[str, Any]:
    me = [sys.executable, "-m", "bench.framed_restore", "--child"]
    work: Path = ctx["work"]
    result: dict[str, Any] = {}

    def measure(name: str, argv: list[str], env: dict[str, str] | None = None) -> str:
        os.sync()  # no dirty pages left from the previous side
        seconds, rss, out = run(argv, env)
        result[name] = {"seconds": seconds, "rss": rss}
        return out

    def child(name: str, op: str, **spec: Any) -> dict[str, Any]:
        reported = json.loads(measure(name, [*me, op, json.dumps(spec)]).splitlines()[-1])
        stages = reported.pop("stages")
        result[name]["stages"] = {"python start": result[name]["seconds"] - sum(stages.values()), **stages}
        result[name].update(reported)
        return dict(reported)

    kinds = ["framed", "single"] if args.single else ["framed"]
    if n % 2:
        kinds.reverse()
    for kind in kinds:  # each round a replica of its own, so each restore reads the snapshot just taken
        replica = f"s3://{BUCKET}/{kind}-{n}?endpoint={ctx['endpoint']}"
        child(f"{kind} snapshot", "snapshot", kind=kind, database=str(db), replica=replica, level=args.level)
    if args.warmup:  # the first restore of a round ran slower, whichever it was: one untimed restore first
        run([*me, "restore", json.dumps({"replica": f"s3://{BUCKET}/framed-{n}?endpoint={ctx['restore_endpoint']}",
                                         "output": str(work / "warmup.db")})])  # fmt: skip
        for leftover in work.glob("warmup.db*"):
            leftover.unlink()
    restores: list[tuple[str, dict[str, Any]]] = [("framed", {})]
    restores += [("framed", {"workers": workers, "run_mib": run_mib}) for workers, run_mib in args.variants]
    restores += [("single", {})] if args.single else []
    for kind, knobs in reversed(restores) if n % 2 else restores:
        name = f"{kind} restore" + (f" {knobs['workers']}x{knobs['run_mib']}" if knobs else "")
        out = work / "restored.db"
        profile = str(BUILD / f"profile-{name.replace(' ', '-')}-{n}.prof") if args.profile and kind == "framed" else ""
        replica = f"s3://{BUCKET}/{kind}-{n}?endpoint={ctx['restore_endpoint']}"
        child(name, "restore", replica=replica, output=str(out), profile=profile, **knobs)
        if file_sha256(out) != sha:
            sys.exit(f"FAIL: the {name} differs from the source database")
        out.unlink()
        Path(f"{out}.walship-copy").unlink(missing_ok=True)
        for leftover in work.glob("restored.db*"):
            leftover.unlink()
    if ctx.get("litestream"):
        ls_out = work / "litestream-restored.db"
        ls_db, ls_config = ctx["litestream"]
        if ctx["restore_endpoint"] != ctx["endpoint"]:
            ls_config = work / "litestream-restore.yml"
            ls_config.write_text(config(ls_db, BUCKET, ctx["restore_endpoint"]))
        measure("litestream restore", restore_argv(ls_db, ls_config, ls_out), clean_env())
        if (n == 0 or args.verify_all) and without_litestream(ls_out) != digest:
            sys.exit("FAIL: the Litestream restore differs from the source database")
        ls_out.unlink()
    return result


def report(rounds: list[dict[str, Any]], db: Path, args: argparse.Namespace) -> None:
    size = db.stat().st_size
    names = list(dict.fromkeys(name for r in rounds for name in r))

    def values(name: str, field: str = "seconds") -> list[float]:
        return [float(r[name][field]) for r in rounds if name in r]

    def spread(xs: list[float], fmt: str = "{:.2f}") -> str:
        return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"

    cap = f"restores capped at {args.cap:g} MB/s a connection" if args.cap else "restores uncapped"
    print(f"\ndatabase: {size / 2**20:.1f} MiB ({size} bytes), zstd level {args.level}, {cap}; {len(rounds)} "
          "round(s): median (min-max)\n")  # fmt: skip
    print("| side | seconds | MB/s | CPU s (in-process, timed stage) | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        secs = values(name)
        cpu = spread(values(name, "cpu")) if all("cpu" in r.get(name, {"cpu": 0}) for r in rounds) else ""
        mbs = statistics.median(size / 1e6 / s for s in secs)
        print(f"| {name} | {spread(secs)} | {mbs:.0f} | {cpu} | {spread(values(name, 'rss'), '{:.0f}')} |")

    def ratios(slow: str, fast: str, field: str = "seconds", stage: str = "") -> list[float]:
        def get(r: dict[str, Any], name: str) -> float:
            return float(r[name]["stages"][stage] if stage else r[name][field])

        return [get(r, slow) / get(r, fast) for r in rounds if slow in r and fast in r]

    print("\n| ratio within each round, seconds over seconds as named | median (min-max) |\n|---|---:|")
    pairs = [
        ("single restore", "framed restore", "", "restore: framed speed-up over single stream (goal >= 1.5)"),
        ("litestream restore", "framed restore", "", "restore: framed speed-up over Litestream (goal >= 2)"),
        ("litestream restore", "single restore", "", "restore: single stream's speed-up over Litestream"),
        ("single restore", "framed restore", FETCH, f"restore, the `{FETCH}` stage alone: single over framed"),
        ("framed snapshot", "single snapshot", "", "snapshot: framed seconds over single stream's (whole child)"),
        ("framed snapshot", "single snapshot", STREAM, f"snapshot, the `{STREAM}` stage: framed over single"),
    ]
    for slow, fast, stage, label in pairs:
        found = ratios(slow, fast, stage=stage)
        if found:
            print(f"| {label} | {spread(found, '{:.3f}')} |")
    for name in names:
        if name.startswith("framed restore "):
            print(f"| restore: {name} speed-up over framed restore (default) | "
                  f"{spread(ratios('framed restore', name), '{:.3f}')} |")  # fmt: skip
    sizes = {kind: values(f"{kind} snapshot", "compressed") for kind in ("framed", "single")}
    if sizes["framed"] and sizes["single"]:
        framed, single = int(sizes["framed"][-1]), int(sizes["single"][-1])
        print(
            f"\ncompressed: framed {framed} bytes ({size / framed:.3f}x), single stream {single} bytes "
            f"({size / single:.3f}x): framed takes {100 * (framed / single - 1):+.2f}% more than the single stream"
        )
    for op in ("restore", "snapshot"):
        sides = [n for n in names if n.endswith(op) or f"{op} " in n]
        sides = [n for n in sides if "stages" in rounds[0].get(n, {})]
        if not sides:
            continue
        stages = list(dict.fromkeys(s for n in sides for r in rounds if n in r for s in r[n]["stages"]))
        print(f"\n| {op} stage, median s | {' | '.join(sides)} |\n|---|{'---:|' * len(sides)}")
        for stage in stages:
            cells = [
                f"{statistics.median(r[n]['stages'][stage] for r in rounds if n in r):.2f}"
                if stage in rounds[0].get(n, {}).get("stages", {})
                else ""
                for n in sides
            ]
            print(f"| {stage} | {' | '.join(cells)} |")


def parse_variants(text: str) -> list[tuple[int, int]]:
    return [(int(w), int(r)) for w, r in (v.split("x") for v in text.split(",") if v)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.framed_restore", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="database size in MiB (default 1024)")
    parser.add_argument("--level", type=int, default=3, help="zstd level for both snapshots (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported (default 3)")
    parser.add_argument("--no-litestream", dest="litestream", action="store_false", help="skip Litestream's restore")
    parser.add_argument("--no-single", dest="single", action="store_false", help="framed snapshot and restore only")
    parser.add_argument(
        "--variants", type=parse_variants, default=[], help="extra framed restores, WORKERSxRUN_MIB,..."
    )
    parser.add_argument(
        "--cap", type=float, default=0, help="restores through a proxy sending each connection at most CAP MB/s"
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="no untimed restore before each round's timed ones"
    )
    parser.add_argument("--verify-all", action="store_true", help="check Litestream's restore row for row every round")
    parser.add_argument("--profile", action="store_true", help="cProfile every framed restore child (build/bench)")
    parser.add_argument("--child", nargs=2, metavar=("OP", "JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one timed side, in this child process: print its stage timings
        children: dict[str, Callable[..., dict[str, Any]]] = {"snapshot": child_snapshot, "restore": child_restore}
        gc.freeze()  # as walship_cli.main does
        print(json.dumps(children[args.child[0]](**json.loads(args.child[1]))))
        return
    if not shutil.which("/usr/bin/time"):
        sys.exit("this benchmark needs GNU time: run 'apt-get install time'")
    BUILD.mkdir(parents=True, exist_ok=True)
    db, digest = database(args.mib)
    sha = file_sha256(db)
    from tests.s3servers import SeaweedS3, s3_client  # noqa: PLC0415 - the server only in the parent

    with SeaweedS3(extra_args=[_WEED_VOLUMES]) as server, tempfile.TemporaryDirectory(dir=BUILD, prefix="run-") as tmp:
        server.create_bucket(BUCKET)
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_DEFAULT_REGION=server.region,
            AWS_CONFIG_FILE=os.devnull,  # keep ~/.aws out of every side
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        ctx: dict[str, Any] = {"endpoint": server.endpoint, "restore_endpoint": server.endpoint, "work": Path(tmp)}
        if args.cap:
            port = int(server.endpoint.rsplit(":", 1)[1])
            ctx["restore_endpoint"] = CappedProxy(port, args.cap).endpoint
        if args.litestream:
            print("litestream: replicating the database (not timed) ...", file=sys.stderr, flush=True)
            ctx["litestream"] = replicate(db, BUCKET, server.endpoint, s3_client(server), Path(tmp))
        rounds = []
        for n in range(args.repeat):
            print(f"round {n + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            rounds.append(one_round(n, args, db, sha, digest, ctx))
            print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    report(rounds, db, args)
    print("\nrestores verified: walship's byte for byte against the source file, Litestream's row for row")


if __name__ == "__main__":
    main()
