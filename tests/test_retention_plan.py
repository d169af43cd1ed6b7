"""Retention planning, a pure function: policies, reasons, and the restore points they promise."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.helpers import described_snapshot
from walship.layout import format_segment_key
from walship.models import ObjectInfo, SnapshotInfo
from walship.retention import RetentionPlan, RetentionPolicy, hold_locked, parse_duration, plan_retention
from walship.storage import BucketProtection, ObjectVersion, newest_before

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _generation(start: datetime, number: int) -> str:
    return f"{start:%Y%m%dT%H%M%SZ}-{number:08x}"


def _snapshot(generation: str, sequence: int, created_at: datetime) -> SnapshotInfo:
    return described_snapshot(generation, sequence, created_at, size=1000 + sequence, sha256="0" * 64)


class History:
    """Generations of snapshots and contiguous segments, each segment captured at a known time."""

    def __init__(self) -> None:
        self.snapshots: list[SnapshotInfo] = []
        self.segments: list[ObjectInfo] = []
        self.captured: dict[tuple[str, int], datetime] = {}

    def add_generation(self, start: datetime, snapshot_at: list[int], segment_gaps: list[int]) -> None:
        """A generation from ``start``: segments ``segment_gaps`` minutes apart, snapshots at those sequences."""
        generation = _generation(start, len({s.generation for s in self.snapshots}))
        when = {0: start}
        for sequence, gap in enumerate(segment_gaps, start=1):
            when[sequence] = when[sequence - 1] + timedelta(minutes=gap)
            self.captured[generation, sequence] = when[sequence]
            self.segments.append(ObjectInfo(key=format_segment_key(generation, sequence), size=100))
        for sequence in sorted({0, *(s for s in snapshot_at if s in when)}):
            self.snapshots.append(_snapshot(generation, sequence, when[sequence]))

    @property
    def end(self) -> datetime:
        return max([s.created_at for s in self.snapshots] + list(self.captured.values()))


def _state_at(history: History, present: set[str], when: datetime) -> tuple[str, int] | None:
    """What a restore to ``when`` reaches using only ``present`` keys: (snapshot, last segment)."""
    candidates = [s for s in history.snapshots if s.key in present and s.created_at <= when]
    if not candidates:
        return None
    start = max(candidates, key=lambda s: (s.created_at, s.key))
    sequence = start.sequence
    while (
        format_segment_key(start.generation, sequence + 1) in present
        and history.captured[start.generation, sequence + 1] <= when
    ):
        sequence += 1
    return start.key, sequence


def _restorable(history: History, present: set[str], generation: str, sequence: int) -> bool:
    """Some present snapshot of ``generation`` plus present contiguous segments reaches ``sequence``."""
    for snapshot in history.snapshots:
        if snapshot.key in present and snapshot.generation == generation and snapshot.sequence <= sequence:
            needed = range(snapshot.sequence + 1, sequence + 1)
            if all(format_segment_key(generation, n) in present for n in needed):
                return True
    return False


histories = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=60 * 24 * 20),  # minutes since the previous generation ended
        st.lists(st.integers(min_value=1, max_value=60 * 30), max_size=12),  # minutes between segments
        st.lists(st.integers(min_value=0, max_value=12), max_size=4),  # sequences that also have a snapshot
    ),
    min_size=1,
    max_size=4,
)
policy_fields = st.fixed_dictionaries(
    {
        "keep_last": st.none() | st.integers(min_value=0, max_value=5),
        "keep_within": st.none() | st.sampled_from(["1h", "36h", "3d", "7d", "2w"]),
        "keep_daily": st.integers(min_value=0, max_value=4),
        "keep_weekly": st.integers(min_value=0, max_value=3),
        "keep_monthly": st.integers(min_value=0, max_value=3),
    }
)


def _build(spec: list[tuple[int, list[int], list[int]]]) -> History:
    history = History()
    cursor = EPOCH
    for pause, gaps, snapshot_at in spec:
        start = cursor + timedelta(minutes=pause)
        history.add_generation(start, snapshot_at, gaps)
        cursor = history.end
    return history


class TestPlanProperties:
    """For random histories and policies, every promised restore point still restores."""

    @settings(max_examples=300, deadline=None)
    @given(spec=histories, fields=policy_fields, later=st.integers(min_value=0, max_value=60 * 24 * 40))
    def test_promises_hold(
        self, spec: list[tuple[int, list[int], list[int]]], fields: dict[str, object], later: int
    ) -> None:
        """Kept points restore, the newest survives, keep-last/within/calendar keep what they say, nothing else."""
        assume(any(fields.values()))
        policy = RetentionPolicy.model_validate(fields)
        history = _build(spec)
        now = history.end + timedelta(minutes=later)
        plan = plan_retention(policy, history.snapshots, history.segments, now)
        deleted = set(plan.delete_keys)
        listed = {s.key for s in history.snapshots} | {o.key for o in history.segments}
        present = listed - deleted
        assert deleted <= listed
        newest = max(history.snapshots, key=lambda s: (s.created_at, s.key))
        assert newest.key in present
        # Every kept snapshot restores, and so does every later point of its generation.
        for snapshot in history.snapshots:
            if snapshot.key not in present:
                continue
            last = max([n for (g, n) in history.captured if g == snapshot.generation] + [snapshot.sequence])
            for sequence in range(snapshot.sequence, last + 1):
                assert _restorable(history, present, snapshot.generation, sequence)
        ordered = sorted(history.snapshots, key=lambda s: (s.created_at, s.key))
        if policy.keep_last:
            assert all(s.key in present for s in ordered[-policy.keep_last :])
        if policy.window is not None:
            cutoff = now - policy.window
            moments = [cutoff, now, *(s.created_at for s in ordered), *history.captured.values()]
            for moment in (m for m in moments if cutoff <= m <= now):
                assert _state_at(history, present, moment) == _state_at(history, listed, moment)
        for period, count in policy.calendar.items():
            newest_by_bucket = _newest_per_bucket(ordered, period, now, count)
            assert all(key in present for key in newest_by_bucket)
        # Nothing is kept without a reason: unkept snapshots and WAL before every kept snapshot go.
        for decision in plan.snapshots:
            assert decision.keep == (decision.key in present)
            assert decision.keep or decision.reasons == ("outside the policy",)
        for segment in history.segments:
            generation, sequence = segment.key.split("/")[1], int(segment.key.rsplit("/", 1)[1].split(".")[0])
            needed = any(
                s.generation == generation and s.sequence < sequence for s in history.snapshots if s.key in present
            )
            assert (segment.key in present) == needed


def _newest_per_bucket(ordered: list[SnapshotInfo], period: str, now: datetime, count: int) -> set[str]:
    """An independent statement of calendar thinning: the newest snapshot of each of the last ``count`` periods."""

    def bucket(day: datetime) -> tuple[int, int, int]:
        d = day.astimezone(UTC).date()
        if period == "daily":
            return d.year, d.month, d.day
        if period == "weekly":
            year, week, _ = d.isocalendar()
            return year, week, 0
        return d.year, d.month, 0

    wanted = []
    probe = now
    while len(wanted) < count:
        if bucket(probe) not in wanted:
            wanted.append(bucket(probe))
        probe -= timedelta(days=1)
    newest: dict[tuple[int, int, int], str] = {}
    for snapshot in ordered:
        if bucket(snapshot.created_at) in wanted:
            newest[bucket(snapshot.created_at)] = snapshot.key
    return set(newest.values())


class TestPolicy:
    """Policies: durations, counts, and refusing a policy that keeps nothing."""

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("7d", 7 * 86400), ("36h", 36 * 3600), ("1d12h", 36 * 3600), ("2w", 14 * 86400), ("90m", 5400)],
    )
    def test_durations(self, text: str, seconds: int) -> None:
        """Durations combine numbers and units s, m, h, d, w."""
        assert parse_duration(text) == timedelta(seconds=seconds)

    @pytest.mark.parametrize("text", ["7", "7 days", "d7", "-1d", "1.5d", "7y", "", "0d"])
    def test_bad_durations(self, text: str) -> None:
        """Anything else is refused with the accepted syntax in the message."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(text)

    def test_negative_counts(self) -> None:
        """A negative count is refused."""
        with pytest.raises(ValidationError, match="greater than or equal to 0"):
            RetentionPolicy(keep_last=-1)

    @pytest.mark.parametrize("fields", [{}, {"keep_last": 0}, {"keep_last": 0, "keep_daily": 0}])
    def test_keeping_nothing_is_refused(self, fields: dict[str, int]) -> None:
        """A policy without a positive rule would keep only the newest snapshot: refused, not guessed."""
        with pytest.raises(ValidationError, match="keeps nothing"):
            RetentionPolicy.model_validate(fields)

    def test_describe(self) -> None:
        """The description names every rule in use."""
        policy = RetentionPolicy(keep_last=3, keep_within="36h", keep_daily=7, keep_monthly=12)
        assert policy.describe() == "last 3, within 36h, daily x7, monthly x12"


