"""Restore never quietly goes back in time (invariant 11), on every backend.

The default restore uses the generation holding the newest data, not the
newest snapshot; when that generation cannot be restored, restore fails and
says how to restore an older point, verify fails and status flags it.
Objects walship did not write are reported, never fatal to restores that do
not need them.
"""

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import described_snapshot, take_and_upload
from tests.test_restore_cli import STRAY, commit, newest_generation_without_snapshot, two_shippers
from tests.test_ship import Running
from walship.chain import list_segment_sequences
from walship.errors import NotFoundError
from walship.generations import GenerationState, ReplicaGenerations, choose_snapshot, describe_generations
from walship.layout import format_segment_key, format_snapshot_key
from walship.models import ObjectInfo, utcnow
from walship.restore import restore_snapshot
from walship.retention import RetentionPolicy, list_history, newest_data, plan_retention
from walship.status import replica_status
from walship.storage import ObjectStore
from walship.verify import verify_replica


def restore_default(store: ObjectStore, output: Path) -> None:
    restore_snapshot(store, choose_snapshot(describe_generations(store)), output)


class TestNewestData:
    """The generation whose newest point is latest wins, even when it was created earlier."""

    def test_newer_data_beats_newer_generation(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        gen_a, gen_c, db_a, db_c = two_shippers(store, database, tmp_path)
        assert gen_c > gen_a  # C's generation was created later ...
        generations = describe_generations(store)
        assert generations.newest is not None
        assert generations.newest.generation == gen_a  # ... but A holds the newest data
        restored = tmp_path / "restored.db"
        restore_default(store, restored)
        assert content_digest(restored) == content_digest(db_a)
        assert content_digest(restored) != content_digest(db_c)
        status = replica_status(store)
        assert (status.current_generation, status.restorable) == (gen_a, True)
        assert [g.generation for g in status.generations] == [gen_c, gen_a]
        report = verify_replica(store)
        assert report.passed, report.failed
        assert report.points[0].position.generation == gen_a

    def test_retention_keeps_the_newest_data(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """keep-last 1 keeps the newest snapshot (C's) and, whatever the policy, A's generation."""
        gen_a, _gen_c, _, _ = two_shippers(store, database, tmp_path)
        snapshots, segments = list_history(store)
        assert newest_data(store, snapshots) == gen_a
        plan = plan_retention(RetentionPolicy(keep_last=1), snapshots, segments, utcnow(), gen_a)
        kept = {d.generation for d in plan.kept_snapshots}
        assert gen_a in kept, plan.snapshots
        assert not any(format_segment_key(gen_a, 1) in g.delete for g in plan.generations)


class TestNewestDataUnrestorable:
    """The newest data cannot be restored: restore fails naming it and the way to an older point."""

    def test_snapshot_deleted(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        older, newest = newest_generation_without_snapshot(store, database, tmp_path)
        with pytest.raises(NotFoundError, match=f"generation {newest} .*cannot be restored") as caught:
            restore_default(store, tmp_path / "restored.db")
        assert "--generation" in str(caught.value)
        assert "--timestamp" in str(caught.value)
        assert len(str(caught.value).splitlines()) == 2
        assert not (tmp_path / "restored.db").exists()
        # The explicit way to the older point works.
        generations = describe_generations(store)
        restore_snapshot(store, choose_snapshot(generations, generation=older), tmp_path / "older.db")
        status = replica_status(store)
        assert status.current_generation == newest
        assert status.restorable is False
        assert any(newest in problem for problem in status.problems)
        report = verify_replica(store)
        assert not report.passed
        assert newest in {c.name: c.detail for c in report.failed}["restore-newest"]

    def test_gap_before_the_end(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A missing middle segment: status flags the gap, restore names it and --sequence N-1."""
        running = Running(database, store, tmp_path / "spool")
        for tag in "abcd":
            commit(database, tag, 20)
            running.step()
        running.close()
        [generation] = running.generations
        sequences = list_segment_sequences(store, generation)
        assert len(sequences) >= 3, sequences
        gone = sequences[1]
        store.delete([format_segment_key(generation, gone)])
        status = replica_status(store)
        assert status.restorable is False
        assert any(format_segment_key(generation, gone) in problem for problem in status.problems), status.problems
        with pytest.raises(NotFoundError, match=f"--generation {generation} --sequence {gone - 1}"):
            restore_default(store, tmp_path / "restored.db")


class TestStrays:
    """An object walship did not write is reported, never fatal to a restore that does not need it."""

    def test_stray_snapshot_key(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        take_and_upload(store, database)
        store.put_stream(STRAY, io.BytesIO(b"not walship's"), metadata={})
        status = replica_status(store)
        assert status.strays == [STRAY]
        assert status.restorable is True
        restore_default(store, tmp_path / "restored.db")
        assert content_digest(tmp_path / "restored.db") == content_digest(database)
        report = verify_replica(store)
        assert report.passed, report.failed
        assert any(STRAY in check.detail for check in report.checks)

    def test_stray_after_the_end_of_the_chain(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A segment key past the generation's end that walship did not write: reported, passed over."""
        running = Running(database, store, tmp_path / "spool")
        commit(database, "x", 30)
        running.step()
        running.close()
        [generation] = running.generations
        last = list_segment_sequences(store, generation)[-1]
        stray = format_segment_key(generation, last + 1)
        store.put_stream(stray, io.BytesIO(b"not walship's"), metadata={})
        generations = describe_generations(store)
        assert generations.strays == (stray,)
        start = choose_snapshot(generations)
        result = restore_snapshot(store, start, tmp_path / "restored.db", until_sequence=generations.end_of(start))
        assert result.position.sequence == last
        assert content_digest(tmp_path / "restored.db") == content_digest(database)
        assert replica_status(store).strays == [stray]
        report = verify_replica(store)
        assert report.passed, report.failed

    def test_stray_in_the_needed_generation(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """The newest data's snapshot replaced by foreign bytes: the restore needs it, so it fails naming it."""
        take_and_upload(store, database)
        running = Running(database, store, tmp_path / "spool")
        commit(database, "x", 30)
        running.step()
        running.close()
        [newest] = running.generations
        key = format_snapshot_key(newest, 0)
        store.put_stream(key, io.BytesIO(b"not walship's"), metadata={})
        with pytest.raises(NotFoundError, match=f"{key} has no walship metadata"):
            restore_default(store, tmp_path / "restored.db")
        assert not verify_replica(store).passed


class TestRetentionPlan:
    """The plan keeps the newest data's generation whatever the policy (pure, no storage)."""

    def test_a_newest_data_generation_without_snapshot_keeps_its_segments(self) -> None:
        when = [datetime(2026, month, 1, tzinfo=UTC) for month in (1, 3)]
        snapshots = [
            described_snapshot(f"2026{d:%m}01T000000Z-0000000{n}", 0, d, size=10, sha256=str(n) * 64)
            for n, d in enumerate(when, 1)
        ]
        orphan = "20260201T000000Z-00000009"
        segments = [ObjectInfo(key=format_segment_key(orphan, n), size=5) for n in (1, 2, 3)]
        now = datetime(2026, 3, 2, tzinfo=UTC)

        def deleted(newest: str | None) -> dict[str, int]:
            plan = plan_retention(RetentionPolicy(keep_last=1), snapshots, segments, now, newest)
            return next(g for g in plan.generations if g.generation == orphan).delete

        assert len(deleted(None)) == 3  # without the rule, the newest data would go
        assert deleted(orphan) == {}


class TestChoice:
    """choose_snapshot on described generations (pure, no storage)."""

    def test_generation_and_timestamp_never_start_after_the_asked_time(self) -> None:
        name = "20260101T000000Z-00000001"
        times = [datetime(2026, 1, 1, hour, tzinfo=UTC) for hour in (0, 1, 2)]
        snapshots = tuple(described_snapshot(name, 10 * n, t, size=10, sha256=str(n) * 64) for n, t in enumerate(times))
        state = GenerationState(
            generation=name,
            snapshots=snapshots,
            unusable=(),
            sequences=tuple(range(1, 31)),
            newest_point=times[-1],
            newest_captured_at=times[-1],
            gaps=(),
            problem=None,
        )
        generations = ReplicaGenerations(generations=(state,), strays=())
        asked = datetime(2026, 1, 1, 1, 30, tzinfo=UTC)
        assert choose_snapshot(generations, generation=name, before=asked).key == snapshots[1].key
        assert choose_snapshot(generations, before=asked).key == snapshots[1].key
        assert choose_snapshot(generations).key == snapshots[2].key
        with pytest.raises(NotFoundError, match="generation nosuchgen does not exist in the replica"):
            choose_snapshot(generations, generation="nosuchgen", sequence=5)
