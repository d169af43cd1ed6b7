"""The seeds ``make test`` replays: a fixed spread, a few with two replicas, and every seed that ever failed (with
what it found).

Seeds that failed are kept here for good, whatever fixed them.
"""

from typing import NamedTuple

SECONDS = 8.0  # each schedule's length in ``make test``

# A spread of schedules: both backends, every kind of event, single shippers and fleets that park the database.
SPREAD = tuple(range(1, 21))
# The spread's schedules as version 5 drew them: from version 6 most single shippers ship to a second replica too,
# whose outages make a run longer (a run ending with it down tries it for a while); TWO_REPLICAS covers those.
SPREAD_VERSION = 5


class Failed(NamedTuple):
    seconds: float  # the schedule's length
    version: int  # the schedule's version (tests/torture/schedule.py)
    found: str


# "One of two replicas unreachable" (schedule version 6), replayed at their own length and version: what each
# covers, and what it found when it was added.
TWO_REPLICAS: dict[int, Failed] = {
    14: Failed(
        8.0,
        6,
        "a large spool cap; the shipper ended three times while the second replica was down: exited 1 naming the "
        "first replica, which was reachable ('entries are still spooled ... storage is unreachable': the final "
        "drain's acknowledgements are not the run's)",
    ),
    15: Failed(
        8.0,
        6,
        "the second replica hanging, then down until the end: that run exits 1 naming it and ship --once catches "
        "it up; found the same false failure naming the first replica at a maintenance stop during the stall",
    ),
    119: Failed(
        8.0,
        6,
        "a small spool cap: the second replica falls behind (a damaged entry besides); found that ship --once never "
        "resumes a replica behind (nothing spooled: it never asks for its bridge snapshot); a run with commits does; "
        "later, under load, thousands of acknowledged commits missing after a clean exit: the damaged entry's new "
        "generation began within the same second and its name sorted before the old one's, so both replicas' "
        "marks (the old generation's snapshot) wanted none of its entries and they left the spool unsent",
    ),
    186468: Failed(
        12.0,
        6,
        "a small spool cap, the second replica down twice: it resumed at the shipper's periodic snapshot, stored as a "
        "plain snapshot, so its status called the gap before it lost; and the resume was said nowhere, the run "
        "ending (the replica down again) before that snapshot reached it",
    ),
    157144: Failed(
        12.0,
        6,
        "a spool disk (32 MiB) smaller than the cap (256 MiB), the second replica down until the end: the disk "
        "filled, capture stalled for both replicas, and a SIGTERM'd shipper exited 1 with committed WAL uncaptured",
    ),
}

# Replayed at their own length and version.
FAILED: dict[int, Failed] = {
    756056: Failed(10.0, 1, "41 acknowledged commits missing: a resync closed a descriptor of the database"),
    1213: Failed(10.0, 1, "1,481 acknowledged commits missing: the same"),
    285668: Failed(10.0, 1, "219 acknowledged commits missing: the same"),
    812733: Failed(10.0, 1, "a shipper's unexpected error, the WAL index not describing the WAL: the same lost locks"),
    437443: Failed(10.0, 1, "11 acknowledged commits missing: the same"),
    20: Failed(8.0, 2, "a shipper behind a spool smaller than its backlog exited 0 after one piece of it"),
    970363: Failed(12.0, 2, "2,913 acknowledged commits missing after storage outages: the same"),
    51167: Failed(12.0, 2, "783 acknowledged commits missing: the same"),
    137498: Failed(
        12.0,
        2,
        "3,357 acknowledged commits missing: the catch-up stopped at an empty sync; later a corrupt restore: "
        "a writer's read kept the WAL from restarting after the last checkpoint, and the successor continued "
        "across the restart that came after those commits were backfilled",
    ),
    101201: Failed(12.0, 2, "501 acknowledged commits missing at a hand-over: the same"),
    199428: Failed(
        12.0,
        2,
        "a damaged entry at the last drain: exit 1, then no next run (the harness now runs one)",
    ),
    41: Failed(
        8.0, 5, "a corrupt restore: an application's read across a shipper's end kept the WAL from restarting (137498)"
    ),
    736513: Failed(
        12.0, 5, "a hand-over's successor took the lock before its predecessor started (the harness waits for it now)"
    ),
}
