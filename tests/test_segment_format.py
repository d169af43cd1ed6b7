"""The segment format (walship.segment): each object describes itself at its end, so a restore reads one GET per
segment and no HEAD; metadata is a shortcut; objects and spools of the earlier format (tests/data/format1,
described by metadata only) keep restoring."""

import io
import json
import shutil
import sqlite3
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import zstandard

from bench.segment_restore import Counting
from bench.workload import content_digest
from tests.helpers import rewrite_object, walship
from tests.test_ship import _restore
from walship.chain import list_segment_keys, read_segment_info
from walship.errors import CorruptObjectError
from walship.index import current_snapshots
from walship.layout import is_resync_key, parse_segment_key
from walship.segment import (
    FORMAT,
    ResyncSegment,
    WalSegment,
    description_trailer,
    download_segment,
    from_trailer,
    parse_segment,
)
from walship.spool import Spool
from walship.storage import ObjectStore, open_store
from walship.trailer import DESCRIPTION_LIMIT
from walship.upload import upload_pending

FORMAT1 = Path(__file__).parent / "data" / "format1"
DIRECT = {"PREFECT_API_URL": ""}


def _open_application(database: Path) -> sqlite3.Connection:
    """The application's connection, open throughout: its last close would checkpoint and delete the WAL."""
    application = sqlite3.connect(database, isolation_level=None)
    application.execute("PRAGMA journal_mode=WAL")
    application.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")
    return application


def _commit(application: sqlite3.Connection, first: int, count: int) -> None:
    for n in range(first, first + count):
        application.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (n, f"note {n} " * 30))


def _ship(database: Path, replica: str) -> None:
    result = walship("ship", str(database), "--replica", replica, "--once", env=DIRECT)
    assert result.returncode == 0, result.stderr


def _truncate_unwatched(database: Path) -> None:
    connection = sqlite3.connect(database, timeout=30)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A replica this walship wrote: a snapshot, WAL segments, a resync, WAL segments after it.
    Returns its directory, its URL and the source's content digest; tests copy it before changing it."""
    root = tmp_path_factory.mktemp("shipped")
    database, replica = root / "app.db", root / "replica"
    url = f"file://{replica}"
    application = _open_application(database)
    try:
        _commit(application, 1, 20)
        _ship(database, url)
        for batch in range(3):
            _commit(application, 100 + 10 * batch, 10)
            _ship(database, url)
        _commit(application, 500, 10)
        _truncate_unwatched(database)
        _ship(database, url)
        for batch in range(2):
            _commit(application, 700 + 10 * batch, 10)
            _ship(database, url)
        digest = content_digest(database)
    finally:
        application.close()
    keys = list(list_segment_keys(open_store(url), _generation(open_store(url))).values())
    assert any(is_resync_key(k) for k in keys), keys
    assert sum(not is_resync_key(k) for k in keys) >= 4, keys
    return replica, url, digest


def _copy(replica: Path, tmp_path: Path) -> tuple[ObjectStore, str]:
    target = tmp_path / "replica"
    shutil.copytree(replica, target)
    url = f"file://{target}"
    return open_store(url), url


def _generation(store: ObjectStore) -> str:
    return current_snapshots(store)[-1].generation


