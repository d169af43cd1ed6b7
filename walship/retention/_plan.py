"""Plan retention: a pure function from (policy, listing, now) to what stays and what goes.

Nothing here touches storage, so the rules can be tested exhaustively and a
dry run shows exactly what an apply would do. Snapshots are kept by the
policy's rules; segments follow from the kept snapshots: within a generation
every segment after the oldest kept snapshot stays (each kept point, and
every point between it and the generation's end, needs them), and everything
before it goes. A generation with no kept snapshot goes whole.
"""

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from walship.layout import parse_generation, parse_segment_key
from walship.models import ObjectInfo, SnapshotInfo
from walship.retention._policy import RetentionPolicy, format_duration
from walship.storage import ObjectVersion

__all__ = ["GenerationDecision", "RetentionPlan", "SnapshotDecision", "plan_retention"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SnapshotDecision(_Frozen):
    """One snapshot: kept (and why) or deleted."""

    key: str
    generation: str
    sequence: int
    created_at: datetime
    size: int
    keep: bool
    reasons: tuple[str, ...]


class GenerationDecision(_Frozen):
    """A generation's segments: those after ``kept_after`` stay, the rest go."""

    generation: str
    kept_after: int | None  # None: no segment of this generation is kept
    segments_kept: int
    bytes_kept: int
    delete: dict[str, int]  # key -> stored bytes
    bytes_deleted: int
    reason: str


class RetentionPlan(_Frozen):
    """Everything a retention run would keep and delete, with reasons."""

    now: datetime
    policy: RetentionPolicy
    snapshots: tuple[SnapshotDecision, ...]
    generations: tuple[GenerationDecision, ...]
    # Files interrupted uploads left (key -> bytes), idle for ``LEFTOVER_AGE`` and held by no live upload.
    leftovers: dict[str, int] = {}
    # On a versioned bucket (walship.retention._locks): every version of each key goes, and keys whose
    # generation holds a version under object lock stay until the date given.
    versioned: bool = False
    versions: dict[str, tuple[ObjectVersion, ...]] = {}
    held: dict[str, datetime] = {}

    @property
    def kept_snapshots(self) -> list[SnapshotDecision]:
        return [s for s in self.snapshots if s.keep]

    @property
    def deleted_snapshots(self) -> list[SnapshotDecision]:
        return [s for s in self.snapshots if not s.keep]

    @property
    def delete_keys(self) -> list[str]:
        """Snapshots first: a crash part-way leaves spare segments, never a snapshot missing its WAL.

        Those object lock holds are not among them."""
        planned = [s.key for s in self.deleted_snapshots] + [k for g in self.generations for k in g.delete]
        return [k for k in planned if k not in self.held]

    @property
    def delete_sizes(self) -> dict[str, int]:
        sizes = {s.key: s.size for s in self.deleted_snapshots}
        for generation in self.generations:
            sizes.update(generation.delete)
        return sizes

    @property
    def bytes_to_free(self) -> int:
        sizes = self.delete_sizes
        return sum(sizes[k] for k in self.delete_keys) + sum(self.leftovers.values())

    @property
    def bytes_kept(self) -> int:
        return sum(s.size for s in self.kept_snapshots) + sum(g.bytes_kept for g in self.generations)


def plan_retention(
    policy: RetentionPolicy,
    snapshots: Sequence[SnapshotInfo],
    segments: Sequence[ObjectInfo],
    now: datetime,
    newest_data: str | None = None,
) -> RetentionPlan:
    """Decide, for every listed snapshot and segment, whether it stays.

    Never deletes the newest snapshot, nor anything a default restore of
    ``newest_data`` (the generation holding the newest data, from
    ``walship.generations``) needs: its newest snapshot and every segment after it.
    """
    ordered = sorted(snapshots, key=lambda s: (s.created_at, s.key))
    reasons = _snapshot_reasons(policy, ordered, now)
    of_newest_data = [s for s in ordered if s.generation == newest_data]
    if of_newest_data:
        reasons[of_newest_data[-1].key].append("holds the newest data")
    decisions = tuple(
        SnapshotDecision(
            key=s.key,
            generation=s.generation,
            sequence=s.sequence,
            created_at=s.created_at,
            size=s.compressed_size,
            keep=bool(reasons[s.key]),
            reasons=tuple(reasons[s.key]) or ("outside the policy",),
        )
        for s in ordered
    )
    newest_time = ordered[-1].created_at if ordered else None
    return RetentionPlan(
        now=now,
        policy=policy,
        snapshots=decisions,
        generations=_generation_decisions(decisions, segments, newest_time, newest_data),
    )


def _snapshot_reasons(policy: RetentionPolicy, ordered: list[SnapshotInfo], now: datetime) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {s.key: [] for s in ordered}
    if not ordered:
        return reasons
    reasons[ordered[-1].key].append("newest")
    if policy.keep_last:
        for snapshot in ordered[-policy.keep_last :]:
            reasons[snapshot.key].append(f"one of the last {policy.keep_last}")
    window = policy.window
    if window is not None:
        label = format_duration(window)
        cutoff = now - window
        older = [s for s in ordered if s.created_at < cutoff]
        for snapshot in ordered:
            if snapshot.created_at >= cutoff:
                reasons[snapshot.key].append(f"within {label}")
        if older:
            # Points between the cutoff and the first snapshot inside the
            # window restore from the last snapshot before it, plus its WAL.
            reasons[older[-1].key].append(f"start of the {label} window")
    today = now.date()
    for count, period in (
        (policy.keep_daily, "daily"),
        (policy.keep_weekly, "weekly"),
        (policy.keep_monthly, "monthly"),
    ):
        if not count:
            continue
        bucket_of = _BUCKETS[period]
        wanted = {_back(period, today, k) for k in range(count)}
        newest: dict[str, SnapshotInfo] = {}
        for snapshot in ordered:
            bucket = bucket_of(snapshot.created_at.astimezone(UTC).date())
            if bucket in wanted:
                newest[bucket] = snapshot  # ordered oldest first: the last one wins
        for bucket, snapshot in newest.items():
            reasons[snapshot.key].append(f"{period} {bucket}")
    return reasons


def _generation_decisions(
    snapshots: Sequence[SnapshotDecision],
    segments: Sequence[ObjectInfo],
    newest_time: datetime | None,
    newest_data: str | None,
) -> tuple[GenerationDecision, ...]:
    by_generation: dict[str, list[tuple[int, ObjectInfo]]] = defaultdict(list)
    for obj in segments:
        parsed = parse_segment_key(obj.key)
        if parsed is not None:
            by_generation[parsed.generation].append((parsed.sequence, obj))
    generations = sorted(set(by_generation) | {s.generation for s in snapshots})
    decisions = []
    for generation in generations:
        kept = [s for s in snapshots if s.generation == generation and s.keep]
        listed = sorted(by_generation.get(generation, []), key=lambda item: item[0])
        if kept:
            oldest = min(kept, key=lambda s: s.sequence)
            kept_after: int | None = oldest.sequence
            reason = f"segments after sequence {oldest.sequence} are needed by {oldest.key}"
        elif generation == newest_data:
            # Unrestorable without its snapshot, but it is the newest data: deleting it would lose it for good.
            kept_after, reason = -1, "holds the newest data (no snapshot of it is listed)"
        elif newest_time is None or parse_generation(generation) > newest_time:
            # Segments listed before their snapshot: it may be uploading now.
            kept_after, reason = -1, "newer than every snapshot (its snapshot may still be uploading)"
        else:
            kept_after, reason = None, "no snapshot of this generation is kept"
        keep = [obj for seq, obj in listed if kept_after is not None and seq > kept_after]
        drop = [obj for seq, obj in listed if kept_after is None or seq <= kept_after]
        decisions.append(
            GenerationDecision(
                generation=generation,
                kept_after=kept_after,
                segments_kept=len(keep),
                bytes_kept=sum(o.size for o in keep),
                delete={o.key: o.size for o in drop},
                bytes_deleted=sum(o.size for o in drop),
                reason=reason,
            )
        )
    return tuple(decisions)


# Calendar buckets as labels that sort and read well: 2026-11-24, 2026-W48, 2026-11.
_BUCKETS: dict[str, Callable[[date], str]] = {
    "daily": lambda day: day.isoformat(),
    "weekly": lambda day: "{}-W{:02d}".format(*day.isocalendar()[:2]),
    "monthly": lambda day: f"{day.year}-{day.month:02d}",
}


def _back(period: str, today: date, count: int) -> str:
    """The label of the period ``count`` periods before today's."""
    if period == "daily":
        return _BUCKETS[period](today - timedelta(days=count))
    if period == "weekly":
        return _BUCKETS[period](today - timedelta(weeks=count))
    index = today.year * 12 + today.month - 1 - count
    return f"{index // 12}-{index % 12 + 1:02d}"
