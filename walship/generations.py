"""Which generation holds the newest data, and whether it restores (invariant 11).

Two shippers, or a snapshot deleted by hand, can leave a replica whose
newest snapshot is not where its newest data is. Restore, verify, status and
retention all ask this module, so they never disagree about which generation
a default restore must use: the one whose newest point (its newest segment's
capture, or its newest snapshot) is latest. When that one cannot be restored,
the default restore fails and names the explicit ways to an older point; it
never quietly restores an older generation instead.

What a listing finds is compared with what is claimed: the index records
the newest shipped position and every snapshot it was told of, so a newest
segment or snapshot deleted after it was recorded is a gap like any other,
never a quietly shorter restore.

Cost: one LIST of ``generations/``, a HEAD per snapshot the index does not
describe, one HEAD of each generation's newest segment, and one HEAD of the
snapshot a default restore starts from when only the index described it.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from walship.catalog import UnusableSnapshot, lost_metadata, scan_snapshots, select_snapshot, snapshot_or_unusable
from walship.chain import missing_segment
from walship.claims import Claim, claims_of, is_walship_key
from walship.errors import CorruptObjectError, NotFoundError
from walship.index import readable_index
from walship.layout import GENERATIONS_PREFIX, generation_of, parse_generation, parse_segment_key
from walship.models import ObjectInfo, ReplicaMetadata, SnapshotInfo
from walship.segment import read_description
from walship.storage import ObjectStore

__all__ = [
    "GenerationState",
    "ReplicaGenerations",
    "choose_snapshot",
    "choose_start",
    "describe_generations",
    "describe_replica",
]

_HOW_TO_LIST = "run 'walship status --json' to see the generations"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class GenerationState(_Frozen):
    """One generation as a listing shows it, against what the index claims of it."""

    generation: str
    snapshots: tuple[SnapshotInfo, ...]  # usable ones, oldest first
    unusable: tuple[UnusableSnapshot, ...]
    sequences: tuple[int, ...]  # listed segment sequences, ascending
    newest_point: datetime
    newest_captured_at: datetime | None  # of the newest segment walship wrote, if any
    # Sequences missing inside the generation's range (first of each gap), up to its claimed end.
    gaps: tuple[int, ...]
    # Gaps a snapshot taken for this replica alone ends (it was behind): (first missing, the snapshot's sequence).
    bridged: tuple[tuple[int, int], ...] = ()
    # Set when the generation was claimed to reach further than the listing shows.
    claim: Claim | None = None
    # Why a default restore of this generation to its end fails; None when it does not.
    problem: str | None

    @property
    def restorable(self) -> bool:
        return self.problem is None

    @property
    def end(self) -> int:
        return max([*self.sequences, *(s.sequence for s in self.snapshots), 0])

    def way_back(self) -> str | None:
        """``--generation G --sequence N``: the newest point before the first gap after the newest snapshot."""
        if not self.snapshots:
            return None
        base = self.snapshots[-1].sequence
        before_gap = [g - 1 for g in self.gaps if g > base]
        return f"--generation {self.generation} --sequence {before_gap[0]}" if before_gap else None


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
        if newest is not None and (way_back := newest.way_back()) is not None:
            options.append(way_back)
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
                key = missing_segment(state.generation, gap)
                if state is not newest or newest.problem is None or key not in newest.problem:
                    found.append(f"{key} is missing: a gap in generation {state.generation}'s segments")
            found += [u.reason for u in state.unusable if not u.stray and u.reason not in (state.problem or "")]
        return found


def describe_replica(store: ObjectStore) -> ReplicaGenerations:
    """Describe every generation against the index: its descriptions spare HEADs, its claims are checked.

    The index is read before the listing: whatever it claims was uploaded
    before it was written, so the listing sees it unless it was lost.
    """
    return describe_generations(store, known=None, index=readable_index(store))


def describe_generations(
    store: ObjectStore,
    known: Sequence[SnapshotInfo] | None = None,
    listing: Iterable[ObjectInfo] | None = None,
    *,
    index: ReplicaMetadata | None = None,
) -> ReplicaGenerations:
    """Describe every generation from one listing.

    ``known``: snapshot descriptions that spare HEADs (default: the index's).
    ``index``: metadata.json, read before the listing, whose claims a
    generation must reach. Objects in the listing that walship did not write
    are strays.
    """
    objects = list(store.list(GENERATIONS_PREFIX) if listing is None else listing)
    described = list(index.snapshots if index is not None and known is None else known or ())
    snapshots, unusable = scan_snapshots(store, described, objects)
    recorded = {s.key for s in described} | {s.key for s in (index.snapshots if index is not None else ())}
    unusable = [lost_metadata(u) if u.stray and u.key in recorded else u for u in unusable]
    segments: dict[str, list[ObjectInfo]] = defaultdict(list)
    for obj in objects:
        parsed = parse_segment_key(obj.key)
        if parsed is not None:
            segments[parsed.generation].append(obj)
    names = {s.generation for s in snapshots} | set(segments) | {generation_of(u.key) or "" for u in unusable}
    names.discard("")
    claims = claims_of(index)
    strays = [u.key for u in unusable if u.stray] + [o.key for o in objects if not is_walship_key(o.key)]
    states: list[GenerationState] = []
    for name in sorted(names):
        listed = sorted(segments.get(name, []), key=lambda o: _sequence(o.key))
        newest_segment, stray_segments = _newest_segment(store, listed)
        strays += stray_segments
        damaged_segment = newest_segment is None and len(listed) > len(stray_segments)
        found = _Found(
            name=name,
            sequences=tuple(_sequence(o.key) for o in listed if o.key not in stray_segments),
            newest_segment=newest_segment,
            damaged=damaged_segment,
            claim=claims.get(name),
        )
        state = found.state(
            tuple(s for s in snapshots if s.generation == name),
            tuple(u for u in unusable if generation_of(u.key) == name),
        )
        if state is not None:
            states.append(state)
    states.sort(key=lambda g: (g.newest_point, g.generation))
    states = _confirm_newest_start(store, states, headed={s.key for s in snapshots} - {s.key for s in described})
    return ReplicaGenerations(generations=tuple(states), strays=tuple(sorted(set(strays))))


class _Found(_Frozen):
    """What the listing found of one generation, besides its snapshots."""

    name: str
    sequences: tuple[int, ...]
    newest_segment: datetime | None
    damaged: bool
    claim: Claim | None

    def state(self, usable: tuple[SnapshotInfo, ...], unusable: tuple[UnusableSnapshot, ...]) -> GenerationState | None:
        """The generation's state; None when walship wrote nothing of it (its objects are strays)."""
        points = [p for p in (self.newest_segment, usable[-1].created_at if usable else None) if p is not None]
        if self.damaged or any(not u.stray for u in unusable):
            # Damaged objects of walship's are data we cannot read, not strays: they
            # count from their generation's start, so they are never silently skipped.
            points.append(parse_generation(self.name))
        if not points:
            return None
        reached = max([*self.sequences, *(s.sequence for s in usable), 0])
        claim = self.claim if self.claim is not None and self.claim.sequence > reached else None
        gaps, bridged = _bridged(_gaps(self.sequences, usable), self.sequences, usable)
        gaps += (reached + 1,) if claim is not None else ()
        return GenerationState(
            generation=self.name,
            snapshots=usable,
            unusable=unusable,
            sequences=self.sequences,
            newest_point=max(points),
            newest_captured_at=self.newest_segment,
            gaps=gaps,
            bridged=bridged,
            claim=claim,
            problem=_problem(self.name, usable, unusable, self.sequences, gaps, max(points), claim),
        )


def _confirm_newest_start(store: ObjectStore, states: list[GenerationState], headed: set[str]) -> list[GenerationState]:
    """The snapshot a default restore starts from must describe itself, as restore will ask it to (a HEAD).

    Only one described by the index alone needs the HEAD: its object may have
    lost its metadata or gone since, and status must not call it restorable.
    """
    while states and states[-1].snapshots and (start := states[-1].snapshots[-1]).key not in headed:
        headed.add(start.key)
        try:
            described = snapshot_or_unusable(store.head(start.key))
        except NotFoundError:
            described = UnusableSnapshot(
                key=start.key, stray=False, reason=f"{start.key} is listed but no longer in the replica"
            )
        if isinstance(described, SnapshotInfo):
            break
        if described.stray:
            described = lost_metadata(described)
        newest = states.pop()
        found = _Found(
            name=newest.generation,
            sequences=newest.sequences,
            newest_segment=newest.newest_captured_at,
            damaged=False,
            claim=_end_claim(newest, start),
        )
        state = found.state(newest.snapshots[:-1], (*newest.unusable, described))
        if state is not None:
            states.append(state)
            states.sort(key=lambda g: (g.newest_point, g.generation))
    return states


def _end_claim(state: GenerationState, start: SnapshotInfo) -> Claim | None:
    """How far a generation reached, now that the snapshot ``start`` turned out unusable."""
    if state.claim is not None and state.claim.sequence >= start.sequence:
        return state.claim
    return Claim(sequence=start.sequence, source=f"snapshot {start.key} holds the state at that sequence")


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
    state = generations.get(chosen.generation)
    if sequence is None and state is not None:
        _require_reachable(state, before)
    if sequence is None and before is None:
        return chosen, generations.end_of(chosen)
    return chosen, sequence


def _require_reachable(state: GenerationState, before: datetime | None) -> None:
    """A restore to a generation's end, or to a time past what it lists, must not stop short of a claim.

    A time up to the generation's newest listed point needs nothing later:
    the segment after that point holds only commits made after it.
    """
    if before is None:
        if state.problem is None:
            return
        problem = state.problem
    elif state.claim is None or before <= state.newest_point:
        return
    else:
        key = missing_segment(state.generation, state.gaps[-1])
        problem = f"{key} is missing ({state.claim.source}): the state at {before.isoformat()} may need it"
    options = [o for o in (state.way_back(), f"--timestamp {state.newest_point.isoformat()}") if o is not None]
    raise NotFoundError(f"{problem}\nto restore an older point, name it: {' or '.join(options)}")


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
    """The newest segment's capture time (one HEAD, or a ranged GET where metadata is gone), passing over
    segments walship did not write."""
    strays: list[str] = []
    for obj in reversed(listed):
        try:
            segment = read_description(store, obj.key)
        except NotFoundError:
            continue  # deleted since the listing
        except CorruptObjectError:
            # Damaged: restore names it when it gets there; the upload time still says data is here.
            return obj.last_modified, strays
        if segment is None:
            strays.append(obj.key)
            continue
        return segment.captured_at, strays
    return None, strays


def _bridged(
    gaps: tuple[int, ...], sequences: tuple[int, ...], snapshots: tuple[SnapshotInfo, ...]
) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Split gaps into lost ones and those a bridge snapshot ends: one at the sequence just before the next
    segment present, taken for this replica alone after it missed segments (``SnapshotInfo.bridge``)."""
    bridges = {s.sequence for s in snapshots if s.bridge}
    lost: list[int] = []
    bridged: list[tuple[int, int]] = []
    for gap in gaps:
        after = min((q for q in sequences if q > gap), default=None)
        if after is not None and after - 1 in bridges:
            bridged.append((gap, after - 1))
        else:
            lost.append(gap)
    return tuple(lost), tuple(bridged)


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
    claim: Claim | None,
) -> str | None:
    where = f"generation {name} holds data up to {newest_point:%Y-%m-%d %H:%M:%S}Z but cannot be restored"
    if not usable:
        if unusable:
            return f"{where}: {unusable[-1].reason}"
        return f"{where}: its snapshot is missing ({len(sequences)} segments remain, nothing to apply them to)"
    base = usable[-1].sequence
    after = [gap for gap in gaps if gap > base]
    if not after:
        return None
    key = missing_segment(name, after[0])
    if claim is not None and after[0] == gaps[-1] and after[0] > max(sequences, default=base):
        return f"{where}: {key} is missing ({claim.source}): the replica lost what came after sequence {after[0] - 1}"
    return f"{where}: {key} is missing, so sequences after {after[0] - 1} cannot be applied"


def _sequence(key: str) -> int:
    parsed = parse_segment_key(key)
    return parsed.sequence if parsed is not None else -1
