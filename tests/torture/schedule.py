"""A torture schedule: which fault happens when, a pure function of the seed."""

import random
from typing import NamedTuple

__all__ = ["CHECKPOINT_MODES", "KINDS", "PARKED_ACTIONS", "VERSION", "Event", "Plan", "plan"]

CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")

# Each kind with its weight. ``gap`` stops the shipper cleanly and starts the next one later;
# ``quiet`` is the application closing its last connection (writers stop cleanly, then start again);
# ``replace`` and ``page-size`` happen while nothing holds the database (a maintenance window);
# ``damage`` flips a byte of a spooled entry while storage is down, which must stop the shipper loudly;
# ``spool-full`` fills the spool's own small filesystem for a while (from version 2 the spool lives on one);
# ``park`` pauses the writers (their connections open) until a fleet parks the database (a single shipper: a while),
# then does its detail while it is parked (an application checkpoint, the application's last close, a VACUUM, the
# shipper's SIGTERM and the next one's start, or nothing) and resumes them;
# ``reader`` is an application's long read that begins while the writers are quiet and spans the shipper's end.
_KINDS_V1 = {
    "kill": 3,
    "term": 2,
    "gap": 3,
    "handover": 2,
    "checkpoint": 4,
    "quiet": 2,
    "vacuum": 1,
    "outage": 2,
    "replace": 1,
    "page-size": 1,
}
# Each version adds kinds; a seed replays the schedule of the version it was drawn with.
_KINDS_V2 = {**_KINDS_V1, "stall": 1, "damage": 1, "spool-full": 1}
# Version 4 adds no kind: it draws the shipper's --coalesce window.
_KINDS_V4 = {**_KINDS_V2, "park": 3}
KINDS = {1: _KINDS_V1, 2: _KINDS_V2, 3: _KINDS_V4, 4: _KINDS_V4, 5: {**_KINDS_V4, "reader": 2}}
VERSION = max(KINDS)

# What a ``park`` event does while the database is parked.
PARKED_ACTIONS = ("", *CHECKPOINT_MODES, "close", "vacuum", "restart")
# The schedule's allowance for a ``park`` event's wait until the database is parked (a fleet parks it some 5-11 s
# after the last commit, whatever its --park-after: it stays hot for a while first).
_PARK_ALLOWANCE = 8.0
# What a fleet has no use for: ``ship-many`` takes no --spool.
_NOT_FOR_A_FLEET = {"spool-full"}


# Faults of the storage, through the proxy in front of moto.
_STORAGE_FAULTS = {"outage", "stall", "damage"}


class Event(NamedTuple):
    at: float  # seconds after the writers started
    kind: str
    gap: float  # seconds the shipper (or storage, or the writers) stay away
    detail: str  # a checkpoint mode, a page size


class Plan(NamedTuple):
    seed: int
    backend: str  # "local" (file://) or "moto" (S3 through a proxy that outages stop)
    writers: tuple[float, ...]  # each writer's commits a second
    interval: float  # the shipper's --interval
    events: tuple[Event, ...]
    timestamps: tuple[float, ...]  # extra point-in-time restores, as fractions of the run
    spool_mib: int = 0  # the spool on a tmpfs of this size (0: beside the database)
    fleet: bool = False  # shipped by ``walship ship-many`` (which parks the idle database) instead of ``ship``
    park_after: float = 0.0  # the fleet's --park-after
    coalesce: float = 0.0  # the shipper's --coalesce (0: its default); longer than interval too


def plan(seed: int, seconds: float, version: int = VERSION) -> Plan:
    rng = random.Random(seed)
    backend = rng.choice(("local", "moto"))
    table = KINDS[version]
    kinds = [k for k in table if backend == "moto" or k not in _STORAGE_FAULTS]
    weights = [table[k] for k in kinds]
    events: list[Event] = []
    at = rng.uniform(0.8, 2.0)
    while at < seconds - 1.0:
        kind = rng.choices(kinds, weights)[0]
        gap = round(rng.choice((0.0, rng.uniform(0.2, 2.5))), 2)
        detail = ""
        if kind == "checkpoint":
            detail = rng.choice(CHECKPOINT_MODES)
        elif kind == "page-size":
            detail = str(rng.choice((1024, 2048, 8192, 16384)))
        elif kind == "park":
            detail = rng.choice(PARKED_ACTIONS)
        events.append(Event(round(at, 2), kind, gap, detail))
        at += gap + rng.uniform(0.6, 2.5) + (_PARK_ALLOWANCE if kind == "park" else 0.0)
    run_plan = Plan(
        seed=seed,
        backend=backend,
        writers=tuple(round(rng.uniform(20, 250), 1) for _ in range(rng.randint(1, 3))),
        interval=rng.choice((0.3, 0.5, 1.0)),
        events=tuple(events),
        timestamps=tuple(sorted(round(rng.uniform(0.2, 1.0), 3) for _ in range(2))),
    )
    if version >= 2:  # drawn last: what earlier versions drew stays as it was
        run_plan = run_plan._replace(spool_mib=rng.choice((16, 32, 64)))
    if version >= 3:  # drawn last again, for the same reason
        fleet, park_after = rng.random() < 0.5, round(rng.uniform(0.5, 3.0), 2)
        if fleet:  # its spool is the default one, beside the database
            events = [e for e in events if e.kind not in _NOT_FOR_A_FLEET]
            run_plan = run_plan._replace(events=tuple(events), spool_mib=0, fleet=True, park_after=park_after)
    if version >= 4:  # drawn last again
        run_plan = run_plan._replace(coalesce=rng.choice((0.0, 0.05, 0.15, 0.35, 0.7)))
    return run_plan
