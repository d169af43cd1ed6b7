"""A follower's window: one applier per kept copy, and windows that hand the copy over as shipping windows do.

The lock is ``<copy>-walship-follow.lock`` beside the copy. Two ``flock``
locks of one file conflict even when one process took both through two
``open`` calls, so neither two overlapping windows (two processes, or two
runs in one) nor a ``restore --delta`` beside a running follower ever apply
to one copy at once. The kernel releases the lock when its holder dies, so a
crash never leaves it stale; the file's content only names the holder. It is
a file of its own: closing it never drops SQLite's POSIX locks on the copy.

A window takes the lock (waiting up to ``handover_wait`` for the previous
window to seal the copy and end), follows until its time is up or ``stop``
is set, and lets go only once the copy is sealed.
"""

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from walship.copies import CopyRecord
from walship.envelope import Keyring
from walship.errors import FollowerRunningError, HandoverTimedOutError, UsageError
from walship.models import utcnow
from walship.snapshot import recorded_database_id
from walship.standby._catch_up import CaughtUp, catch_up
from walship.standby._follow import follow
from walship.storage import ObjectStore

__all__ = [
    "CopyLock",
    "FollowReport",
    "FollowerIdentity",
    "catch_up_alone",
    "follow_window",
    "hold_copy",
    "lock_path",
]

log = logging.getLogger(__name__)

# How often a waiting window tries the lock again.
_POLL = 0.2


class FollowerIdentity(BaseModel):
    """Who applies to a copy: this run, on this host, from which replica."""

    host: str
    pid: int
    run: str
    replica: str
    started_at: datetime

    @classmethod
    def this_process(cls, run: str, replica: str) -> "FollowerIdentity":
        return cls(host=socket.gethostname(), pid=os.getpid(), run=run, replica=replica, started_at=utcnow())

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (run {self.run}, since {self.started_at:%Y-%m-%d %H:%M:%S}Z)"


def lock_path(output: Path) -> Path:
    resolved = output.absolute()
    return resolved.with_name(f"{resolved.name}-walship-follow.lock")


class CopyLock:
    """The copy's applier lock; ``try_acquire`` never waits."""

    def __init__(self, output: Path) -> None:
        self.output = output.absolute()
        self.path = lock_path(output)
        self._file = self.path.open("a+")
        self.waited_seconds: float | None = None  # set when it was taken over from a running follower

    def try_acquire(self, identity: FollowerIdentity) -> bool:
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._file.seek(0)
        self._file.truncate()
        self._file.write(identity.model_dump_json())
        self._file.flush()
        return True

    def holder(self) -> str:
        """Who holds the lock, as it wrote itself down."""
        try:
            return FollowerIdentity.model_validate_json(self.path.read_bytes()).describe()
        except (OSError, ValidationError):
            return "another process"

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def hold_copy(
    output: Path,
    identity: FollowerIdentity,
    *,
    wait: float = 0.0,
    stop: threading.Event | None = None,
    advice: str = "stop it first",
    told: Callable[[str], None] = log.info,
) -> CopyLock | None:
    """Take the copy's lock, waiting up to ``wait`` s for the one who holds it; None when ``stop`` came first.

    Raises ``FollowerRunningError`` (exit 2) when it is held and ``wait`` is
    0, and ``HandoverTimedOutError`` when it is still held after ``wait``.
    """
    lock = CopyLock(output)
    try:
        if lock.try_acquire(identity):
            return lock
        holder = lock.holder()
        if wait <= 0:
            raise FollowerRunningError(f"copy {lock.output} is followed by {holder}: {advice}")
        told(f"copy {lock.output} is followed by {holder}: waiting up to {wait:.0f} s to take over")
        started = time.monotonic()
        while not lock.try_acquire(identity):
            if stop is not None and stop.is_set():
                lock.release()
                return None
            if time.monotonic() - started > wait:
                raise HandoverTimedOutError(
                    f"copy {lock.output} is still followed by {holder} after {wait:.0f} s: "
                    "wait for its window to end, or stop it"
                )
            time.sleep(_POLL)
        lock.waited_seconds = time.monotonic() - started
        told(f"took over copy {lock.output} after {lock.waited_seconds:.1f} s")
        return lock
    except BaseException:
        lock.release()
        raise


