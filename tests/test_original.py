"""The original design's layout: keys, recognised by status, restored by walship restore, on every backend."""

import io
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from bench.workload import create_database
from tests.helpers import walship
from tests.test_cli import assert_plain_error
from walship.errors import CorruptObjectError, UsageError
from walship.layout import (
    METADATA_KEY,
    format_original_snapshot_key,
    format_original_wal_key,
    parse_original_snapshot_key,
    parse_original_wal_key,
)
from walship.original import restore_original
from walship.status import replica_status
from walship.storage import ObjectStore

OLDER = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
NEWER = OLDER + timedelta(hours=2)
WAL_OBJECTS = 5


@pytest.fixture
def older_database(tmp_path: Path) -> Path:
    """A second, different database: the older snapshot's content."""
    path = tmp_path / "older.db"
    create_database(path, 1 << 20, seed=5)
    return path


def write_original(
    store: ObjectStore, snapshots: list[tuple[datetime, bytes]], *, checksum: bool = False, metadata: bool = True
) -> None:
    """Write a prefix as the original replicator did: zstd snapshots by time, WAL by sequence, its metadata.json."""
    compressor = zstandard.ZstdCompressor(level=3, write_checksum=checksum, write_content_size=False)
    for taken_at, content in snapshots:
        store.put_stream(format_original_snapshot_key(taken_at), io.BytesIO(compressor.compress(content)))
    for sequence in range(1, WAL_OBJECTS + 1):
        store.put_stream(format_original_wal_key(sequence), io.BytesIO(compressor.compress(b"wal %d" % sequence)))
    if metadata:
        newest = max(t for t, _ in snapshots)
        # serde_json's to_vec_pretty of ReplicationMetadata; chrono writes nanoseconds.
        document = {
            "latest_snapshot": f"backups/app/{format_original_snapshot_key(newest)}",
            "latest_snapshot_time": f"{newest:%Y-%m-%dT%H:%M:%S}.123456789Z",
            "latest_wal_sequence": WAL_OBJECTS,
            "snapshot_count": len(snapshots),
            "db_identifier": "app.db",
            "last_modified": f"{newest:%Y-%m-%dT%H:%M:%S}.987654321Z",
        }
        store.put_bytes(METADATA_KEY, json.dumps(document, indent=2).encode())


class TestOriginalKeys:
    """The original key formats, as format/parse pairs."""

    def test_snapshot_key_roundtrip(self) -> None:
        """A snapshot key encodes the UTC second, whatever zone the time came in."""
        key = format_original_snapshot_key(datetime(2026, 11, 20, 9, 1, 2, tzinfo=UTC).astimezone())
        assert key == "snapshots/20261120_090102.sqlite.zst"
        assert parse_original_snapshot_key(key) == datetime(2026, 11, 20, 9, 1, 2, tzinfo=UTC)

    @pytest.mark.parametrize("sequence", [0, 1, 10**19])
    def test_wal_key_roundtrip(self, sequence: int) -> None:
        """A WAL key is the sequence in 20 digits."""
        key = format_original_wal_key(sequence)
        assert key == f"wal/{sequence:020d}.wal.zst"
        assert parse_original_wal_key(key) == sequence

    @pytest.mark.parametrize(
        "key",
        [
            "snapshots/20261320_000000.sqlite.zst",
            "snapshots/20261120-000000.sqlite.zst",
            "x/snapshots/20261120_000000.sqlite.zst",
            "generations/20261120T000000Z-0a0b0c0d/snapshots/00000000000000000000.sqlite.zst",
            "wal/1.wal.zst",
            "generations/20261120T000000Z-0a0b0c0d/wal/00000000000000000001.wal.zst",
        ],
    )
    def test_other_keys_do_not_parse(self, key: str) -> None:
        """walship's own keys, foreign keys and impossible dates are not the original layout."""
        assert parse_original_snapshot_key(key) is None
        assert parse_original_wal_key(key) is None


