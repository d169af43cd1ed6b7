"""``walship follow`` and ``walship restore --delta``: a kept copy brought to a replica's point and kept there.

Both run the core directly in either mode: a follower is a long-lived
process of its own (systemd, a supervisor), and a catch-up is one step.
"""

import argparse
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

from walship.envelope import Keyring
from walship.errors import UsageError
from walship.standby import CaughtUp, catch_up, follow
from walship.storage import open_store
from walship_cli import _age

__all__ = ["add_follow_parser", "follow_command", "restore_delta"]


def add_follow_parser(commands: "argparse._SubParsersAction[Any]") -> argparse.ArgumentParser:
    keep: argparse.ArgumentParser = commands.add_parser(
        "follow", help="keep a readable copy of a replica's newest data (a live standby)"
    )
    keep.add_argument("--replica", required=True)
    keep.add_argument("--output", required=True, type=Path, help="the copy: restored first when it is not there")
    keep.add_argument("--interval", type=float, default=1.0, help="look for new segments this often (s, default 1)")
    keep.add_argument("--once", action="store_true", help="catch up once and exit")
    return keep


def follow_command(args: argparse.Namespace, replica: str) -> int:
    if not args.interval > 0:
        raise UsageError("--interval must be positive (seconds)")
    output = args.output.absolute()
    if not output.parent.is_dir():
        raise UsageError(f"standby directory {output.parent} does not exist: create it first")
    store = open_store(replica)
    keys = _keys(args)
    if args.once:
        _print(catch_up(store, output, keys=keys))
        return 0
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        print(f"walship: {signal.Signals(signum).name}: sealing the standby", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        record = follow(store, output, interval=args.interval, stop=stop, keys=keys, report=_print)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if record is not None:
        print(f"stopped: {output} holds {record.position} (integrity ok)")
    return 0


def restore_delta(args: argparse.Namespace, replica: str, timestamp: datetime | None) -> int:
    if args.snapshot_key is not None:
        raise UsageError("--delta brings a copy to a point in time: use --timestamp or --sequence, not --snapshot")
    result = catch_up(
        open_store(replica),
        args.output,
        timestamp=timestamp,
        sequence=args.sequence,
        generation=args.generation,
        keys=_keys(args),
    )
    _print(result)
    return 0


def _keys(args: argparse.Namespace) -> Keyring | None:
    identity = _age.identity_file(args)
    return Keyring.from_file(identity) if identity is not None else None


def _print(result: CaughtUp) -> None:
    if result.rebuilt_because is not None:
        print(f"{result.output}: rebuilt by comparing pages: {result.rebuilt_because}")
    print(result.summary(), flush=True)