class TestObjectsDescribeThemselves:
    def test_restore_reads_no_head_per_segment(self, shipped: tuple[Path, str, str], tmp_path: Path) -> None:
        _, url, digest = shipped
        store = open_store(url)
        segments = len(list_segment_keys(store, _generation(store)))
        counting = Counting(store)
        result = _restore(counting, tmp_path / "restored.db")  # type: ignore[arg-type]
        assert result.segments_applied == segments
        assert content_digest(tmp_path / "restored.db") == digest
        assert counting.calls.get("head", 0) == 1, counting.calls  # the snapshot's own description
        # The snapshot: its tables from its end, then its frames (a small database's in one ranged read).
        assert counting.calls["open"] == segments + 2, counting.calls

    def test_restore_needs_no_metadata(self, shipped: tuple[Path, str, str], tmp_path: Path) -> None:
        store, url = _copy(shipped[0], tmp_path)
        for key in list_segment_keys(store, _generation(store)).values():
            with store.open(key) as stream:
                data = stream.read()
            store.put_bytes(key, data, metadata={})
            assert store.head(key).metadata == {}
        result = walship("restore", "--replica", url, "--output", str(tmp_path / "restored.db"), env=DIRECT)
        assert result.returncode == 0, result.stderr
        assert content_digest(tmp_path / "restored.db") == shipped[2]

    def test_metadata_is_the_same_description(self, shipped: tuple[Path, str, str]) -> None:
        store = open_store(shipped[1])
        for key in list_segment_keys(store, _generation(store)).values():
            with store.open(key) as stream:
                tail = _plain_tail(stream.read())
            described = from_trailer(tail, key)
            assert described is not None
            from_metadata = read_segment_info(store, key)
            assert described.model_copy(update={"compressed_size": store.head(key).size}) == from_metadata
            assert download_segment(store, key, io.BytesIO(), None) == from_metadata

    def test_a_plain_zstd_decoder_reads_the_body(self, shipped: tuple[Path, str, str]) -> None:
        """The description is a skippable frame: ``zstd -d`` gives the WAL frames (or resync records) alone."""
        store = open_store(shipped[1])
        for key in list_segment_keys(store, _generation(store)).values():
            with store.open(key) as stream:
                data = stream.read()
            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
                body = reader.read()
            segment = read_segment_info(store, key)
            assert len(body) == segment.raw_size
            if shutil.which("zstd"):
                assert subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout == body

    def test_a_segment_under_another_key_is_refused(self, shipped: tuple[Path, str, str], tmp_path: Path) -> None:
        store, url = _copy(shipped[0], tmp_path)
        keys = list_segment_keys(store, _generation(store))
        wal = sorted(s for s, k in keys.items() if not is_resync_key(k))
        first, second = keys[wal[0]], keys[wal[1]]
        with store.open(second) as stream:
            moved = stream.read()
        store.put_bytes(first, moved, metadata=store.head(first).metadata)
        result = walship("restore", "--replica", url, "--output", str(tmp_path / "o.db"), env=DIRECT)
        assert result.returncode == 1, result.stderr
        assert f"segment {first} describes itself as {second}" in result.stderr
        assert f"--sequence {wal[0] - 1}" in result.stderr
        assert not (tmp_path / "o.db").exists()

    def test_a_damaged_segment_past_the_asked_time_is_not_needed(
        self, shipped: tuple[Path, str, str], tmp_path: Path
    ) -> None:
        store, _ = _copy(shipped[0], tmp_path)
        keys = list_segment_keys(store, _generation(store))
        last = keys[max(keys)]
        before_last = read_segment_info(store, last).captured_at - timedelta(microseconds=1)
        rewrite_object(store, last, "flip")
        result = _restore(store, tmp_path / "restored.db", until_time=before_last)
        assert result.position.sequence == max(keys) - 1
        assert result.next_sequence == max(keys)
        with pytest.raises(CorruptObjectError, match=last):
            _restore(store, tmp_path / "latest.db")


def _plain_tail(data: bytes) -> bytes:
    return data[-DESCRIPTION_LIMIT:]


