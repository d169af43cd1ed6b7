"""The seeds ``make test`` replays: a fixed spread, and every seed that ever failed (with what it found).

Seeds that failed are kept here for good, whatever fixed them.
"""

SECONDS = 8.0  # each schedule's length in ``make test``

# A spread of schedules: both backends, every kind of event.
SPREAD = tuple(range(1, 21))

# seed: (the schedule's length in seconds, what it found). Replayed at that length.
FAILED: dict[int, tuple[float, str]] = {
    756056: (10.0, "41 acknowledged commits missing: a resync closed a descriptor of the database"),
    1213: (10.0, "1,481 acknowledged commits missing: the same"),
    285668: (10.0, "219 acknowledged commits missing: the same"),
    812733: (10.0, "a shipper's unexpected error, the WAL index not describing the WAL: the same lost locks"),
    437443: (10.0, "11 acknowledged commits missing: the same"),
}
