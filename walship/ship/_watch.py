"""Watching the WAL between syncs: two local reads per poll, no storage request."""

import threading
import time
from collections.abc import Callable

from walship.errors import CorruptObjectError, WalIndexUnsettledError
from walship.models import WalCursor
from walship.sqlite import WalCapture

__all__ = ["POLL_SECONDS", "has_new_commits", "published_end", "wait_for_commits"]

# How often the WAL index is polled between syncs, and the time kept for the
# upload after a capture (measured p99 about 0.1 s for a segment, bench/).
POLL_SECONDS = 0.05
_UPLOAD_BUDGET = 0.3


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
    interval: float,
    deadline: float,
    stop: threading.Event | None = None,
) -> None:
    """Sleep until the next sync is due, polling the WAL index.

    A sync is due ``interval`` after the previous one, or sooner: once new
    commits have waited ``interval`` minus the time an upload takes, so a
    commit is durable in storage within about ``interval`` of being made.
    """
    budget = min(_UPLOAD_BUDGET, interval / 3)
    started = time.monotonic()
    noticed: float | None = None
    while (now := time.monotonic()) < deadline and now - started < interval:
        if stop is not None and stop.is_set():
            return
        current = cursor()
        if noticed is None and current is not None and has_new_commits(capture, current):
            noticed = now
        if noticed is not None and now - noticed >= interval - budget - POLL_SECONDS:
            return
        time.sleep(min(POLL_SECONDS, max(0.0, deadline - now)))
