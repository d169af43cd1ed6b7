"""Nothing missing goes unnoticed (issue 21): restore, verify and status compare what they find with what is claimed.

The index records the newest shipped position and every snapshot it was told
of; a segment's sequence says every earlier one existed. A default restore
that cannot reach what they claim fails naming the missing object and the
explicit way to the older point, and status and verify say the same. Objects
walship did not write are listed, never fatal to what does not need them.
"""

import io
import os
import subprocess
from pathlib import Path

import pytest

from bench.workload import content_digest
from tests.helpers import walship
from tests.test_restore_cli import STRAY, assert_error, commit
from tests.test_ship import Running
from walship.chain import list_segment_keys
from walship.index import current_snapshots
from walship.layout import format_segment_key, format_snapshot_key
from walship.status import replica_status
from walship.storage import LocalStore, ObjectStore, open_store
from walship.verify import verify_replica

LOCAL_AND_MOTO = pytest.mark.parametrize("backend", ["local", "moto"], indirect=True)

DIRECT = {"PREFECT_API_URL": ""}


def ship_runs(replica: str, database: Path, runs: int) -> str:
    """``runs`` runs of ``walship ship --once``, each after a commit; returns the generation."""
    for number in range(runs):
        commit(database, f"run-{number}", 20)
        result = walship("ship", str(database), "--replica", replica, "--once", env=DIRECT)
        assert result.returncode == 0, result.stderr
    [generation] = {key.split("/")[1] for key in _keys(replica)}
    return generation


def _keys(replica: str) -> list[str]:
    return [o.key for o in open_store(replica).list("generations/")]


def restore(replica: str, output: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return walship("restore", "--replica", replica, "--output", str(output), *options, env=DIRECT)


def plant(store: ObjectStore, key: str, data: bytes) -> None:
    """An object walship did not write: a bare file in a directory, an object without metadata in S3."""
    if isinstance(store, LocalStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        store.put_stream(key, io.BytesIO(data), metadata={})


def stem(key: str) -> str:
    """A segment key without its kind: ``generations/G/wal/<seq>``."""
    return key.split(".", 1)[0]


@LOCAL_AND_MOTO
class TestNewestSegmentMissing:
    """Case 4: the newest segment deleted must not give a silent older restore."""

    def test_default_restore_fails_naming_it(
        self, replica_url: str, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        generation = ship_runs(replica_url, database, 3)
        keys = list_segment_keys(store, generation)
        last = max(keys)
        gone = keys[last]
        kind = gone.split(".", 1)[1]  # wal.zst or resync.zst: whatever it was, it is named so
        store.delete([gone])  # with its sidecar on file://

        result = restore(replica_url, tmp_path / "out.db")
        assert_error(result, 1, stem(gone), kind, f"--sequence {last - 1}", "--timestamp")
        assert not (tmp_path / "out.db").exists()
        # The explicit way to the older point still restores.
        older = restore(replica_url, tmp_path / "older.db", "--sequence", str(last - 1))
        assert older.returncode == 0, older.stderr
        assert f"at {generation}/{last - 1} " in older.stdout
        # A time up to the last capture the replica holds restores; a later one would need the missing segment.
        captured = store.head(keys[last - 1]).metadata["walship-captured-at"]
        at = restore(replica_url, tmp_path / "at.db", "--timestamp", captured)
        assert at.returncode == 0, at.stderr
        later = restore(replica_url, tmp_path / "later.db", "--timestamp", "2999-01-01T00:00:00Z")
        assert_error(later, 1, stem(gone), kind)

        status = replica_status(store)
        assert status.restorable is False
        assert any(stem(gone) in problem and kind in problem for problem in status.problems), status.problems
        report = verify_replica(store)
        assert not report.passed
        failed = {check.name: check.detail for check in report.failed}
        assert stem(gone) in failed["restore-newest"], failed
        assert kind in failed["restore-newest"], failed
        assert all(kind in detail for detail in failed.values() if stem(gone) in detail), failed

    def test_a_later_snapshot_the_index_records(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """Mid-run (no position recorded yet) the index's snapshot entries still claim how far a generation got."""
        running = Running(database, store, tmp_path / "spool", snapshot_seconds=0.01)
        for number in range(4):
            commit(database, f"batch-{number}", 20)
            running.step()
        running.close()
        [generation] = running.generations
        snapshots = [s for s in current_snapshots(store) if s.generation == generation]
        assert len(snapshots) >= 2, [s.key for s in snapshots]
        newest = snapshots[-1]
        assert newest.sequence > snapshots[-2].sequence
        lost = [k for q, k in list_segment_keys(store, generation).items() if q >= newest.sequence]
        store.delete([newest.key, *lost])
        status = replica_status(store)
        assert status.restorable is False
        assert any(stem(format_segment_key(generation, newest.sequence)) in p for p in status.problems), status.problems
        report = verify_replica(store)
        assert "restore-newest" in {check.name for check in report.failed}


class TestSnapshotMetadataGone:
    """Case 6: a snapshot whose ``.meta`` sidecar is gone: status, restore and verify agree."""

    @pytest.mark.parametrize("backend", ["local"], indirect=True)  # S3 keeps metadata with the object
    def test_sidecar_deleted(self, replica_url: str, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        assert isinstance(store, LocalStore)
        generation = ship_runs(replica_url, database, 2)
        key = format_snapshot_key(generation, 0)
        os.unlink(store.root / ".meta" / f"{key}.json")

        result = restore(replica_url, tmp_path / "out.db")
        status = replica_status(store)
        report = verify_replica(store)
        failed = {check.name: check.detail for check in report.failed}
        assert status.restorable is (result.returncode == 0)
        assert status.restorable is False
        assert_error(result, 1, key, "metadata")
        assert any(key in problem and "metadata" in problem for problem in status.problems), status.problems
        assert any(key in detail and "metadata" in detail for detail in failed.values()), failed
        assert not any("no such object" in detail for detail in failed.values()), failed


@LOCAL_AND_MOTO
class TestStrays:
    """Case 6: objects walship did not write are listed by status, never fatal to restore or verify."""

    def test_strays_anywhere(self, replica_url: str, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        generation = ship_runs(replica_url, database, 2)
        last = max(list_segment_keys(store, generation))
        strays = [
            "junk.bin",
            "generations/x/wal/notes.txt",
            f"generations/{generation}/wal/notes.txt",
            STRAY,
            format_segment_key(generation, last + 1),
        ]
        for key in strays:
            plant(store, key, b"not walship's")

        status = replica_status(store)
        assert sorted(status.strays) == sorted(strays)
        assert status.restorable is True, status.problems
        text = walship("status", "--replica", replica_url, env=DIRECT)
        assert text.returncode == 0, text.stderr
        for key in strays:
            assert f"stray:        {key} " in text.stdout, text.stdout
        result = restore(replica_url, tmp_path / "out.db")
        assert result.returncode == 0, result.stderr
        assert content_digest(tmp_path / "out.db") == content_digest(database)
        report = verify_replica(store)
        assert report.passed, report.failed
        [check] = [c for c in report.checks if c.name == "strays"]
        assert check.warning
        assert f"{len(strays)} object(s)" in check.detail
