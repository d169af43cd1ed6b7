"""What the object store receives is what was spooled (issue 21): a spool entry checked intact and changed before
the store reads it never becomes an object; the upload fails with the integrity error instead.

The change is made deterministically by a store wrapper whose ``put_file`` damages its source file just before
the real store reads it: the moment a byte flips on the spool's disk while storage is down, and botocore's own
retries re-read the file when the connection comes back."""

import base64
import hashlib
import secrets
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.s3servers import _S3Server, s3_client
from walship.errors import ChecksumMismatchError, NotFoundError, SpoolEntryDamagedError, TransientStorageError
from walship.models import ObjectInfo
from walship.ship import ShipConfig, Shipper
from walship.spool import PendingEntry, Spool, default_spool_dir
from walship.storage import ObjectStore, S3Store
from walship.upload import upload_pending

# Sizes that take each path of the S3 backend: one PUT from the file, one PUT of a single part, multipart.
SMALL, ONE_PART, MULTIPART = 1000, (5 << 20) + 12345, (13 << 20) + 7


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x20]))


class DamagesBeforeReading:
    """The replica's store, but ``put_file`` of ``victim`` flips one of its bytes before the store reads it."""

    def __init__(self, store: ObjectStore, victim: Path, offset: int) -> None:
        self.store, self.victim, self.offset = store, victim, offset
        self.damaged = 0

    def put_file(self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, **rest: Any) -> ObjectInfo:
        if path == self.victim:
            flip_byte(path, min(self.offset, path.stat().st_size - 1))
            self.damaged += 1
        return self.store.put_file(key, path, metadata=metadata, **rest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def spool_entries(database: Path, batches: int) -> list[PendingEntry]:
    """A snapshot and ``batches`` segments captured into the spool and not uploaded, as during an outage."""
    application = sqlite3.connect(database, isolation_level=None)  # open: its last close would delete the WAL
    spool = Spool(default_spool_dir(database))
    shipper = Shipper(database, spool, ShipConfig(database_id=database.name))
    try:
        shipper.open()
        for batch in range(batches):
            for n in range(5):
                application.execute("CREATE TABLE IF NOT EXISTS notes (body TEXT)")
                application.execute("INSERT INTO notes VALUES (?)", (f"batch {batch} note {n} " * 30,))
            shipper.sync()
    finally:
        shipper.close()
        spool.close()
        application.close()
    return Spool(default_spool_dir(database), lock=False).pending()


def pending_uploads(store: ObjectStore, server: _S3Server | None) -> list[str]:
    """Multipart uploads the bucket still keeps (S3 only)."""
    if not isinstance(store, S3Store) or server is None:
        return []
    uploads = s3_client(server).list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [upload["Key"] for upload in uploads]


def assert_absent(store: ObjectStore, key: str) -> None:
    with pytest.raises(NotFoundError):
        store.head(key)


class TestSpooledEntryChangedAfterItsCheck:
    @pytest.mark.parametrize("kind", ["snapshot", "segment"])
    def test_never_uploaded(self, database: Path, store: ObjectStore, kind: str) -> None:
        entries = spool_entries(database, 3)
        victim = next(e for e in entries if e.kind == kind and e.sequence >= (2 if kind == "segment" else 0))
        spool = Spool(default_spool_dir(database), lock=False)
        damaging = DamagesBeforeReading(store, spool.data_path(victim), offset=100)
        victim_key = (victim.snapshot or victim.segment).key  # type: ignore[union-attr]

        with pytest.raises(SpoolEntryDamagedError, match=spool.data_path(victim).name):
            upload_pending(damaging, spool, holder="test")  # type: ignore[arg-type]

        assert damaging.damaged == 1
        assert_absent(store, victim_key)
        before = [e for e in entries if e.generation == victim.generation and e.sequence < victim.sequence]
        for entry in before:  # what came before it went up; it and what follows it stay off the replica
            if entry.kind == "segment":
                store.head(entry.segment.key)  # type: ignore[union-attr]
        spool.drop_abandoned()
        assert not [e for e in spool.pending() if e.generation == victim.generation]


@pytest.fixture
def content(tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Path, str]:
    """A file of ``request.param`` random bytes and its SHA-256."""
    data = secrets.token_bytes(request.param)
    path = tmp_path / "object.bin"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


SIZES = pytest.mark.parametrize(
    "content", [SMALL, ONE_PART, MULTIPART], indirect=True, ids=["small", "one-part", "multipart"]
)


class TestPutFileWithItsSha256:
    @SIZES
    @pytest.mark.parametrize("where", ["start", "end"])
    def test_damaged_source_never_becomes_the_object(
        self, store: ObjectStore, s3_server: _S3Server | None, content: tuple[Path, str], where: str
    ) -> None:
        path, sha256 = content
        size = path.stat().st_size
        flip_byte(path, 3 if where == "start" else size - 3)
        with pytest.raises(ChecksumMismatchError, match="seg/damaged"):
            store.put_file("seg/damaged", path, sha256=sha256)  # type: ignore[call-arg]
        assert_absent(store, "seg/damaged")
        assert pending_uploads(store, s3_server) == []
        assert not [info.key for info in store.list("seg/")]

    @SIZES
    def test_intact_source_is_stored(self, store: ObjectStore, content: tuple[Path, str]) -> None:
        path, sha256 = content
        info = store.put_file("seg/intact", path, metadata={"k": "v"}, sha256=sha256)  # type: ignore[call-arg]
        assert info.size == path.stat().st_size
        with store.open("seg/intact") as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == sha256
        assert store.head("seg/intact").metadata == {"k": "v"}

    @pytest.mark.parametrize("backend", ["moto"])
    @SIZES
    def test_every_request_carries_the_sha256_of_its_body(
        self, store: ObjectStore, s3_server: _S3Server, content: tuple[Path, str]
    ) -> None:
        path, sha256 = content
        assert isinstance(store, S3Store)
        sent = SentChecksums(store)
        store.put_file("seg/checked", path, sha256=sha256)  # type: ignore[call-arg]

        assert sent.bodies, "nothing was sent"
        for operation, claimed, actual in sent.bodies:
            assert claimed == actual, operation
        data = path.read_bytes()
        head = s3_client(s3_server).head_object(
            Bucket=store.bucket, Key=store.full("seg/checked"), ChecksumMode="ENABLED"
        )
        if len(data) < (6 << 20):
            assert [operation for operation, _, _ in sent.bodies] == ["PutObject"]
            assert head["ChecksumSHA256"] == b64(hashlib.sha256(data).digest())
        else:
            assert [operation for operation, _, _ in sent.bodies] == ["UploadPart"] * 3
            part = 6 << 20
            digests = b"".join(hashlib.sha256(data[i : i + part]).digest() for i in range(0, len(data), part))
            assert head["ChecksumSHA256"].split("-")[0] == b64(hashlib.sha256(digests).digest())


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class SentChecksums:
    """The SHA-256 each request of ``store`` claims for its body, and that of the body it sends, read from the
    request itself as it leaves botocore."""

    def __init__(self, store: S3Store) -> None:
        self.bodies: list[tuple[str, str | None, str]] = []
        store.client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation in ("PutObject", "UploadPart"):
            claimed = request.headers.get("x-amz-checksum-sha256")
            claimed = claimed.decode() if isinstance(claimed, bytes) else claimed
            self.bodies.append((operation, claimed, b64(hashlib.sha256(body_of(request)).digest())))


def body_of(request: Any) -> bytes:
    body = request.body
    if not hasattr(body, "read"):
        return bytes(body)
    start = body.tell()
    data: bytes = body.read()
    body.seek(start)
    return data


class DamagesOnTheWay:
    """Flips a byte of each PutObject and UploadPart body after botocore computed its checksum: what a faulty
    network path or proxy would do."""

    def __init__(self, store: S3Store) -> None:
        store.client.meta.events.register("before-send.s3.PutObject", self._damage)
        store.client.meta.events.register("before-send.s3.UploadPart", self._damage)

    def _damage(self, request: Any, **_: Any) -> None:
        body = bytearray(body_of(request))
        body[7] ^= 0x01
        request.body = bytes(body)


class TestDamagedOnTheWay:
    """A server that checks the SHA-256 refuses a body damaged after it was hashed: nothing stored, and a
    storage failure worth another attempt (the spool entry itself is intact, the next attempt reads it again).
    moto does not check, and would store the damaged body."""

    @pytest.mark.parametrize("backend", [pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)])
    @pytest.mark.parametrize("content", [SMALL, MULTIPART], indirect=True, ids=["small", "multipart"])
    def test_refused_and_retried(self, store: ObjectStore, s3_server: _S3Server, content: tuple[Path, str]) -> None:
        path, sha256 = content
        assert isinstance(store, S3Store)
        DamagesOnTheWay(store)
        with pytest.raises(TransientStorageError, match="not those sent"):
            store.put_file("seg/on-the-way", path, sha256=sha256)  # type: ignore[call-arg]
        assert_absent(store, "seg/on-the-way")
        assert pending_uploads(store, s3_server) == []
