"""How long Object Lock keeps a replica's restorable points: estimated for ``status``, proven for ``verify``.

A point needs its snapshot and every segment after it; the point is locked
until the earliest of their locks ends. ``status`` estimates each object's
lock from the bucket's default retention and the object's write time (no
request per object); ``verify --require-lock-days`` reads each object's own
lock (a HEAD each), which also covers objects written before the default
was set or with a lock of their own.
"""

import bisect
import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from walship.generations import GenerationState, describe_generations
from walship.layout import generation_prefix, parse_segment_key
from walship.models import ObjectInfo, SnapshotInfo
from walship.storage import BucketProtection, ObjectStore, versions_of

__all__ = ["PointLocks", "estimate_locks", "newest_point_objects", "require_lock"]

# HEADs in flight when every object of a point is checked: S3 answers each in milliseconds, one at a time
# a point of thousands of segments would take seconds.
_HEADS_IN_FLIGHT = 8


class PointLocks(BaseModel):
    """The lock of the newest restorable point and of the oldest point still locked, from the default."""

    model_config = ConfigDict(frozen=True)

    newest_until: datetime | None = None
    days: int = 0  # the oldest point asked for is locked at least this many more days
    oldest_locked: str | None = None  # the snapshot key a restore of that point starts from
    oldest_taken_at: datetime | None = None
    oldest_until: datetime | None = None

    def describe(self) -> str:
        if self.newest_until is None:
            return "no point is locked by the bucket's default retention"
        line = f"the newest point until at least {self.newest_until:%Y-%m-%d %H:%M}Z"
        if self.oldest_locked is not None and self.oldest_until is not None and self.oldest_taken_at is not None:
            locked = f"locked {self.days} more days" if self.days else "still locked"
            line += (
                f"; the oldest point {locked} starts at the snapshot of {self.oldest_taken_at:%Y-%m-%d %H:%M}Z, "
                f"until at least {self.oldest_until:%Y-%m-%d %H:%M}Z"
            )
        elif self.days:
            line += f"; no point is locked {self.days} more days"
        return line


def point_objects(state: GenerationState, snapshot: SnapshotInfo, listing: Sequence[ObjectInfo]) -> list[ObjectInfo]:
    """The objects a restore from ``snapshot`` to its generation's end reads: the snapshot and every later segment."""
    prefix = generation_prefix(state.generation)
    chosen = []
    for obj in listing:
        if not obj.key.startswith(prefix):
            continue
        parsed = parse_segment_key(obj.key)
        if obj.key == snapshot.key or (parsed is not None and parsed.sequence > snapshot.sequence):
            chosen.append(obj)
    return chosen


def estimate_locks(
    protection: BucketProtection,
    generations: Sequence[GenerationState],
    listing: Sequence[ObjectInfo],
    now: datetime,
    days: int = 0,
) -> PointLocks:
    """The newest point's lock and the oldest point locked ``days`` more days, as the bucket's default
    retention sets them from the objects' write times."""
    if protection.lock_mode is None:
        return PointLocks()
    written = {o.key: o.last_modified for o in listing if o.last_modified is not None}
    # Per generation, its segments by sequence and the earliest write time from each one on: a point's
    # earliest object is found by one bisection, however many snapshots and segments the replica holds.
    segments: dict[str, list[tuple[int, datetime]]] = {}
    for obj in listing:
        parsed = parse_segment_key(obj.key)
        if parsed is not None and obj.last_modified is not None:
            segments.setdefault(parsed.generation, []).append((parsed.sequence, obj.last_modified))
    earliest_from: dict[str, tuple[list[int], list[datetime]]] = {}
    for generation, found in segments.items():
        found.sort()
        times = [time for _, time in found]
        earliest_from[generation] = ([seq for seq, _ in found], list(itertools.accumulate(reversed(times), min))[::-1])

    def until(state: GenerationState, snapshot: SnapshotInfo) -> datetime | None:
        times = [written[snapshot.key]] if snapshot.key in written else []
        sequences, earliest = earliest_from.get(state.generation, ([], []))
        after = bisect.bisect_right(sequences, snapshot.sequence)
        times += earliest[after : after + 1]
        return protection.default_until(min(times)) if times else None

    restorable = [g for g in generations if g.snapshots]
    if not restorable:
        return PointLocks()
    newest_until = until(restorable[-1], restorable[-1].snapshots[-1])
    for state in restorable:
        for snapshot in state.snapshots:
            locked = until(state, snapshot)
            if locked is not None and locked > now + timedelta(days=days):
                return PointLocks(
                    newest_until=newest_until,
                    days=days,
                    oldest_locked=snapshot.key,
                    oldest_taken_at=snapshot.created_at,
                    oldest_until=locked,
                )
    return PointLocks(newest_until=newest_until, days=days)


def newest_point_objects(store: ObjectStore) -> tuple[SnapshotInfo, list[ObjectInfo]] | None:
    """The snapshot a default restore starts from and the objects it reads (None: nothing restorable)."""
    generations = describe_generations(store)
    newest = generations.newest
    if newest is None or not newest.snapshots:
        return None
    snapshot = newest.snapshots[-1]
    listing = list(store.list(generation_prefix(newest.generation)))
    return snapshot, point_objects(newest, snapshot, listing)


def require_lock(store: ObjectStore, days: int, now: datetime) -> tuple[bool, str]:
    """Whether every object of the newest restorable point is locked ``days`` more days, and what was found."""
    versioned = versions_of(store)
    if versioned is None:
        return False, f"{store.location} keeps no object lock: use an S3 bucket with Object Lock"
    found = newest_point_objects(store)
    if found is None:
        return False, "no restorable point to check"
    snapshot, objects = found
    needed = now + timedelta(days=days)
    with ThreadPoolExecutor(_HEADS_IN_FLIGHT) as pool:
        locks = list(pool.map(lambda o: versioned.version_lock(o.key), objects))
    short = [(o.key, until) for o, (_, until) in zip(objects, locks, strict=True) if until is None or until < needed]
    modes = sorted({mode for mode, _ in locks if mode is not None})
    if short:
        key, until = short[0]
        held = f"locked until {until:%Y-%m-%d %H:%M}Z" if until else "not locked"
        return False, (
            f"{len(short)} of {len(objects)} objects of the newest point are locked less than {days} days "
            f"(first {key}: {held}): set the bucket's default retention to at least {days} days"
        )
    earliest = min(until for _, until in locks if until is not None)
    return True, (
        f"the newest point ({snapshot.key} + {len(objects) - 1} segments) is locked "
        f"({', '.join(modes)}) until at least {earliest:%Y-%m-%d %H:%M}Z, {days} days or more from now"
    )
