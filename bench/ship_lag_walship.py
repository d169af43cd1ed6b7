"""The walship side of bench.ship_lag: the wal-ship flow's loop, core only, in its own process.

What flows/ship.py does, minus Prefect: hold the database (pin and lock), take the
lease, ``Shipper.open()``, tend the pin in its thread, then ``sync()`` and, when the spool holds
entries, ``upload_pending`` with the run's one store, whenever ``Shipper.wait_for_commits`` says a
sync is due (new commits, ``coalesce_seconds`` after the last; else every ``--interval`` seconds). Prints
"ready" once the first upload (the generation's snapshot) is done; runs until SIGTERM,
then writes per-cycle and per-segment timings to ``--events`` as JSON.

    python -m bench.ship_lag_walship DB REPLICA --interval 1 --events FILE
"""

import argparse
import cProfile
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from walship import lease, upload
from walship.dblock import ShipperIdentity
from walship.handover import hold_database
from walship.memory import one_arena
from walship.ship import ShipConfig, Shipper
from walship.ship import _segment as _capture  # timed where the capture calls it
from walship.spool import Spool, default_spool_dir
from walship.sqlite import WalCapture
from walship.storage import open_store
from walship.storage._s3 import S3Store
from walship.upload import upload_pending

_segment: dict[str, Any] = {}  # the segment being uploaded: its stage timings accumulate here
_cycle: dict[str, float] = {}  # the same for the current cycle


def _timed(owner: Any, name: str, stage: str, into: dict[str, Any]) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            into[stage] = into.get(stage, 0.0) + time.time() - start

    setattr(owner, name, timed)


def _time_pauses() -> None:
    """How long writers wait in each pause: from the write lock taken to its release."""
    pause, resume = WalCapture.pause_writers, WalCapture.resume_writers
    taken = [0.0]

    def timed_pause(self: WalCapture) -> None:
        pause(self)
        taken[0] = time.time()

    def timed_resume(self: WalCapture) -> None:
        resume(self)
        _cycle["paused"] = _cycle.get("paused", 0.0) + time.time() - taken[0]

    WalCapture.pause_writers = timed_pause  # type: ignore[method-assign]
    WalCapture.resume_writers = timed_resume  # type: ignore[method-assign]


def run(database: Path, replica: str, interval: float, events: Path) -> None:
    one_arena()  # what `walship ship` asks glibc for (walship_cli._direct), before any thread starts
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    segments: list[dict[str, Any]] = []
    cycles: list[dict[str, float]] = []
    upload_one = upload._upload_one

    def traced_upload_one(store: Any, spool: Spool, entry: Any, result: Any, *, bridge: bool) -> None:
        _segment.clear()
        start = time.time()
        upload_one(store, spool, entry, result, bridge=bridge)
        if entry.segment is not None:
            info = entry.segment
            times = {"captured_at": info.captured_at.timestamp(), "committed_after": info.committed_after.timestamp()}
            times["raw_size"] = info.raw_size
            segments.append({"key": info.key, **times, "start": start, "end": time.time(), **_segment})

    upload._upload_one = traced_upload_one
    _timed(_capture, "seal_segment", "seal", _cycle)  # compress + fsync into the spool, inside the sync
    _timed(S3Store, "put_file", "put+head", _segment)
    _timed(S3Store, "head", "head", _segment)
    _timed(Shipper, "_checkpoint", "checkpoint", _cycle)  # PASSIVE beside the pin, no writers' pause
    _timed(WalCapture, "checkpoint_passive", "passive", _cycle)  # beside the pin, after a capture
    _timed(S3Store, "__init__", "open_store", _cycle)
    _time_pauses()

    spool_dir = default_spool_dir(database).resolve()
    run_id = "bench"
    held = hold_database(database, spool_dir, ShipperIdentity.this_process(run_id, spool_dir, replica))
    spool = Spool(spool_dir)
    told = json.loads(os.environ.get("WALSHIP_BENCH_CONFIG", "{}"))
    config = ShipConfig(database_id=database.name, **{"backfill_seconds": interval, **told})  # as the flow's
    holder = lease.holder_for(database, run_id)
    store = open_store(replica)
    spool.save_lease(store.location, lease.acquire_lease(store, holder))  # the acquire_lease task
    shipper = Shipper(database, spool, config, capture=held.capture, guarded=held.guarded)
    shipper.open()
    shipper.start_tending()
    ready = False
    uploading: dict[str, float] = {}

    def upload_captured(_: Any) -> None:  # as the flow's loop: what was captured goes up before the upkeep
        uploading["start"] = time.time()
        if spool.pending():
            upload_pending(store, spool, holder=holder)
        uploading["end"] = time.time()

    try:
        while not stop.is_set():
            _cycle.clear()
            started, began = time.time(), time.monotonic()
            shipper.sync(upload_captured)
            ended = time.time()
            took = uploading["end"] - uploading["start"]
            cycles.append({"start": started, "sync": ended - started - took, "upload": took, **_cycle})
            if not ready:
                print("ready", flush=True)
                ready = True
            # As the flow does: wait until the next sync is due, polling the WAL index once one may be.
            shipper.wait_for_commits(interval, began + interval, stop, since=began)
    finally:
        shipper.close()
        spool.close()
        held.lock.release()
        events.write_text(json.dumps({"cycles": cycles, "segments": segments}))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ship_lag_walship")
    parser.add_argument("database", type=Path)
    parser.add_argument("replica")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--events", type=Path, required=True)
    args = parser.parse_args()
    profile = os.environ.get("WALSHIP_BENCH_PROFILE")
    if profile:
        # Where the shipper's CPU goes, for cutting it: pstats of the whole run.
        cProfile.runctx(
            "run(args.database, args.replica, args.interval, args.events)", globals(), {"args": args}, profile
        )
    else:
        run(args.database, args.replica, args.interval, args.events)


if __name__ == "__main__":
    main()
