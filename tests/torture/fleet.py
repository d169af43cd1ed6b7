"""What the torture run sees of a fleet (``walship ship-many``) from outside: whether it holds the database.

A fleet parks an idle database: its run ends caught up and the process keeps
no descriptor on the database's files, its lock included (so the lock file
still names the process that last held it, but nobody holds it). The fleet
is still running: a SIGTERM ends its window as its time would, once its
handler is in place.
"""

import contextlib
import json
import os
import signal
from pathlib import Path

__all__ = ["WAITED_FOR_HANDOVER", "handles_sigterm", "holds_files_of", "lock_names"]

# What a shipper (a fleet's database too) logs when it found the database held and waited to take it over
# (walship.handover).
WAITED_FOR_HANDOVER = "to take over"


def lock_names(database: Path, pid: int) -> bool:
    """Whether the database's shipper lock file names ``pid`` (it holds the lock, or held it last)."""
    lock = database.with_name(f"{database.name}-walship.lock")  # beside the database, whatever the spool
    with contextlib.suppress(OSError, ValueError):
        return bool(json.loads(lock.read_text()).get("pid") == pid)
    return False


def holds_files_of(database: Path, pid: int) -> bool:
    """Whether process ``pid`` has a descriptor open on the database, its WAL, index, lock or spool."""
    prefix = str(database.resolve())
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target == prefix or target.startswith(f"{prefix}-"):
                    return True
    return False


def handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` catches SIGTERM (the CLI's window handler is in place), from /proc."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False
