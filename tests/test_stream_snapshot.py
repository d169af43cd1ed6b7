"""The streamed snapshot (copy, compression and upload in one pass), on every backend.

Live writer processes commit while it runs; storage is cut off behind a TCP
proxy in the middle of an upload; the producer of the stream fails; the
object's recorded SHA-256 and sizes are checked against what is stored.
"""

import hashlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from bench.workload import committed_counts, content_digest, expected_state
from tests.conftest import Writers, use_credentials
from tests.helpers import single_stream_snapshot
from tests.s3servers import _S3Server, s3_client
from tests.shipping import wait_until
from tests.tcpproxy import TcpProxy
from walship import index
from walship.catalog import describe_snapshot, list_snapshots, select_snapshot
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotFoundError, TransientStorageError, UsageError
from walship.frames import format_tail, parse_tail
from walship.index import current_snapshots
from walship.restore import restore_snapshot
from walship.snapshot import stream_snapshot
from walship.sqlite import PageCopy, read_header
from walship.storage import ObjectStore, S3Store, open_store
from walship.trailer import TRAILER_SIZE
from walship.verify import check_index

S3_BACKENDS = ["moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)]


def _counts(database: Path, writers: int) -> list[int]:
    counts = committed_counts(database)
    return [counts.get(w, 0) for w in range(1, writers + 1)]


def _object_bytes(store: ObjectStore, key: str) -> bytes:
    with store.open(key) as stream:
        return stream.read()


def _decompressed(data: bytes) -> bytes:
    """What any zstd decoder makes of an object: every frame's content, skippable frames passed over."""
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        return reader.read()


def _pending_uploads(server: _S3Server, bucket: str) -> list[str]:
    response = s3_client(server).list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in response.get("Uploads", [])]


def _random_database(path: Path, mib: int) -> None:
    """A WAL-mode database of ``mib`` MiB of incompressible rows: several upload parts once compressed."""
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB)")
    with connection:
        connection.executemany("INSERT INTO blobs(data) VALUES (?)", ((os.urandom(1 << 20),) for _ in range(mib)))
    connection.close()


def _with_recorded_sha256(data: bytes, name: str, sha256: str) -> bytes:
    """A framed snapshot whose tables record ``sha256`` for the whole database, each table's digest made anew."""
    layout = parse_tail(data, len(data), name)
    assert not isinstance(layout, int)
    frames = [(f.size, f.raw_size, f.sha256) for f in layout.frames]
    tail = format_tail(
        page_size=layout.page_size,
        pages_per_frame=layout.pages_per_frame,
        raw_size=layout.raw_size,
        sha256=sha256,
        frames=frames,
    )
    return data[: layout.data_end] + tail


