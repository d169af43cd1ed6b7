"""The seeds ``make test`` replays: a fixed spread, and every seed that ever failed (with what it found).

Seeds that failed are kept here for good, whatever fixed them.
"""

SECONDS = 8.0  # each schedule's length in ``make test``

# A spread of schedules: both backends, every kind of event.
SPREAD = tuple(range(1, 21))

# seed: what it found.
FAILED: dict[int, str] = {}
