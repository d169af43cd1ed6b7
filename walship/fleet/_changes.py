"""Which databases' files changed, as the kernel tells it (Linux inotify): how parked databases cost nothing idle.

Without it, a parked database is looked at through two ``stat`` calls every
idle poll, and with ten thousand of them that is the fleet's whole idle
cost. One inotify watch per directory that holds databases reports each
write, creation, deletion and rename of a file in it; a change of a
database or of its WAL brings that database's next look forward to now.

Events are trusted only on filesystems of this machine's kernel: a write
made on another host of a network filesystem raises none here. There, or
without inotify, or past its watch limit, a database is looked at every
idle poll as before. A watched parked database is still looked at now and
then (``WATCHED_POLL``): a lost event delays its capture, never loses it.
"""

import ctypes
import errno
import functools
import logging
import os
import select
import struct
import sys
import threading
from pathlib import Path

__all__ = ["WATCHED_POLL", "ChangeWatch"]

log = logging.getLogger(__name__)

# How often a parked database under a watch is looked at all the same.
WATCHED_POLL = 10.0
# Events are read at most this often.
_BATCH_SECONDS = 0.05

_IN_MODIFY, _IN_ATTRIB, _IN_MOVED_FROM, _IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
_IN_CREATE, _IN_DELETE, _IN_DELETE_SELF, _IN_MOVE_SELF = 0x100, 0x200, 0x400, 0x800
_IN_Q_OVERFLOW, _IN_IGNORED, _IN_ONLYDIR = 0x4000, 0x8000, 0x01000000
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_MASK = (
    _IN_MODIFY | _IN_ATTRIB | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, length of the name that follows

# statfs f_type of local filesystems, whose every write this kernel sees.
_LOCAL = {
    0xEF53,  # ext2/3/4
    0x58465342,  # xfs
    0x9123683E,  # btrfs
    0x01021994,  # tmpfs
    0x858458F6,  # ramfs
    0x794C7630,  # overlayfs
    0x2FC12FC1,  # zfs
    0xF2F52010,  # f2fs
    0xCA451A4E,  # bcachefs
    0x3153464A,  # jfs
}


class ChangeWatch:
    """Watches the directories of ``databases``; ``take`` returns the indices of those changed since it last did.

    ``nudge`` is set whenever there is something to take.
    """

    def __init__(self, databases: list[Path], nudge: threading.Event) -> None:
        self._databases = databases
        self._nudge = nudge
        self._names: dict[tuple[int, bytes], list[int]] = {}
        self._by_watch: dict[int, list[int]] = {}
        self._changed: set[int] = set()
        self._lock = threading.Lock()
        self._fd = -1
        self._wakeup: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self.watched = [False] * len(databases)

    def start(self) -> None:
        """Add the watches and start listening; without inotify nothing is watched (every ``watched`` False)."""
        self._fd = _inotify_init()
        if self._fd < 0:
            return
        directories: dict[Path, list[int]] = {}
        names: list[bytes] = []
        for i, (directory, name) in enumerate(_where(self._databases)):
            directories.setdefault(directory, []).append(i)
            names.append(name)
        for directory, indices in directories.items():
            if not _local(directory):
                log.info("%s is not on a local filesystem: its databases are looked at every poll", directory)
                continue
            wd = _add_watch(self._fd, directory)
            if wd < 0:
                continue
            self._by_watch[wd] = indices
            for i in indices:
                for file in (names[i], names[i] + b"-wal"):
                    self._names.setdefault((wd, file), []).append(i)
                self.watched[i] = True
        if not self._by_watch:
            os.close(self._fd)
            self._fd = -1
            return
        self._wakeup = os.pipe()
        self._thread = threading.Thread(target=self._listen, name="walship-fleet-changes", daemon=True)
        self._thread.start()

    def take(self) -> set[int]:
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

    def close(self) -> None:
        if self._thread is not None and self._wakeup is not None:
            os.write(self._wakeup[1], b"x")
            self._thread.join()
            for fd in self._wakeup:
                os.close(fd)
            self._thread = self._wakeup = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _listen(self) -> None:
        assert self._wakeup is not None
        while True:
            ready, _, _ = select.select([self._fd, self._wakeup[0]], [], [])
            if self._wakeup[0] in ready:
                return
            try:
                data = os.read(self._fd, 256 * 1024)
            except BlockingIOError:
                continue
            changed = self._parse(data)
            if changed:
                with self._lock:
                    self._changed |= changed
                self._nudge.set()
            # Written databases raise events at every commit: reading them in batches, the kernel merges a file's
            # repeated writes meanwhile and this thread wakes (and takes the interpreter's lock) a few times a second.
            if select.select([self._wakeup[0]], [], [], _BATCH_SECONDS)[0]:
                return

    def _parse(self, data: bytes) -> set[int]:
        changed: set[int] = set()
        offset, size = 0, _EVENT.size
        while offset < len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + size : offset + size + length].rstrip(b"\0")
            offset += size + length
            if mask & _IN_Q_OVERFLOW:
                # The kernel dropped events: any watched database may have changed.
                changed.update(i for i, watched in enumerate(self.watched) if watched)
            elif mask & (_IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF):
                # The directory itself went: its databases are looked at every poll from now on.
                for i in self._by_watch.get(wd, []):
                    self.watched[i] = False
                    changed.add(i)
            else:
                changed.update(self._names.get((wd, name), ()))
        return changed


def _where(databases: list[Path]) -> list[tuple[Path, bytes]]:
    """The directory that holds each database's file, links followed (SQLite puts the WAL beside the file the link
    names), and its name there: one ``lstat`` per database, one ``realpath`` per directory."""
    real: dict[Path, Path] = {}
    found = []
    for database in databases:
        if database.is_symlink():
            target = database.resolve()
            found.append((target.parent, os.fsencode(target.name)))
            continue
        if (directory := real.get(database.parent)) is None:
            directory = real[database.parent] = database.parent.resolve()
        found.append((directory, os.fsencode(database.name)))
    return found


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _inotify_init() -> int:
    libc = _libc()
    if libc is None or not hasattr(libc, "inotify_init1"):
        return -1
    fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
    if fd < 0:
        log.info("no inotify instance (%s): parked databases are looked at every poll", os.strerror(ctypes.get_errno()))
    return fd


def _add_watch(fd: int, directory: Path) -> int:
    libc = _libc()
    assert libc is not None
    wd = int(libc.inotify_add_watch(fd, os.fsencode(directory), _MASK | _IN_ONLYDIR))
    if wd < 0:
        code = ctypes.get_errno()
        hint = " (raise fs.inotify.max_user_watches)" if code == errno.ENOSPC else ""
        log.info("cannot watch %s: %s%s; its databases are looked at every poll", directory, os.strerror(code), hint)
    return wd


def _local(directory: Path) -> bool:
    libc = _libc()
    if libc is None:
        return False
    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if libc.statfs(os.fsencode(directory), buffer) != 0:
        return False
    # f_type is its first field, a long.
    return (ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF) in _LOCAL