class TestPlanExamples:
    """Concrete histories whose plans can be read off by hand."""

    def test_keep_last_drops_old_generations_and_their_wal(self) -> None:
        """keep-last 2 over three one-snapshot generations deletes the first generation whole."""
        history = History()
        for day in range(3):
            history.add_generation(EPOCH + timedelta(days=day), [], [10, 10])
        plan = plan_retention(RetentionPolicy(keep_last=2), history.snapshots, history.segments, history.end)
        first = history.snapshots[0].generation
        assert [d.keep for d in plan.snapshots] == [False, True, True]
        assert sorted(plan.delete_keys) == sorted(
            [history.snapshots[0].key, *(format_segment_key(first, n) for n in (1, 2))]
        )
        assert plan.bytes_to_free == 1000 + 200
        assert plan.generations[0].reason == "no snapshot of this generation is kept"

    def test_wal_before_the_oldest_kept_snapshot_goes(self) -> None:
        """Within one generation, segments up to the oldest kept snapshot go and later ones stay."""
        history = History()
        history.add_generation(EPOCH, [3, 6], [60] * 8)
        plan = plan_retention(RetentionPolicy(keep_last=2), history.snapshots, history.segments, history.end)
        generation = history.snapshots[0].generation
        assert set(plan.delete_keys) == {
            history.snapshots[0].key,
            *(format_segment_key(generation, n) for n in (1, 2, 3)),
        }
        assert plan.generations[0].kept_after == 3
        assert plan.generations[0].segments_kept == 5

    def test_reasons(self) -> None:
        """Each kept snapshot says which rules keep it."""
        history = History()
        for day in range(10):
            history.add_generation(EPOCH + timedelta(days=day, hours=12), [], [])
        now = history.end + timedelta(hours=1)
        plan = plan_retention(
            RetentionPolicy(keep_within="36h", keep_daily=3), history.snapshots, history.segments, now
        )
        reasons = {d.created_at.date().isoformat(): d.reasons for d in plan.snapshots if d.keep}
        assert reasons == {
            "2026-01-08": ("start of the 36h window", "daily 2026-01-08"),
            "2026-01-09": ("within 36h", "daily 2026-01-09"),
            "2026-01-10": ("newest", "within 36h", "daily 2026-01-10"),
        }

    def test_calendar_weeks_and_months(self) -> None:
        """Weekly and monthly rules keep the newest snapshot of each ISO week and month counted back from now."""
        history = History()
        for day in range(0, 70, 2):
            history.add_generation(EPOCH + timedelta(days=day), [], [])
        now = EPOCH + timedelta(days=69)  # 2026-03-11, a Wednesday of ISO week 11
        plan = plan_retention(RetentionPolicy(keep_weekly=2, keep_monthly=3), history.snapshots, history.segments, now)
        kept = {d.created_at.date().isoformat(): d.reasons for d in plan.snapshots if d.keep}
        assert kept == {
            "2026-01-31": ("monthly 2026-01",),
            "2026-02-28": ("monthly 2026-02",),
            "2026-03-08": ("weekly 2026-W10",),
            "2026-03-10": ("newest", "weekly 2026-W11", "monthly 2026-03"),
        }

    def test_generation_newer_than_every_snapshot_is_left_alone(self) -> None:
        """Segments of a generation whose snapshot is not listed yet (uploading) are never deleted."""
        history = History()
        history.add_generation(EPOCH, [], [10])
        late = _generation(EPOCH + timedelta(days=1), 9)
        segments = [*history.segments, ObjectInfo(key=format_segment_key(late, 1), size=10)]
        plan = plan_retention(RetentionPolicy(keep_last=1), history.snapshots, segments, EPOCH + timedelta(days=2))
        assert format_segment_key(late, 1) not in plan.delete_keys

    def test_empty_replica(self) -> None:
        """An empty listing plans nothing."""
        plan = plan_retention(RetentionPolicy(keep_last=1), [], [], EPOCH)
        assert plan.delete_keys == []
        assert plan.snapshots == ()