class TestStreamedSnapshot:
    def test_live_writers_restore_equals_one_committed_state(
        self, store: ObjectStore, database: Path, base_database: Path, writers: Writers, tmp_path: Path
    ) -> None:
        # Every writer has committed before the snapshot and goes on during it, however slowly the machine runs.
        wait_until(lambda: all(n > 0 for n in _counts(database, 3)), "a commit by each of the 3 writers", 120)
        info = stream_snapshot(store, database, database_id="app.db", level=3)
        index.add_snapshot(store, info)
        before = sum(committed_counts(database).values())
        wait_until(lambda: sum(committed_counts(database).values()) > before, "a commit after the snapshot", 120)
        writers.stop()
        restored = tmp_path / "restored.db"
        restore_snapshot(store, select_snapshot(current_snapshots(store)), restored)  # integrity_check included

        counts = committed_counts(restored)
        assert all(counts.get(w, 0) > 0 for w in (1, 2, 3))
        assert sum(committed_counts(database).values()) > sum(counts.values())
        expected = tmp_path / "expected.db"
        expected_state(base_database, expected, 11, counts)
        assert content_digest(restored) == content_digest(expected)
        assert info.page_count * info.page_size == restored.stat().st_size == info.raw_size

    def test_recorded_sha256_and_sizes_match_the_object(self, store: ObjectStore, database: Path) -> None:
        info = stream_snapshot(store, database, database_id="app.db", level=5)
        data = _object_bytes(store, info.key)
        raw = _decompressed(data)
        assert (len(data), len(raw)) == (info.compressed_size, info.raw_size)
        assert hashlib.sha256(raw).hexdigest() == info.sha256
        unknown_at_start = {"compressed_size": 0, "sha256": ""}
        assert store.head(info.key).metadata == describe_snapshot(info.model_copy(update=unknown_at_start))
        assert raw == database.read_bytes()  # no writer: the file itself is the state

    def test_pages_only_in_the_wal(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """Pages that exist only in the WAL (the file is shorter than the database) come from the WAL."""
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD_WAL, str(database)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == b"ready\n"
            info = stream_snapshot(store, database, database_id="app.db", level=3)
            assert database.stat().st_size < info.raw_size  # the case under test really happened
            source_digest = content_digest(database)
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=30)
        restored = tmp_path / "restored.db"
        restore_snapshot(store, info, restored)
        assert content_digest(restored) == source_digest
        assert read_header(restored).page_count == info.page_count

    def test_rollback_journal_database(self, store: ObjectStore, tmp_path: Path) -> None:
        """A database not in WAL mode is read under its read transaction's shared lock alone."""
        database = tmp_path / "journal.db"
        connection = sqlite3.connect(database)
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("CREATE TABLE t(x)")
        with connection:
            connection.executemany("INSERT INTO t VALUES (?)", ((os.urandom(500),) for _ in range(3000)))
        connection.close()
        info = stream_snapshot(store, database, database_id="journal.db", level=3)
        restored = tmp_path / "restored.db"
        restore_snapshot(store, info, restored)
        assert restored.read_bytes() == database.read_bytes()
        assert not Path(f"{database}-wal").exists()

    def test_the_state_is_read_once_and_its_sha256_ends_the_object(
        self, store: ObjectStore, database: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """One read is hashed, compressed and uploaded; the digest ends the object (its frame table), not the
        metadata."""
        reads = 0
        honest = PageCopy.blocks

        def counted(pages: PageCopy) -> Iterator[bytes | bytearray]:
            nonlocal reads
            reads += 1
            yield from honest(pages)

        monkeypatch.setattr(PageCopy, "blocks", counted)
        info = stream_snapshot(store, database, database_id="app.db", level=3)
        assert reads == 1
        data = _object_bytes(store, info.key)
        layout = parse_tail(data, len(data), info.key)
        assert not isinstance(layout, int)
        assert layout.sha256 == info.sha256
        assert info.sha256 == hashlib.sha256(database.read_bytes()).hexdigest()
        metadata = store.head(info.key).metadata
        assert "walship-sha256" not in metadata
        assert metadata["walship-sha256-at-end"] == "True"

    def test_plain_zstd_passes_over_the_trailer(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """``zstd -d`` turns the object into the database: the checksum is a skippable frame."""
        if shutil.which("zstd") is None:
            pytest.skip("the zstd command is not installed")
        info = stream_snapshot(store, database, database_id="app.db", level=3)
        plain = subprocess.run(
            ["zstd", "-d", "-c"], check=False, input=_object_bytes(store, info.key), capture_output=True
        )
        assert plain.returncode == 0, plain.stderr
        assert plain.stdout == database.read_bytes()

    @pytest.mark.parametrize("damage", ["digest", "cut"])
    @pytest.mark.parametrize("index_from", ["snapshot", "rebuild"])
    @pytest.mark.parametrize("made", ["framed", "single-stream"])
    def test_a_damaged_or_missing_checksum_fails_the_restore(
        self, store: ObjectStore, database: Path, tmp_path: Path, damage: str, index_from: str, made: str
    ) -> None:
        """A recorded checksum changed or cut off fails the restore, naming the object, whatever the index knows:
        in a framed snapshot's frame table (changed consistently with the table's own digest), or in the trailer
        of a snapshot walship streamed as one frame."""
        if made == "framed":
            info = stream_snapshot(store, database, database_id="app.db", level=3)
            data = bytearray(_object_bytes(store, info.key))
            if damage == "digest":
                data = bytearray(_with_recorded_sha256(bytes(data), info.key, "0" * 64))
            else:
                del data[-100:]
        else:
            info = single_stream_snapshot(store, database)
            data = bytearray(_object_bytes(store, info.key))
            if damage == "digest":
                data[-1] ^= 0x01
            else:
                del data[-TRAILER_SIZE:]
        store.put_stream(info.key, io.BytesIO(bytes(data)), metadata=store.head(info.key).metadata)
        chosen = info if index_from == "snapshot" else index.rebuild_index(store).snapshots[0]
        output = tmp_path / "out.db"
        error = ChecksumMismatchError if damage == "digest" else CorruptObjectError
        with pytest.raises(error, match=info.key):
            restore_snapshot(store, chosen, output)
        assert not output.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.db")] == []

    def test_a_single_stream_snapshot_still_restores(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """Snapshots walship streamed before framed ones (one frame, a trailer) restore, through a rebuilt index."""
        info = single_stream_snapshot(store, database)
        assert index.rebuild_index(store).snapshots == [info]
        restored = tmp_path / "restored.db"
        assert restore_snapshot(store, info, restored).snapshot.sha256 == info.sha256
        assert restored.read_bytes() == database.read_bytes()

    def test_the_index_and_the_trailer_must_agree(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """An index entry whose checksum is not the object's fails the restore and the index check."""
        info = stream_snapshot(store, database, database_id="app.db", level=3)
        lying = info.model_copy(update={"sha256": "0" * 64})
        index.add_snapshot(store, lying)
        output = tmp_path / "out.db"
        disagree = f"{info.key}: the index and the object disagree on its checksum \\(the object records"
        with pytest.raises(ChecksumMismatchError, match=f"{disagree} SHA-256 {info.sha256}"):
            restore_snapshot(store, lying, output)
        assert not output.exists()
        report = check_index(store)
        assert not report.passed
        assert "sha256 (the one at the object's end)" in str(report.failed)
        assert info.key in str(report.failed)

    def test_a_rebuilt_index_keeps_the_checksum(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        """The rebuild reads each streamed snapshot's trailer (one small ranged read)."""
        info = stream_snapshot(store, database, database_id="app.db", level=3)
        assert list_snapshots(store) == [info.model_copy(update={"sha256": ""})]  # its metadata has none
        assert index.rebuild_index(store).snapshots == [info]
        index.add_snapshot(store, info)
        assert check_index(store).passed
        restored = tmp_path / "restored.db"
        result = restore_snapshot(store, info, restored)
        assert result.snapshot.sha256 == info.sha256
        assert restored.read_bytes() == database.read_bytes()

    def test_producer_failure_leaves_nothing(self, store: ObjectStore, s3_server: _S3Server | None) -> None:
        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield os.urandom(1 << 20)
            raise RuntimeError("the database went away")

        with pytest.raises(RuntimeError, match="went away"):
            store.put_chunks("generations/g/snapshots/x.sqlite.zst", chunks(), metadata={})
        assert list(store.list()) == []
        if isinstance(store, S3Store):
            assert s3_server is not None
            assert _pending_uploads(s3_server, store.bucket) == []
        else:
            assert os.listdir(Path(store.location.removeprefix("file://")) / ".tmp") == []


@pytest.mark.parametrize("backend", S3_BACKENDS)
class TestStreamedUploadOnS3:
    def test_storage_cut_off_mid_upload_leaves_nothing(
        self, s3_server: _S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The proxy goes down a third of the way in and comes back only after the parts failed."""
        use_credentials(monkeypatch, s3_server)
        bucket = f"walship-cut-{os.urandom(4).hex()}"
        s3_server.create_bucket(bucket)
        database = tmp_path / "big.db"
        _random_database(database, 48)
        host, port = s3_server.endpoint.removeprefix("http://").split(":")
        with TcpProxy(host, int(port)) as proxy:
            store = open_store(f"s3://{bucket}/app?endpoint={proxy.endpoint}")
            # Back once botocore gave the parts up (its attempts take about
            # 3 s), while the abort still retries (about 15 s).
            back = threading.Timer(6.0, proxy.start)
            cut = threading.Event()

            def progress(done: int, total: int) -> None:
                if not cut.is_set() and done > total * 2 // 3:  # parts are in flight by then
                    cut.set()
                    proxy.stop()
                    back.start()

            with pytest.raises(TransientStorageError, match=rf"^s3: put object s3://{bucket}/app/generations/"):
                stream_snapshot(store, database, database_id="big.db", level=1, progress=progress)
            back.join()
            assert cut.is_set()
            assert list(store.list()) == []
            assert _pending_uploads(s3_server, bucket) == []

    def test_snapshot_is_one_upload_with_its_metadata_from_the_start(self, store: ObjectStore, tmp_path: Path) -> None:
        """The object goes up once, under its key, with its whole metadata: no staging object, no copy."""
        database = tmp_path / "big.db"
        _random_database(database, 16)
        assert isinstance(store, S3Store)
        calls: list[tuple[str, dict[str, object]]] = []
        store.client.meta.events.register(
            "provide-client-params.s3", lambda params, model, **_: calls.append((model.name, dict(params)))
        )
        info = stream_snapshot(store, database, database_id="big.db", level=1)
        names = [name for name, _ in calls]
        assert not {"CopyObject", "UploadPartCopy", "DeleteObject"} & set(names)
        created = [params for name, params in calls if name == "CreateMultipartUpload"]
        assert [params["Key"] for params in created] == [store.full(info.key)]
        unknown_at_start = {"compressed_size": 0, "sha256": ""}
        assert created[0]["Metadata"] == describe_snapshot(info.model_copy(update=unknown_at_start))
        assert names.count("UploadPart") >= 2  # the case under test: more than one part
        assert [o.key for o in store.list()] == [info.key]

    def test_multipart_object_keeps_its_metadata(self, store: ObjectStore, s3_server: _S3Server) -> None:
        data = os.urandom(12 << 20)
        chunks = (data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20))
        info = store.put_chunks("k", chunks, metadata={"walship-sha256": "given"})
        assert info.size == len(data)
        assert _object_bytes(store, "k") == data
        assert store.head("k").metadata == {"walship-sha256": "given"}
        assert [o.key for o in store.list()] == ["k"]
        assert isinstance(store, S3Store)
        assert _pending_uploads(s3_server, store.bucket) == []

    def test_small_object_is_one_put(self, store: ObjectStore) -> None:
        info = store.put_chunks("small", iter([b"a" * 10, b"b" * 5]), metadata={"walship-x": "1"})
        assert (info.size, _object_bytes(store, "small")) == (15, b"a" * 10 + b"b" * 5)
        assert store.head("small").metadata == {"walship-x": "1"}
        assert [o.key for o in store.list()] == ["small"]

    def test_put_stream_keeps_its_metadata(self, store: ObjectStore) -> None:
        data = os.urandom(20 << 20)
        store.put_stream("s", io.BytesIO(data), metadata={"walship-k": "v"})
        assert _object_bytes(store, "s") == data
        assert store.head("s").metadata == {"walship-k": "v"}


def test_missing_database_writes_nothing(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        stream_snapshot(store, tmp_path / "nope.db", database_id="nope.db", level=3)
    assert list(store.list()) == []
    with pytest.raises(NotFoundError):
        restore_snapshot(store, select_snapshot(current_snapshots(store)), tmp_path / "out.db")


# Grows the database by about 8 MiB with the WAL never checkpointed, then
# keeps its connection (and so the WAL) open until stdin closes.
_HOLD_WAL = """
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE IF NOT EXISTS grown(id INTEGER PRIMARY KEY, data BLOB)")
c.execute("BEGIN")
for _ in range(2000):
    c.execute("INSERT INTO grown(data) VALUES (?)", (os.urandom(4000),))
c.execute("COMMIT")
print("ready", flush=True)
sys.stdin.read()
"""
