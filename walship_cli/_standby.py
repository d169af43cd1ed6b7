"""``walship follow`` and ``walship restore --delta``: a kept copy brought to a replica's point and kept there.

Input is checked here, before any flow starts; then the runner (the core
directly, or a flow run when a Prefect API keeps the history) does the work.
A follower runs in windows (``--duration``) or until SIGTERM; a window that
finds another follower of the copy waits up to ``--handover-wait`` for it.
"""

import argparse
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from walship.errors import UsageError
from walship.standby import CaughtUp, FollowReport
from walship_cli import _age

__all__ = ["add_follow_parser", "follow_command", "restore_delta", "show_update"]


def add_follow_parser(commands: "argparse._SubParsersAction[Any]") -> argparse.ArgumentParser:
    keep: argparse.ArgumentParser = commands.add_parser(
        "follow", help="keep a readable copy of a replica's newest data (a live standby)"
    )
    keep.add_argument("--replica", required=True, action="append")
    keep.add_argument("--output", required=True, type=Path, help="the copy: restored first when it is not there")
    keep.add_argument("--interval", type=float, default=1.0, help="look for new segments this often (s, default 1)")
    window = keep.add_mutually_exclusive_group()
    window.add_argument("--once", action="store_true", help="catch up once, print the position and lag, and exit")
    window.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="follow this many seconds, then seal the copy (default 0: until stopped)",
    )
    keep.add_argument(
        "--handover-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another follower keeps this copy, take over when it ends, waiting up to SECONDS "
        "(default 0: refuse at once)",
    )
    return keep


def follow_command(args: argparse.Namespace, replica: str, runner: ModuleType) -> int:
    if not args.interval > 0:
        raise UsageError("--interval must be positive (seconds)")
    if not (args.duration >= 0 and args.handover_wait >= 0):
        raise UsageError("--duration and --handover-wait must not be negative (seconds; --duration 0: until stopped)")
    output = args.output.absolute()
    if not output.parent.is_dir():
        raise UsageError(f"standby directory {output.parent} does not exist: create it first")
    window: FollowReport = runner.follow(
        replica,
        output,
        interval=args.interval,
        duration=args.duration,
        once=args.once,
        handover_wait=args.handover_wait,
        identity_file=_age.identity_file(args),
    )
    if window.handover_waited_seconds is not None:
        print(f"took over from the previous follower after {window.handover_waited_seconds:.1f} s")
    lag = f"{window.lag_seconds:.2f} s" if window.lag_seconds is not None else "-"
    if args.once:
        print(f"position {window.position}; lag {lag} (from the capture of its newest commit)")
    elif window.record is not None:
        sealed = "integrity ok" if window.sealed else "not sealed: readers kept its WAL"
        print(
            f"stopped: {output} holds {window.position} ({sealed}; {window.updates} updates, "
            f"{window.segments_applied} segments applied, {window.downloaded} bytes downloaded, last lag {lag})"
        )
    else:
        print(f"stopped: the window ended before {output} was free to follow")
    return 0


def restore_delta(args: argparse.Namespace, replica: str, timestamp: datetime | None, runner: ModuleType) -> int:
    if args.snapshot_key is not None:
        raise UsageError("--delta brings a copy to a point in time: use --timestamp or --sequence, not --snapshot")
    result: CaughtUp = runner.restore_delta(
        replica,
        args.output.absolute(),
        timestamp=timestamp,
        sequence=args.sequence,
        generation=args.generation,
        identity_file=_age.identity_file(args),
    )
    show_update(result)
    return 0


def show_update(result: CaughtUp) -> None:
    if result.rebuilt_because is not None:
        print(f"{result.output}: rebuilt by comparing pages: {result.rebuilt_because}")
    print(result.summary(), flush=True)