class TestLockedPlans:
    """On a versioned bucket: every version of a deleted key goes, and object lock holds whole generations."""

    @staticmethod
    def _versions(keys: list[str], written: datetime) -> dict[str, list[ObjectVersion]]:
        return {
            key: [
                ObjectVersion(key=key, version_id="marker", last_modified=written, delete_marker=True),
                ObjectVersion(key=key, version_id="v1", last_modified=written, size=10),
            ]
            for key in keys
        }

    def _plan(self) -> tuple[RetentionPlan, History]:
        history = History()
        for day in range(3):
            history.add_generation(EPOCH + timedelta(days=day), [], [10, 10])
        now = history.end + timedelta(hours=1)
        return plan_retention(RetentionPolicy(keep_last=1), history.snapshots, history.segments, now), history

    def test_a_locked_version_holds_its_generation(self) -> None:
        plan, history = self._plan()
        first, second = history.snapshots[0].generation, history.snapshots[1].generation
        planned = plan.delete_keys
        versions = self._versions([k for k in planned if first in k], plan.now - timedelta(days=40))
        # The second generation's snapshot was written 40 days ago, its newest segment 20: a 30-day lock
        # still holds the segment, and so the whole generation, until 10 days from now.
        second_keys = [k for k in planned if second in k]
        versions |= self._versions(second_keys[:-1], plan.now - timedelta(days=40))
        versions |= self._versions(second_keys[-1:], plan.now - timedelta(days=20))
        protection = BucketProtection(versioning="Enabled", lock_mode="COMPLIANCE", lock_days=30)
        locked = hold_locked(plan, versions, protection, plan.now)
        assert locked.versioned
        assert set(locked.held) == set(second_keys)
        assert set(locked.held.values()) == {plan.now + timedelta(days=10)}
        assert set(locked.delete_keys) == {k for k in planned if first in k}
        assert [v.version_id for v in locked.versions[locked.delete_keys[0]]] == ["marker", "v1"]
        assert locked.bytes_to_free == sum(plan.delete_sizes[k] for k in locked.delete_keys)

    def test_no_default_lock_holds_nothing(self) -> None:
        plan, _ = self._plan()
        versions = self._versions(plan.delete_keys, plan.now)
        unlocked = hold_locked(plan, versions, BucketProtection(versioning="Enabled"), plan.now)
        assert not unlocked.held
        assert unlocked.delete_keys == plan.delete_keys


def test_newest_before() -> None:
    """A key as it was at a time: its newest version by then, none under a delete marker, none before its first."""
    at = EPOCH + timedelta(hours=1)
    versions = [
        ObjectVersion(key="k", version_id="garbage", last_modified=at + timedelta(seconds=5)),
        ObjectVersion(key="k", version_id="marker", last_modified=at - timedelta(minutes=1), delete_marker=True),
        ObjectVersion(key="k", version_id="good", last_modified=at - timedelta(minutes=2)),
    ]
    assert newest_before(versions, at) is None
    chosen = newest_before(versions[2:], at)
    assert chosen is not None
    assert chosen.version_id == "good"
    assert newest_before(versions, at - timedelta(minutes=3)) is None
