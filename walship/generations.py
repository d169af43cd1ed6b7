"""Which generation holds the newest data, and whether it restores (invariant 11).

Two shippers, or a snapshot deleted by hand, can leave a replica whose
newest snapshot is not where its newest data is. Restore, verify, status and
retention all ask this module, so they never disagree about which generation
a default restore must use: the one whose newest point (its newest segment's
capture, or its newest snapshot) is latest. When that one cannot be restored,
the default restore fails and names the explicit ways to an older point; it
never quietly restores an older generation instead.

Cost: one LIST of ``generations/``, a HEAD per snapshot the index does not
describe, and one HEAD of each generation's newest segment.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from walship.catalog import UnusableSnapshot, scan_snapshots, select_snapshot
from walship.chain import segment_from_object
from walship.errors import CorruptObjectError, NotFoundError
from walship.layout import GENERATIONS_PREFIX, format_segment_key, parse_generation, parse_segment_key
from walship.models import ObjectInfo, SnapshotInfo
from walship.storage import ObjectStore

__all__ = ["GenerationState", "ReplicaGenerations", "choose_snapshot", "choose_start", "describe_generations"]

_HOW_TO_LIST = "run 'walship status --json' to see the generations"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class GenerationState(_Frozen):
    """One generation as a listing shows it."""

    generation: str
    snapshots: tuple[SnapshotInfo, ...]  # usable ones, oldest first
    unusable: tuple[UnusableSnapshot, ...]
    sequences: tuple[int, ...]  # listed segment sequences, ascending
    newest_point: datetime
    newest_captured_at: datetime | None  # of the newest segment walship wrote, if any
    # Sequences missing inside the generation's range (first of each gap).
    gaps: tuple[int, ...]
    # Why a default restore of this generation to its end fails; None when it does not.
    problem: str | None

    @property
    def restorable(self) -> bool:
        return self.problem is None

    @property
    def end(self) -> int:
        return max([*self.sequences, *(s.sequence for s in self.snapshots), 0])


class ReplicaGenerations(_Frozen):
    """Every generation holding walship data, oldest newest point first, and the strays beside them."""

    generations: tuple[GenerationState, ...]
    strays: tuple[str, ...]

    @property
    def newest(self) -> GenerationState | None:
        """The generation a default restore must use: the one whose newest point is latest."""
        return self.generations[-1] if self.generations else None

    @property
    def snapshots(self) -> list[SnapshotInfo]:
        return sorted((s for g in self.generations for s in g.snapshots), key=lambda s: (s.created_at, s.key))

    def end_of(self, snapshot: SnapshotInfo) -> int | None:
        """Where a restore from ``snapshot`` to its generation's end stops: its newest segment walship wrote.

        None when there is no segment after the snapshot. Naming the end keeps a
        stray listed after it (a key walship did not write) out of the restore.
        """
        state = self.get(snapshot.generation)
        after = [q for q in state.sequences if q > snapshot.sequence] if state else []
        return after[-1] if after else None

    def get(self, name: str) -> GenerationState | None:
        return next((g for g in self.generations if g.generation == name), None)

    def require_newest(self) -> tuple[GenerationState, SnapshotInfo]:
        """The newest-data generation and the snapshot its default restore starts from; raise if it cannot."""
        newest = self.newest
        if newest is None:
            raise NotFoundError("the replica holds no walship snapshot: run 'walship status' to see what it holds")
        if newest.problem is not None:
            raise NotFoundError(f"{newest.problem}\n{self.older_options()}")
        return newest, newest.snapshots[-1]

    def older_options(self) -> str:
        """The explicit ways to restore an older point when the newest data cannot be restored."""
        newest = self.newest
        options = []
        if newest is not None and newest.snapshots and newest.gaps:
            base = newest.snapshots[-1].sequence
            before_gap = [g - 1 for g in newest.gaps if g > base]
            if before_gap:
                options.append(f"--generation {newest.generation} --sequence {before_gap[0]}")
        older = [g for g in self.generations[:-1] if g.restorable]
        if older:
            options.append(f"--generation {older[-1].generation}")
        options.append("--timestamp T")
        return f"to restore an older point, name it: {' or '.join(options)} ({_HOW_TO_LIST})"

    def problems(self) -> list[str]:
        """What status and verify report: the newest data unrestorable, gaps, damaged snapshots."""
        found = []
        newest = self.newest
        if newest is not None and newest.problem is not None:
            found.append(newest.problem)
        for state in self.generations:
            for gap in state.gaps:
                key = format_segment_key(state.generation, gap)
                if state is not newest or newest.problem is None or key not in newest.problem:
                    found.append(f"{key} is missing: a gap in generation {state.generation}'s segments")
            found += [u.reason for u in state.unusable if not u.stray and u.reason not in (state.problem or "")]
        return found


def describe_generations(
    store: ObjectStore, known: Sequence[SnapshotInfo] = (), listing: Iterable[ObjectInfo] | None = None
) -> ReplicaGenerations:
    """Describe every generation from one listing (``known``: the index's descriptions, sparing HEADs)."""
    objects = list(store.list(GENERATIONS_PREFIX) if listing is None else listing)
    snapshots, unusable = scan_snapshots(store, known, objects)
    segments: dict[str, list[ObjectInfo]] = defaultdict(list)
    for obj in objects:
        parsed = parse_segment_key(obj.key)
        if parsed is not None:
            segments[parsed.generation].append(obj)
    names = {s.generation for s in snapshots} | set(segments) | {_generation_of(u.key) for u in unusable}
    states: list[GenerationState] = []
    strays = [u.key for u in unusable if u.stray]
    for name in sorted(names):
        listed = sorted(segments.get(name, []), key=lambda o: _sequence(o.key))
        usable = tuple(s for s in snapshots if s.generation == name)
        newest_segment, stray_segments = _newest_segment(store, listed)
        strays += stray_segments
        points = [p for p in (newest_segment, usable[-1].created_at if usable else None) if p is not None]
        damaged_segment = newest_segment is None and len(listed) > len(stray_segments)
        if damaged_segment or any(not u.stray and _generation_of(u.key) == name for u in unusable):
            # Damaged objects of walship's are data we cannot read, not strays: they
            # count from their generation's start, so they are never silently skipped.
            points.append(parse_generation(name))
        if not points:
            continue  # nothing walship wrote: its objects are strays, not data
        sequences = tuple(_sequence(o.key) for o in listed if o.key not in stray_segments)
        unusable_here = tuple(u for u in unusable if _generation_of(u.key) == name)
        gaps = _gaps(sequences, usable)
        states.append(
            GenerationState(
                generation=name,
                snapshots=usable,
                unusable=unusable_here,
                sequences=sequences,
                newest_point=max(points),
                newest_captured_at=newest_segment,
                gaps=gaps,
                problem=_problem(name, usable, unusable_here, sequences, gaps, max(points)),
            )
        )
    states.sort(key=lambda g: (g.newest_point, g.generation))
    return ReplicaGenerations(generations=tuple(states), strays=tuple(sorted(strays)))


def choose_snapshot(
    generations: ReplicaGenerations,
    *,
    before: datetime | None = None,
    generation: str | None = None,
    sequence: int | None = None,
) -> SnapshotInfo:
    """The snapshot a restore starts from: by generation and sequence, by time, or the newest data's."""
    if generation is not None:
        state = generations.get(generation)
        if state is None:
            raise NotFoundError(f"generation {generation} does not exist in the replica: {_HOW_TO_LIST}")
        if before is not None and sequence is None:
            # A snapshot taken after the asked time would restore a later state than asked.
            return select_snapshot(list(state.snapshots), before=before)
        return select_snapshot(generations.snapshots, generation=generation, sequence=sequence)
    if sequence is not None:
        newest = generations.newest
        if newest is None:
            raise NotFoundError("the replica holds no walship snapshot to replay WAL onto: run 'walship status'")
        return select_snapshot(generations.snapshots, generation=newest.generation, sequence=sequence)
    if before is not None:
        return _at_time(generations, before)
    return generations.require_newest()[1]


def choose_start(
    generations: ReplicaGenerations,
    *,
    snapshot_key: str | None = None,
    before: datetime | None = None,
    generation: str | None = None,
    sequence: int | None = None,
) -> tuple[SnapshotInfo, int | None]:
    """Where a restore starts and the sequence it stops at (None: wherever ``before`` or the chain ends).

    A restore of the newest data stops at the end of its generation as this
    listing saw it, so a segment uploaded during the restore is not half-seen.
    """
    if snapshot_key is not None:
        return select_snapshot(generations.snapshots, key=snapshot_key), sequence
    chosen = choose_snapshot(generations, before=before, generation=generation, sequence=sequence)
    if sequence is None and before is None:
        return chosen, generations.end_of(chosen)
    return chosen, sequence


def _at_time(generations: ReplicaGenerations, before: datetime) -> SnapshotInfo:
    """Of the generations with a snapshot at or before ``before``, the one with the newest data up to then."""
    best: tuple[datetime, datetime, str] | None = None
    chosen: SnapshotInfo | None = None
    for state in generations.generations:
        candidates = [s for s in state.snapshots if s.created_at <= before]
        if not candidates:
            continue
        start = candidates[-1]
        rank = (min(state.newest_point, before), start.created_at, start.key)
        if best is None or rank > best:
            best, chosen = rank, start
    if chosen is None:
        return select_snapshot(generations.snapshots, before=before)  # raises its "no snapshot taken at or before"
    return chosen


def _newest_segment(store: ObjectStore, listed: list[ObjectInfo]) -> tuple[datetime | None, list[str]]:
    """The newest segment's capture time (one HEAD), passing over segments walship did not write."""
    strays: list[str] = []
    for obj in reversed(listed):
        try:
            head = store.head(obj.key)
        except NotFoundError:
            continue  # deleted since the listing
        if not any(name.startswith("walship-") for name in head.metadata):
            strays.append(obj.key)
            continue
        try:
            return segment_from_object(head).captured_at, strays
        except CorruptObjectError:
            # Damaged: restore names it when it gets there; the upload time still says data is here.
            return head.last_modified or obj.last_modified, strays
    return None, strays


def _gaps(sequences: tuple[int, ...], snapshots: tuple[SnapshotInfo, ...]) -> tuple[int, ...]:
    """The first missing sequence of each gap, from the oldest snapshot's (or segment's) start to the end."""
    if not sequences:
        return ()
    start = min([sequences[0], *(s.sequence + 1 for s in snapshots)])
    present, gaps = set(sequences), []
    for sequence in range(start, sequences[-1]):
        if sequence not in present and (sequence - 1 in present or sequence == start):
            gaps.append(sequence)
    return tuple(gaps)


def _problem(
    name: str,
    usable: tuple[SnapshotInfo, ...],
    unusable: tuple[UnusableSnapshot, ...],
    sequences: tuple[int, ...],
    gaps: tuple[int, ...],
    newest_point: datetime,
) -> str | None:
    where = f"generation {name} holds data up to {newest_point:%Y-%m-%d %H:%M:%S}Z but cannot be restored"
    if not usable:
        if unusable:
            return f"{where}: {unusable[-1].reason}"
        return f"{where}: its snapshot is missing ({len(sequences)} segments remain, nothing to apply them to)"
    base = usable[-1].sequence
    after = [gap for gap in gaps if gap > base]
    if after:
        key = format_segment_key(name, after[0])
        return f"{where}: {key} is missing, so sequences after {after[0] - 1} cannot be applied"
    return None


def _sequence(key: str) -> int:
    parsed = parse_segment_key(key)
    return parsed.sequence if parsed is not None else -1


def _generation_of(key: str) -> str:
    return key[len(GENERATIONS_PREFIX) :].split("/", 1)[0]
