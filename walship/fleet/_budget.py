"""How many databases the fleet may hold open at once: the open-file limit, divided by what one costs.

A held database keeps about a dozen descriptors (four SQLite connections, each
with the database, its WAL and its index, plus the shipper's lock files and
the spool). An idle database holds none: it is parked (``walship.fleet``),
so the limit bounds the databases written at the same moment, not the fleet.
"""

from walship.errors import UsageError
from walship.fleet._memory import more_open_files

__all__ = ["FILES_PER_DATABASE", "budget_warning", "open_file_budget"]

FILES_PER_DATABASE = 16
# Left for everything else: storage connections, the spool's files being written, Python's own.
_RESERVE = 256


def open_file_budget(workers: int, limit: int | None = None) -> int:
    """How many databases may be held at once under this process's open-files limit (raised to its hard limit
    first); ``UsageError`` when not even one per worker fits."""
    limit = more_open_files() if limit is None else limit
    budget = (limit - _RESERVE) // FILES_PER_DATABASE
    if budget < workers:
        needed = _RESERVE + workers * FILES_PER_DATABASE
        raise UsageError(
            f"ship-many needs at least {needed} open files to ship {workers} databases at once, and this "
            f"process may open {limit}: raise the limit (ulimit -n {needed * 4}, or LimitNOFILE= for a service)"
        )
    return budget


def budget_warning(waiting: int, budget: int) -> str:
    """The one line a fleet logs when databases wait for the budget (written at once, more than it holds)."""
    files = _RESERVE + (budget + waiting) * FILES_PER_DATABASE
    return (
        f"{waiting} written databases wait to be opened: the open-files limit holds {budget} at once; "
        f"raise it to {files} or more (ulimit -n, or LimitNOFILE= for a service)"
    )