class TestStatus:
    """status recognises an original-layout prefix and says what walship can do with it."""

    def test_recognised(self, store: ObjectStore, database: Path, older_database: Path) -> None:
        """Counts, newest and oldest, the original metadata and what restore will do."""
        write_original(store, [(OLDER, older_database.read_bytes()), (NEWER, database.read_bytes())])
        status = replica_status(store)
        original = status.original
        assert original is not None
        assert (original.snapshot_count, original.wal_count, original.newest_wal_sequence) == (2, WAL_OBJECTS, 5)
        assert original.newest is not None
        assert original.oldest is not None
        assert (original.newest.key, original.newest.taken_at) == (format_original_snapshot_key(NEWER), NEWER)
        assert original.oldest.key == format_original_snapshot_key(OLDER)
        assert original.newest.size == store.head(original.newest.key).size
        assert original.metadata_state == "original"
        assert original.metadata is not None
        assert original.metadata.latest_wal_sequence == WAL_OBJECTS
        assert (status.index, status.database_id, status.snapshot_count) == ("original", "app.db", 0)
        assert status.lag_of == "original-layout snapshot"
        text = status.render()
        assert "original layout: 2 snapshots" in text
        assert "'walship restore' restores its newest snapshot" in text
        assert "WAL objects are not applied" in text
        assert "run 'walship snapshot" not in text

    def test_without_metadata(self, store: ObjectStore, database: Path) -> None:
        """A prefix whose metadata.json is gone is still recognised from the listing."""
        write_original(store, [(NEWER, database.read_bytes())], metadata=False)
        status = replica_status(store)
        assert status.original is not None
        assert (status.index, status.original.metadata_state, status.original.snapshot_count) == (
            "missing",
            "missing",
            1,
        )

    def test_rebuild_index_leaves_the_original_metadata_alone(
        self, store: ObjectStore, replica_url: str, database: Path
    ) -> None:
        """--rebuild-index refuses to overwrite the original's metadata.json (exit 2), which stays as it was."""
        write_original(store, [(NEWER, database.read_bytes())])
        before = store.get_bytes(METADATA_KEY, max_size=1 << 20)[0]
        result = walship("status", "--replica", replica_url, "--rebuild-index")
        assert_plain_error(result, 2, "leaves it alone")
        assert store.get_bytes(METADATA_KEY, max_size=1 << 20)[0] == before


class TestRestore:
    """restore restores an original-layout snapshot, verified, and never applies its WAL objects."""

    def test_cli_restores_the_newest(
        self,
        prefect_api: str,
        store: ObjectStore,
        replica_url: str,
        database: Path,
        older_database: Path,
        tmp_path: Path,
    ) -> None:
        """'walship restore' with no point restores the newest snapshot byte for byte and says what it skipped."""
        write_original(store, [(OLDER, older_database.read_bytes()), (NEWER, database.read_bytes())])
        output = tmp_path / "restored.db"
        result = walship(
            "restore", "--replica", replica_url, "--output", str(output), env={"PREFECT_API_URL": prefect_api}
        )
        assert result.returncode == 0, result.stderr
        assert output.read_bytes() == database.read_bytes()
        assert format_original_snapshot_key(NEWER) in result.stdout
        assert f"{WAL_OBJECTS} WAL objects not applied" in result.stdout
        assert "none recorded" in result.stdout

    def test_timestamp_selects_among_them(
        self, store: ObjectStore, database: Path, older_database: Path, tmp_path: Path
    ) -> None:
        """A time between the two snapshots restores the older one."""
        write_original(store, [(OLDER, older_database.read_bytes()), (NEWER, database.read_bytes())])
        result = restore_original(store, tmp_path / "restored-older.db", before=NEWER - timedelta(seconds=1))
        assert result.key == format_original_snapshot_key(OLDER)
        assert (tmp_path / "restored-older.db").read_bytes() == older_database.read_bytes()
        assert (result.database_id, result.wal_objects_not_applied) == ("app.db", WAL_OBJECTS)

    def test_frame_checksum_is_verified(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A zstd frame checksum is reported as verified; a flipped checksum byte stops the restore."""
        write_original(store, [(NEWER, database.read_bytes())], checksum=True)
        result = restore_original(store, tmp_path / "ok.db")
        assert result.checksum == "zstd frame checksum (XXH64) verified"
        key = format_original_snapshot_key(NEWER)
        with store.open(key) as stream:
            data = bytearray(stream.read())
        data[-1] ^= 0x01  # the frame's last four bytes are its checksum
        store.put_stream(key, io.BytesIO(bytes(data)))
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(CorruptObjectError, match=key):
            restore_original(store, out / "bad.db")
        assert os.listdir(out) == []

    def test_truncated_database_is_refused(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """A snapshot holding half a database fails verification, naming the object, and writes nothing."""
        content = database.read_bytes()
        write_original(store, [(NEWER, content[: len(content) // 2])])
        with pytest.raises(CorruptObjectError, match="truncated or padded"):
            restore_original(store, tmp_path / "half.db")
        assert list(tmp_path.glob("half.db*")) == []

    def test_another_database_id_is_refused(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """--database-id must match the original's db_identifier."""
        write_original(store, [(NEWER, database.read_bytes())])
        with pytest.raises(UsageError, match=r"records database 'app\.db', not 'billing\.db'"):
            restore_original(store, tmp_path / "x.db", expected_database_id="billing.db")
        assert not (tmp_path / "x.db").exists()
