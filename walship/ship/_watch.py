"""Watching the WAL between syncs, and when the next sync is due: local reads only, no storage request."""

import threading
import time
from collections.abc import Callable

from walship.errors import CorruptObjectError, WalIndexUnsettledError
from walship.models import WalCursor
from walship.sqlite import WalCapture

__all__ = ["POLL_SECONDS", "budget_window", "has_new_commits", "published_end", "sync_due", "wait_for_commits"]

# How often the WAL index is polled once a sync may be due, and the time kept
# for the capture and upload when a window is derived from a lag (bench/ship_lag.py).
POLL_SECONDS = 0.05
_UPLOAD_BUDGET = 0.3


def sync_due(waited: float, commits: bool, *, window: float, interval: float) -> bool:
    """Whether a sync is due ``waited`` seconds after the previous one began.

    The rule of the single shipper and of the fleet: as soon as there are new
    commits once ``window`` has passed (commits made within it share one
    segment, one PUT), and after ``interval`` whatever happened (checkpoints
    and snapshots fall due on a quiet database too). A lone commit is
    captured at its first poll; a steady writer gets one capture per window.
    """
    return waited >= interval or (commits and waited >= window)


def budget_window(interval: float) -> float:
    """The window that keeps a commit's lag to about ``interval``: it, less the time a capture and upload take."""
    return max(interval - min(_UPLOAD_BUDGET, interval / 3) - POLL_SECONDS, 0.0)


def published_end(capture: WalCapture) -> int | None:
    """Where the WAL index says the committed WAL ends now (None if unknown)."""
    try:
        header = capture.wal_header()
        return capture.published_end(header) if header is not None else None
    except (WalIndexUnsettledError, CorruptObjectError, FileNotFoundError):
        return None


def has_new_commits(capture: WalCapture, cursor: WalCursor) -> bool:
    """Whether the WAL index published commits beyond ``cursor``."""
    header = capture.wal_header()
    if header is None:
        return False
    if (header.salt1, header.salt2) != (cursor.salt1, cursor.salt2):
        return True
    end = published_end(capture)
    return end is not None and end > cursor.offset


def wait_for_commits(
    capture: WalCapture,
    cursor: Callable[[], WalCursor | None],
    *,
    since: float,
    window: float,
    interval: float,
    deadline: float,
    stop: threading.Event | None = None,
) -> None:
    """Sleep until a sync is due (``sync_due``) for a sync that began at ``since`` (monotonic), or ``deadline``.

    Nothing can be due within the window, so it is slept through without a
    look at the WAL index; from then on the index is polled.
    """
    stop = stop or threading.Event()
    window = min(window, interval)
    if stop.wait(max(0.0, min(since + window, deadline) - time.monotonic())):
        return
    while (now := time.monotonic()) < deadline and not stop.is_set():
        current = cursor()
        commits = current is not None and has_new_commits(capture, current)
        if sync_due(now - since, commits, window=window, interval=interval):
            return
        stop.wait(max(0.0, min(POLL_SECONDS, deadline - now, since + interval - now)))
