"""``walship status`` on every backend: fields, index states, --json and --rebuild-index."""

import json
import re
from pathlib import Path

import pytest

from tests.helpers import take_and_upload, walship
from walship.chain import list_segment_sequences, read_segment_info
from walship.errors import NotFoundError
from walship.index import read_index
from walship.layout import METADATA_KEY, format_segment_key
from walship.lease import acquire_lease, holder_for, release_lease
from walship.models import ReplicaMetadata
from walship.status import ReplicaStatus, replica_status
from walship.storage import ObjectStore


def _index_keys(store: ObjectStore) -> list[str]:
    metadata, _ = read_index(store)
    assert metadata is not None
    return [s.key for s in metadata.snapshots]


class TestFields:
    """What status reports matches what the replica holds."""

    def test_snapshots_segments_lag_bytes_and_lease(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A standalone snapshot, then a shipped generation: counts, newest segment, lag, bytes, lease."""
        from tests.test_ship import Running  # imports Prefect: only where a test ships

        standalone = take_and_upload(store, database)
        running = Running(database, store, tmp_path / "spool")
        running.run_while_writing(1.5, count=2, rate=200)
        [generation] = running.generations
        sequences = list_segment_sequences(store, generation)
        assert sequences

        status = replica_status(store)
        listing = list(store.list())
        assert (status.index, status.database_id, status.current_generation) == ("ok", "app.db", generation)
        assert (status.snapshot_count, status.generation_count) == (2, 2)
        assert status.oldest is not None
        assert status.oldest.key == standalone.key
        assert status.newest is not None
        assert status.newest.generation == generation
        assert status.snapshot_bytes == sum(s.compressed_size for s in status.snapshots)
        assert (status.segments_in_generation, status.segments_total) == (len(sequences), len(sequences))
        assert status.newest_segment_sequence == sequences[-1]
        newest = read_segment_info(store, format_segment_key(generation, sequences[-1]))
        assert status.newest_segment_captured_at == newest.captured_at
        assert status.lag_of == "segment"
        assert status.lag_seconds == (status.checked_at - newest.captured_at).total_seconds()
        assert (status.total_bytes, status.object_count) == (sum(o.size for o in listing), len(listing))
        assert status.segment_bytes == sum(o.size for o in listing if "/wal/" in o.key)
        # The shipper's lease outlives the run (the flow releases it; this loop does not).
        assert status.lease is not None
        assert (status.lease.holder, status.lease.live) == (holder_for(database), True)
        text = status.render()
        assert f"held by {holder_for(database)}" in text
        assert f"sequence {sequences[-1]}, captured" in text

    def test_lease_held_and_released(self, store: ObjectStore, database: Path) -> None:
        """A live lease shows its holder and expiry; a released one shows as free."""
        take_and_upload(store, database)
        assert replica_status(store).lease is None
        lease = acquire_lease(store, "host-a:/srv/app.db")
        held = replica_status(store)
        assert held.lease is not None
        assert (held.lease.holder, held.lease.live, held.lease.expires_at) == (
            "host-a:/srv/app.db",
            True,
            lease.expires_at,
        )
        assert "held by host-a:/srv/app.db until" in held.render()
        release_lease(store, lease)
        free = replica_status(store)
        assert free.lease is not None
        assert not free.lease.live
        assert "free (last held by host-a:/srv/app.db" in free.render()

    def test_without_segments_lag_is_the_newest_snapshot(self, store: ObjectStore, database: Path) -> None:
        """With no segment, lag counts from the newest snapshot."""
        info = take_and_upload(store, database)
        status = replica_status(store)
        assert (status.lag_of, status.newest_segment_sequence, status.segments_total) == ("snapshot", None, 0)
        assert status.lag_seconds == (status.checked_at - info.created_at).total_seconds()

    def test_long_histories_render_compactly(self, store: ObjectStore, database: Path) -> None:
        """The table shows the newest three and the oldest, and says how many it hides."""
        taken = [take_and_upload(store, database) for _ in range(6)]
        status = replica_status(store)
        text = status.render()
        shown = [s.key for s in taken if s.key in text]
        assert shown == [taken[0].key, *[s.key for s in taken[-3:]]]
        assert "... 2 more (--json lists them all)" in text
        assert [s.key for s in status.snapshots] == [s.key for s in taken]

    def test_empty_replica(self, store: ObjectStore) -> None:
        """Nothing at the location is no replica to describe: one error says so and what to check."""
        with pytest.raises(NotFoundError, match=f"no replica at {re.escape(store.location)}: check the URL"):
            replica_status(store)

    def test_index_alone(self, store: ObjectStore, database: Path) -> None:
        """A replica whose snapshots are all gone reports none and says what to run."""
        info = take_and_upload(store, database)
        store.delete([info.key])
        status = replica_status(store)
        assert (status.index, status.snapshot_count, status.lag_seconds, status.object_count) == ("stale", 0, None, 1)
        assert "run 'walship snapshot DB --replica URL'" in status.render()


class TestIndexStates:
    """The index is read, checked against the listing, and never trusted over it."""

    def test_ok_missing_stale_corrupt(self, store: ObjectStore, database: Path) -> None:
        """Each state is reported, and the snapshots always come from the listing."""
        first, second = take_and_upload(store, database), take_and_upload(store, database)
        keys = [first.key, second.key]
        assert replica_status(store).index == "ok"

        one = ReplicaMetadata(snapshots=[first], snapshot_count=1).model_dump_json().encode()
        cases = [("missing", None), ("stale", one), ("corrupt", b"\x00garbage\xff")]
        for state, body in cases:
            store.delete([METADATA_KEY])
            if body is not None:
                store.put_bytes(METADATA_KEY, body)
            status = replica_status(store)
            assert (status.index, [s.key for s in status.snapshots]) == (state, keys), state
            assert status.database_id == "app.db", state
        assert any("--rebuild-index" in p for p in status.problems)

    def test_an_index_naming_a_deleted_snapshot_is_stale(self, store: ObjectStore, database: Path) -> None:
        """A snapshot the index has but the listing does not is left out, and the index is stale."""
        first, second = take_and_upload(store, database), take_and_upload(store, database)
        store.delete([first.key])
        status = replica_status(store)
        assert (status.index, [s.key for s in status.snapshots]) == ("stale", [second.key])


class TestRebuildIndex:
    """--rebuild-index rewrites metadata.json from a listing, with a conditional write."""

    @pytest.mark.parametrize("damage", ["missing", "stale", "corrupt"])
    def test_rebuild(self, store: ObjectStore, replica_url: str, database: Path, damage: str) -> None:
        """After a rebuild the index agrees with the listing and status says ok."""
        first, second = take_and_upload(store, database), take_and_upload(store, database)
        store.delete([METADATA_KEY])
        if damage == "stale":
            store.put_bytes(METADATA_KEY, ReplicaMetadata(snapshots=[first]).model_dump_json().encode())
        elif damage == "corrupt":
            store.put_bytes(METADATA_KEY, b"{not json")

        result = walship("status", "--replica", replica_url, "--rebuild-index")
        assert result.returncode == 0, result.stderr
        assert f"index:        {damage} (rebuilt from a listing just now)" in result.stdout
        assert _index_keys(store) == [first.key, second.key]
        metadata, _ = read_index(store)
        assert metadata is not None
        assert (metadata.database_id, metadata.latest_snapshot, metadata.snapshot_count) == ("app.db", second.key, 2)
        assert replica_status(store).index == "ok"


class TestCli:
    """The CLI prints the same status, as text or as the full model in JSON."""

    def test_json_parses_and_matches(self, store: ObjectStore, replica_url: str, database: Path) -> None:
        """--json is the ReplicaStatus model, with what the core reports."""
        taken = [take_and_upload(store, database) for _ in range(2)]
        result = walship("status", "--replica", replica_url, "--json")
        assert result.returncode == 0, result.stderr
        printed = ReplicaStatus.model_validate(json.loads(result.stdout))
        core = replica_status(store)
        volatile = {"checked_at", "lag_seconds", "index_last_modified"}
        assert printed.model_dump(exclude=volatile) == core.model_dump(exclude=volatile)
        assert [s.key for s in printed.snapshots] == [s.key for s in taken]

    def test_text(self, store: ObjectStore, replica_url: str, database: Path) -> None:
        """The text output names the replica, the database, the index state and the newest snapshot."""
        info = take_and_upload(store, database)
        result = walship("status", "--replica", replica_url)
        assert result.returncode == 0, result.stderr
        for fragment in (f"replica:      {store.location}", "database id:  app.db", "index:        ok", info.key):
            assert fragment in result.stdout