class FollowReport(BaseModel):
    """What one window of a follower did."""

    output: Path
    record: CopyRecord | None = None  # what the copy holds, as of the last update or its seal
    updates: int = 0
    segments_applied: int = 0
    rebuilds: list[str] = []  # why each rebuild by comparing pages
    pages_rewritten: int = 0
    downloaded: int = 0  # bytes
    lag_seconds: float | None = None  # of the last update: from its newest commit's capture to its being readable
    max_lag_seconds: float | None = None
    handover_waited_seconds: float | None = None
    # The window ended with the copy checkpointed into its file and its integrity checked (a follower's end also
    # records its pages' digest); readers still in its WAL keep it unsealed, its record then holding the WAL's mark.
    sealed: bool = False

    @property
    def position(self) -> str:
        return self.record.position if self.record is not None else "-"

    def add(self, update: CaughtUp) -> None:
        self.record = update.record
        self.updates += 1
        self.segments_applied += update.segments_applied
        if update.rebuilt_because is not None:
            self.rebuilds.append(update.rebuilt_because)
        self.pages_rewritten += update.pages_rewritten or 0
        self.downloaded += update.downloaded
        if update.lag_seconds is not None:
            self.lag_seconds = update.lag_seconds
            self.max_lag_seconds = max(self.max_lag_seconds or 0.0, update.lag_seconds)


def follow_window(
    store: ObjectStore,
    output: Path,
    identity: FollowerIdentity,
    *,
    interval: float,
    stop: threading.Event,
    duration: float = 0.0,
    once: bool = False,
    handover_wait: float = 0.0,
    database_id: str | None = None,
    keys: Keyring | None = None,
    report: Callable[[FollowReport, CaughtUp], None] = lambda _window, _update: None,
    unreached: Callable[[float, str], None] = lambda _seconds, _why: None,
    told: Callable[[str], None] = log.info,
) -> FollowReport:
    """Follow ``store`` into the copy at ``output`` for ``duration`` s (0: until ``stop``), or catch up ``once``.

    The window counts from its start, whatever it waited for: a window that
    took over late still ends in time to hand over to the next.
    """
    output = output.absolute()
    window = FollowReport(output=output)
    timer = threading.Timer(duration, stop.set) if duration > 0 and not once else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        if database_id is not None and (recorded := recorded_database_id(store)) not in (None, database_id):
            raise UsageError(
                f"the replica holds database {recorded!r}, not {database_id!r}: choose the right replica or id"
            )
        advice = "stop it, or wait for its window to end" if once else "stop it, or give a hand-over wait"
        lock = hold_copy(output, identity, wait=0.0 if once else handover_wait, stop=stop, advice=advice, told=told)
        if lock is None:
            return window
        window.handover_waited_seconds = lock.waited_seconds

        def seen(update: CaughtUp) -> None:
            window.add(update)
            report(window, update)

        try:
            if once:
                caught_up = catch_up(store, output, keys=keys)
                seen(caught_up)
                window.sealed = caught_up.settled
            else:
                window.record = follow(
                    store, output, interval=interval, stop=stop, keys=keys, report=seen, unreached=unreached
                )
                window.sealed = window.record is not None and window.record.state_digest is not None
        finally:
            lock.release()
    finally:
        if timer is not None:
            timer.cancel()
    return window


def catch_up_alone(
    store: ObjectStore,
    output: Path,
    identity: FollowerIdentity,
    *,
    timestamp: datetime | None = None,
    sequence: int | None = None,
    generation: str | None = None,
    keys: Keyring | None = None,
) -> CaughtUp:
    """``catch_up`` (``restore --delta``) holding the copy's lock: refused while a follower keeps the copy."""
    lock = hold_copy(output, identity, advice="stop it first (it keeps the copy at the newest point itself)")
    assert lock is not None  # no wait, nothing to stop
    try:
        return catch_up(store, output, timestamp=timestamp, sequence=sequence, generation=generation, keys=keys)
    finally:
        lock.release()
