"""A torture schedule: which fault happens when, a pure function of the seed."""

import random
from typing import NamedTuple

__all__ = ["CHECKPOINT_MODES", "KINDS", "PARKED_ACTIONS", "VERSION", "Event", "Outage", "Plan", "plan"]

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
_KINDS_V5 = {**_KINDS_V4, "reader": 2}
# Version 6 adds no kind either: it draws a second replica and its outages (``second_replica``).
KINDS = {1: _KINDS_V1, 2: _KINDS_V2, 3: _KINDS_V4, 4: _KINDS_V4, 5: _KINDS_V5, 6: _KINDS_V5}
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
# The kinds that end the running shipper (or may).
_ENDS_A_RUN = {"kill", "term", "gap", "handover", "replace", "page-size", "reader", "damage", "spool-full"}
# How long a replica must stay down under one run, past the spool cap, to fall behind (walship uploads to it
# and fails first: some 5 s with its S3 client's own retries).
_BEHIND_AFTER = 7.0


class Event(NamedTuple):
    at: float  # seconds after the writers started
    kind: str
    gap: float  # seconds the shipper (or storage, or the writers) stay away
    detail: str  # a checkpoint mode, a page size


class Outage(NamedTuple):
    """The second replica unreachable: from ``at`` (seconds after the writers started) for ``seconds``."""

    at: float
    seconds: float
    how: str  # "stop": connections refused and reset; "stall": connections hang


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
    # A second replica (on moto, behind a proxy of its own): ``ship --replica R1 --replica R2``.
    second_replica: bool = False
    spool_cap: float = 0.0  # the shipper's --spool-cap in MiB (0: its default)
    second_outages: tuple[Outage, ...] = ()  # the second replica down and back, apart from the other events
    second_down_at: float = 0.0  # from then on down until the run's end (0: never)


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
    if version >= 6 and not run_plan.fleet:  # drawn last again; a fleet ships to one replica
        run_plan = second_replica(rng, run_plan, seconds)
    return run_plan


def second_replica(rng: random.Random, run_plan: Plan, seconds: float) -> Plan:
    """Most single shippers get a second replica that is down now and then: a spool cap so small that its
    backlog outgrows it (it falls behind, and resumes at a snapshot of its own), or a large one (it catches up
    from the spool). Its outages come and go on their own clock; now and then it stays down at the end."""
    if rng.random() >= 0.7:
        return run_plan
    small = rng.random() < 0.5
    cap = round(rng.uniform(0.05, 1.0), 2) if small else rng.choice((0.0, 64.0, 256.0))
    down_at = round(seconds - rng.uniform(1.0, 6.0), 2) if rng.random() < 0.35 else 0.0
    back_by = (down_at or seconds) - 0.5
    outages: list[Outage] = []
    events = run_plan.events
    at = rng.uniform(0.3, 3.0)
    while at < back_by - 1.0:
        length = round(min(rng.uniform(1.0, 10.0), back_by - at), 2)
        how = rng.choice(("stop", "stop", "stall"))
        if small and not outages:
            # A replica falls behind once an upload to it failed (some 5 s into an outage) while the spool is past
            # the cap and a run goes on: the first outage is a long one that no event ends the shipper in.
            length, how = round(min(rng.uniform(6.0, 10.0), back_by - at), 2), "stop"
            events = tuple(e for e in events if not (at - 1.0 <= e.at <= at + _BEHIND_AFTER and _ends_a_run(e)))
        outages.append(Outage(round(at, 2), length, how))
        at += length + rng.uniform(0.5, 4.0)
    return run_plan._replace(
        events=events, second_replica=True, spool_cap=cap, second_outages=tuple(outages), second_down_at=down_at
    )


def _ends_a_run(event: Event) -> bool:
    """Whether ``event`` ends the running shipper (or may: a damaged entry, a full spool)."""
    return event.kind in _ENDS_A_RUN or (event.kind == "park" and event.detail == "restart")