class TestDescription:
    def _segment(self) -> WalSegment:
        store_free = {
            "generation": "20261206T000000Z-0badcafe",
            "sequence": 12,
            "salt1": 2**32 - 1,
            "salt2": 2**32 - 1,
            "big_endian": True,
            "page_size": 65536,
            "start_offset": 10**15,
            "end_offset": 10**15 + 10**12,
            "checksum_start1": 2**32 - 1,
            "checksum_start2": 2**32 - 1,
            "checksum_end1": 2**32 - 1,
            "checksum_end2": 2**32 - 1,
            "frames": 10**9,
            "commits": 10**9,
            "db_size_pages": 2**32 - 2,
            "wal_restarted": True,
            "committed_after": "2026-12-06T00:00:00.123456+00:00",
            "captured_at": "2026-12-06T00:00:01.123456+00:00",
            "raw_size": 10**15,
            "sha256": "f" * 64,
            "level": 22,
            "envelope": "zstd+age",
        }
        return WalSegment.model_validate(store_free)

    def test_round_trip(self) -> None:
        segment = self._segment()
        trailer = description_trailer(segment)
        assert len(trailer) < DESCRIPTION_LIMIT
        assert from_trailer(b"body bytes" + trailer, segment.key) == segment

    def test_no_trailer_is_an_older_object(self) -> None:
        assert from_trailer(b"\x28\xb5\x2f\xfd" + bytes(100), self._segment().key) is None

    def test_a_newer_format_asks_for_an_upgrade(self) -> None:
        segment = self._segment()
        newer = description_trailer(segment).replace(f'"format":{FORMAT}'.encode(), f'"format":{FORMAT + 1}'.encode())
        with pytest.raises(CorruptObjectError, match="upgrade walship"):
            from_trailer(newer, segment.key)

    def test_resync_read_from_an_older_description(self) -> None:
        """An older walship described a resync with a WAL segment's fields."""
        [meta] = (FORMAT1 / "replica" / ".meta").glob("generations/*/wal/*.resync.zst.json")
        fields = {
            name.removeprefix("walship-").replace("-", "_"): value
            for name, value in json.loads(meta.read_text())["metadata"].items()
        }
        assert "frames" in fields
        assert "start_offset" in fields
        segment = parse_segment(fields)
        assert isinstance(segment, ResyncSegment)
        assert segment.pages == int(fields["frames"])
        assert parse_segment_key(segment.key) == (fields["generation"], int(fields["sequence"]))

    def test_a_description_naming_another_key_is_refused(self) -> None:
        segment = self._segment()
        with pytest.raises(ValueError, match="names"):
            WalSegment.model_validate({**segment.model_dump(), "key": segment.key.replace(f"{12:020d}", f"{13:020d}")})


class TestFormat1KeepsRestoring:
    """Replicas and a spool written by the walship before segments described themselves (tests/data/format1)."""

    expected = json.loads((FORMAT1 / "expected.json").read_text())

    @pytest.mark.parametrize("name", ["replica", "replica-age"])
    def test_replica(self, name: str, tmp_path: Path) -> None:
        store, url = _copy(FORMAT1 / name, tmp_path)
        keys = list_segment_keys(store, _generation(store))
        assert any(is_resync_key(k) for k in keys.values()), keys
        if name == "replica":  # described by their metadata alone
            for key in keys.values():
                with store.open(key) as stream:
                    assert from_trailer(_plain_tail(stream.read()), key) is None
        extra = ["--age-identity", str(FORMAT1 / "age.key")] if name.endswith("age") else []
        output = tmp_path / "restored.db"
        result = walship("restore", "--replica", url, "--output", str(output), *extra, env=DIRECT)
        assert result.returncode == 0, result.stderr
        assert f"/{max(keys)}" in result.stdout, result.stdout
        assert content_digest(output) == self.expected[name]
        verified = walship("verify", "--replica", url, *extra, env=DIRECT)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    def test_spooled_segments_upload_and_restore(self, tmp_path: Path) -> None:
        store, url = _copy(FORMAT1 / "replica-spooled", tmp_path)
        shutil.copytree(FORMAT1 / "spool", tmp_path / "spool")
        spool = Spool(tmp_path / "spool", lock=False)
        try:
            assert [entry.kind for entry in spool.pending()] == ["segment"] * 3
            uploaded = upload_pending(store, spool, holder="test")
        finally:
            spool.close()
        assert uploaded.segments == 3
        output = tmp_path / "restored.db"
        result = walship("restore", "--replica", url, "--output", str(output), env=DIRECT)
        assert result.returncode == 0, result.stderr
        assert content_digest(output) == self.expected["replica-spooled"]
