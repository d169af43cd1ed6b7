"""What a thousand held databases cost in memory and open files, and the knobs the fleet turns.

Each held database keeps four SQLite connections open (two pins, the
locker, the checkpointer: walship.sqlite.WalCapture). Measured with apsw's
SQLite 3.54, one connection costs about 150 KiB once it has read its
schema, of which about 46 KiB is its lookaside buffer, an allocator that
speeds up the many small allocations of busy statements. The shipper's
connections run a few short statements a second at most, so the fleet turns
lookaside off for the whole process: 180 KiB less per database. The rest
(about 105 KiB a connection, mostly the page cache's first bulk allocation)
cannot be changed from Python.
"""

import logging
import resource

import apsw

__all__ = ["lean_sqlite", "more_open_files"]

log = logging.getLogger(__name__)


def lean_sqlite() -> bool:
    """Turn SQLite's lookaside off for connections opened from now on; False if connections are already open.

    SQLite takes global settings only while shut down, and shutting down under
    open connections is undefined: a process that already has some (a test
    suite, a flow run that did other work) keeps the defaults.
    """
    if apsw.connections():
        return False
    try:
        apsw.shutdown()
        apsw.config(apsw.SQLITE_CONFIG_LOOKASIDE, 0, 0)
    except apsw.Error:
        log.debug("SQLite kept its lookaside default", exc_info=True)
        return False
    finally:
        apsw.initialize()
    return True


def more_open_files() -> int:
    """Raise this process's open-files limit to its hard limit (a held database keeps about 12 open);
    return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard
