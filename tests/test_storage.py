"""One storage suite, run against every backend: local directory, moto, SeaweedFS, in-process memory."""

import hashlib
import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bench.workload import content_digest
from tests.conftest import IN_PROCESS_BACKENDS, use_credentials
from tests.helpers import take_and_upload
from tests.s3servers import SeaweedS3, _S3Server
from walship.catalog import select_snapshot
from walship.errors import (
    ChecksumMismatchError,
    ConflictError,
    CorruptObjectError,
    NotFoundError,
    PermanentStorageError,
)
from walship.index import current_snapshots
from walship.restore import restore_snapshot
from walship.storage import MemoryStore, ObjectStore, S3Store, StorageCredentials, open_store
from walship.storage._botodata import KEPT_SERVICES


class _Pattern(io.RawIOBase):
    """A non-seekable stream of ``size`` pseudo-random bytes, never all in memory."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.digest = hashlib.sha256()
        self._block = secrets.token_bytes(1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self.left, len(self._block))
        buffer[:n] = self._block[:n]
        self.digest.update(self._block[:n])
        self.left -= n
        return n


def _read(store: ObjectStore, key: str, **kwargs: int) -> bytes:
    with store.open(key, **kwargs) as stream:
        return stream.read()


@pytest.mark.parametrize("backend", IN_PROCESS_BACKENDS, indirect=True)
class TestObjectStore:
    """Every backend honours the ObjectStore protocol the same way."""

    def test_put_bytes_then_read_and_head(self, store: ObjectStore) -> None:
        info = store.put_bytes("a/b.txt", b"hello walship", metadata={"walship-x": "1"})
        assert info.size == 13
        assert _read(store, "a/b.txt") == b"hello walship"
        head = store.head("a/b.txt")
        assert (head.size, head.etag, head.metadata) == (13, info.etag, {"walship-x": "1"})

    def test_get_bytes_returns_content_and_etag(self, store: ObjectStore) -> None:
        written = store.put_bytes("small.json", b"{}", metadata={"walship-k": "v"})
        data, info = store.get_bytes("small.json", max_size=2)
        assert (data, info.etag, info.metadata) == (b"{}", written.etag, {"walship-k": "v"})
        with pytest.raises(CorruptObjectError, match="larger than 1 bytes"):
            store.get_bytes("small.json", max_size=1)
        with pytest.raises(NotFoundError):
            store.get_bytes("absent.json", max_size=10)

    def test_range_read(self, store: ObjectStore) -> None:
        store.put_bytes("r", bytes(range(100)))
        assert _read(store, "r", start=10, length=5) == bytes(range(10, 15))
        assert _read(store, "r", start=95) == bytes(range(95, 100))

    def test_put_stream_multipart(self, store: ObjectStore) -> None:
        """40 MiB from a non-seekable stream: several 16 MiB parts on S3."""
        stream = _Pattern(40 << 20)
        info = store.put_stream("big/object", io.BufferedReader(stream), metadata={"walship-sha256": "x"})
        assert info.size == 40 << 20
        digest = hashlib.sha256()
        with store.open("big/object") as body:
            while chunk := body.read(1 << 20):
                digest.update(chunk)
        assert digest.hexdigest() == stream.digest.hexdigest()
        assert store.head("big/object").metadata == {"walship-sha256": "x"}

    def test_put_file(self, store: ObjectStore, tmp_path: Path) -> None:
        path = tmp_path / "f"
        path.write_bytes(b"x" * 1000)
        assert store.put_file("f", path).size == 1000
        assert _read(store, "f") == b"x" * 1000

    def test_list_in_key_order_with_prefix(self, store: ObjectStore) -> None:
        for key in ("p/b", "p/a", "p/c/d", "q/z"):
            store.put_bytes(key, key.encode())
        assert [o.key for o in store.list("p/")] == ["p/a", "p/b", "p/c/d"]
        assert [o.size for o in store.list("p/")] == [3, 3, 5]
        assert [o.key for o in store.list("nothing/")] == []
        # A prefix that ends inside a name, or names a directory deeper down, lists the same keys on every backend.
        assert [o.key for o in store.list("p/c/")] == ["p/c/d"]
        assert [o.key for o in store.list("p/")] == [o.key for o in store.list("p")]
        assert [o.key for o in store.list("p/c/d")] == ["p/c/d"]
        assert [o.key for o in store.list("p/a")] == ["p/a"]
        assert [o.key for o in store.list("q/zz")] == []

    def test_list_pages_through_more_than_one_page(self, store: ObjectStore) -> None:
        if isinstance(store, S3Store):
            store.list_page_size = 7
        keys = [f"many/{i:03d}" for i in range(30)]
        for key in keys:
            store.put_bytes(key, b"")
        assert [o.key for o in store.list("many/")] == keys

    def test_delete_batches_over_the_limit(self, store: ObjectStore) -> None:
        """1,005 keys: two DeleteObjects requests on S3."""
        keys = [f"d/{i:04d}" for i in range(1005)]
        for key in keys:
            store.put_bytes(key, b"1")
        store.delete([*keys, "d/never-existed"])
        assert list(store.list("d/")) == []

    def test_missing_object(self, store: ObjectStore) -> None:
        with pytest.raises(NotFoundError, match="missing"):
            store.head("missing")
        with pytest.raises(NotFoundError, match="missing"), store.open("missing"):
            pass

    def test_if_none_match_creates_once(self, store: ObjectStore) -> None:
        store.put_bytes("lease", b"one", if_none_match=True)
        with pytest.raises(ConflictError):
            store.put_bytes("lease", b"two", if_none_match=True)
        assert _read(store, "lease") == b"one"

    def test_if_match_needs_the_current_etag(self, store: ObjectStore) -> None:
        first = store.put_bytes("index", b"v1")
        second = store.put_bytes("index", b"v2", if_match=first.etag)
        with pytest.raises(ConflictError):
            store.put_bytes("index", b"v3", if_match=first.etag)
        assert _read(store, "index") == b"v2"
        store.put_bytes("index", b"v3", if_match=second.etag)
        assert _read(store, "index") == b"v3"

    def test_under_is_the_same_store_at_a_deeper_prefix(self, store: ObjectStore) -> None:
        inner = store.under("fleet/one/")
        inner.put_bytes("lease.json", b"{}")
        store.under("fleet/two/").put_bytes("lease.json", b"[]")
        assert [o.key for o in inner.list()] == ["lease.json"]
        assert [o.key for o in store.list("fleet/")] == ["fleet/one/lease.json", "fleet/two/lease.json"]
        assert _read(store.under("fleet/").under("two/"), "lease.json") == b"[]"
        assert inner.location.rstrip("/").endswith("fleet/one")


@pytest.fixture
def s3_only(s3_server: _S3Server | None, monkeypatch: pytest.MonkeyPatch) -> _S3Server:
    if s3_server is None:
        pytest.skip("S3 failure modes")
    use_credentials(monkeypatch, s3_server)
    return s3_server


class TestS3Failures:
    """S3 refusals become typed errors that say what to fix."""

    def test_missing_bucket(self, s3_only: _S3Server) -> None:
        store = open_store(f"s3://no-such-bucket-{secrets.token_hex(4)}/x?endpoint={s3_only.endpoint}")
        with pytest.raises(NotFoundError, match="does not exist"):
            list(store.list())
        # HEAD responses have no body, so a missing bucket reads as a missing object.
        with pytest.raises(NotFoundError):
            store.head("k")

    @pytest.mark.seaweedfs
    def test_wrong_credentials(self, seaweed_server: _S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
        use_credentials(monkeypatch, seaweed_server)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        store = open_store(f"s3://walship-creds/x?endpoint={seaweed_server.endpoint}")
        with pytest.raises(PermanentStorageError, match="credentials"):
            store.put_bytes("k", b"v")


class TestStorageCredentials:
    """Explicit credentials (a block's, resolved outside the core) never show their secret."""

    def test_repr_str_and_dump_mask_the_secret(self) -> None:
        credentials = StorageCredentials(
            access_key_id="AKIAEXAMPLE",
            secret_access_key="s3cr3t-value",
            session_token="t0ken-value",
            endpoint="http://127.0.0.1:9000",
            source="credentials of block 'walship-s3'",
        )
        for text in (repr(credentials), str(credentials), f"{credentials}", credentials.model_dump_json()):
            assert "s3cr3t-value" not in text
            assert "t0ken-value" not in text
        assert "walship-s3" in repr(credentials)
        assert "AKIAEXAMPLE" not in repr(credentials)

    @pytest.mark.seaweedfs
    def test_a_wrong_secret_names_where_the_credentials_came_from(
        self, seaweed_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        seaweed_server.create_bucket("walship-explicit")
        good = StorageCredentials(
            access_key_id=seaweed_server.access_key,
            secret_access_key=seaweed_server.secret_key,
            region=seaweed_server.region,
            endpoint=seaweed_server.endpoint,
            source="credentials of block 'good'",
        )
        store = open_store("s3://walship-explicit/app", good)
        store.put_bytes("probe", b"x")
        assert [o.key for o in store.list()] == ["probe"]
        bad = good.model_copy(update={"secret_access_key": SecretStr("wrong"), "source": "credentials of block 'bad'"})
        with pytest.raises(PermanentStorageError, match=r"access denied .*check the credentials of block 'bad'"):
            list(open_store("s3://walship-explicit/app", bad).list())


class TestLeanBotocoreData:
    """An S3 client holds botocore's models as parsed here: S3's and the credential chain's, no docs."""

    def test_the_client_holds_no_documentation_and_only_the_services_walship_calls(
        self, moto_server: _S3Server, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        use_credentials(monkeypatch, moto_server)
        moto_server.create_bucket("walship-lean")
        store = open_store(f"s3://walship-lean/x?endpoint={moto_server.endpoint}")
        assert isinstance(store, S3Store)
        store.put_bytes("k", b"v")
        assert _read(store, "k") == b"v"
        model = store.client.meta.service_model
        assert model.documentation == ""
        assert model.operation_model("PutObject").documentation == ""
        assert model.shape_for("PutObjectRequest").members["Key"].documentation == ""
        # botocore indexes these, so they keep theirs.
        assert model.client_context_parameters[0].documentation
        loader = store.client._loader
        endpoints = loader.load_data("endpoints")
        for partition in endpoints["partitions"]:
            assert set(partition["services"]) <= KEPT_SERVICES
        assert "s3" in endpoints["partitions"][0]["services"]
        assert type(endpoints) is dict
        assert type(loader.load_service_model("s3", "service-2")["shapes"]) is dict


def test_the_core_snapshots_and_restores_through_a_backend_in_one_file(database: Path, tmp_path: Path) -> None:
    """memory:// knows nothing of walship but the ObjectStore protocol and its registration, and serves it whole."""
    store = open_store(f"memory://core-{secrets.token_hex(4)}/backups/app")
    info = take_and_upload(store, database)
    restore_snapshot(store, select_snapshot(current_snapshots(store)), tmp_path / "restored.db")
    assert content_digest(tmp_path / "restored.db") == content_digest(database)
    assert [s.key for s in current_snapshots(store)] == [info.key]


class TestMultipartDriver:
    """The multipart driver knows backends only as part sinks: on the in-process one, as on S3 (tests of
    test_stream_snapshot.py and test_sent_bytes.py), a failure leaves no object and no pending upload."""

    @pytest.fixture
    def memory(self) -> MemoryStore:
        store = open_store(f"memory://driver-{secrets.token_hex(4)}/app")
        assert isinstance(store, MemoryStore)
        return store

    def test_parts_become_one_object_with_its_metadata(self, memory: MemoryStore) -> None:
        chunks = [secrets.token_bytes(1 << 20) for _ in range(13)]
        info = memory.put_chunks("snap", iter(chunks), metadata={"walship-k": "v"})
        assert info.size == 13 << 20
        assert _read(memory, "snap") == b"".join(chunks)
        assert memory.head("snap").metadata == {"walship-k": "v"}
        assert memory.pending_uploads() == []

    def test_a_producer_failing_mid_upload_aborts_it(self, memory: MemoryStore) -> None:
        def failing() -> Iterator[bytes]:
            yield from (bytes(1 << 20) for _ in range(9))  # past the first part: a multipart upload is open
            raise RuntimeError("the snapshot's reader failed")

        with pytest.raises(RuntimeError, match="reader failed"):
            memory.put_chunks("snap", failing(), metadata={})
        with pytest.raises(NotFoundError):
            memory.head("snap")
        assert memory.pending_uploads() == []

    @pytest.mark.parametrize("size", [1000, 13 << 20], ids=["one-request", "multipart"])
    def test_bytes_that_do_not_hash_as_expected_are_not_stored(
        self, memory: MemoryStore, tmp_path: Path, size: int
    ) -> None:
        path = tmp_path / "segment"
        path.write_bytes(secrets.token_bytes(size))
        with pytest.raises(ChecksumMismatchError, match="nothing stored"):
            memory.put_file("seg", path, sha256=hashlib.sha256(b"other bytes").hexdigest())
        with pytest.raises(NotFoundError):
            memory.head("seg")
        assert memory.pending_uploads() == []
        assert memory.put_file("seg", path, sha256=hashlib.sha256(path.read_bytes()).hexdigest()).size == size
