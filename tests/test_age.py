"""Client-side encryption with age: every object sealed once, opened by the identity it was sealed for.

Everything runs on the three storage backends. Objects are read back raw,
opened with the identity, and checked for what must never be in them: a
database or WAL header, or any piece of their own plaintext.
"""

import errno
import hashlib
import io
import os
import pickle
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pyrage
import pytest
import zstandard
from pyrage import x25519

from bench.workload import committed_counts, content_digest, writer_command
from tests.conftest import Writers
from tests.helpers import ROOT, rewrite_object, single_stream_snapshot, walship
from tests.test_resync import _checkpoint
from tests.test_ship import SEED, Running
from walship import codec, index, snapshot
from walship.envelope import Keyring, Sealing, SegmentSealer
from walship.errors import (
    ChecksumMismatchError,
    CorruptObjectError,
    IdentityMismatchError,
    IdentityNeededError,
    ReplicaSealingError,
)
from walship.index import current_snapshots
from walship.layout import LEASE_KEY, METADATA_KEY, is_resync_key, parse_segment_key
from walship.models import utcnow
from walship.restore import restore_snapshot
from walship.retention import RetentionPolicy, apply_retention, plan_replica
from walship.status import replica_status
from walship.storage import ObjectStore, open_store
from walship.trailer import format_trailer
from walship.verify import verify_replica

AGE_HEADER = b"age-encryption.org/v1\n"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Signatures long enough that ciphertext never holds one by chance. A 4-byte
# magic turns up in about one 4 GiB of random bytes: these tests read tens of
# MiB of ciphertext a run, and CI once failed on a zstd magic that age's
# cipher had produced, not leaked (tests/data/zstd_magic_by_chance.age).
FORBIDDEN = {
    "SQLite header": b"SQLite format 3\x00",
    "WAL header (little-endian checksums)": b"\x37\x7f\x06\x82\x00\x2d\xe2\x18",
    "WAL header (big-endian checksums)": b"\x37\x7f\x06\x83\x00\x2d\xe2\x18",
}


class Key:
    """An age identity, its recipient, and its identity file."""

    def __init__(self, directory: Path, name: str) -> None:
        self.identity = x25519.Identity.generate()
        self.recipient = str(self.identity.to_public())
        self.file = directory / f"{name}.txt"
        self.file.write_text(f"# created for a test\n# public key: {self.recipient}\n{self.identity}\n")

    @property
    def keys(self) -> Keyring:
        return Keyring.from_file(self.file)


def _data_objects(store: ObjectStore) -> dict[str, bytes]:
    """Every object but the index and the lease, read whole (test replicas are small)."""
    found = {}
    for obj in store.list():
        if obj.key in (METADATA_KEY, LEASE_KEY):
            continue
        with store.open(obj.key) as stream:
            found[obj.key] = stream.read()
    return found


def _assert_sealed(key: str, data: bytes, identities: list[x25519.Identity]) -> None:
    """One object is age around a zstd frame: it opens with the identity and shows no header of its own."""
    assert data.startswith(AGE_HEADER), key
    for what, signature in FORBIDDEN.items():
        assert signature not in data, f"{key} holds a {what}"
    assert pyrage.decrypt(data, identities).startswith(ZSTD_MAGIC), key


def _assert_all_sealed(store: ObjectStore, *keys: Key) -> dict[str, bytes]:
    objects = _data_objects(store)
    assert any("/wal/" in key for key in objects), list(objects)
    assert any("/snapshots/" in key for key in objects), list(objects)
    for key, data in objects.items():
        _assert_sealed(key, data, [k.identity for k in keys])
        assert store.head(key).metadata["walship-envelope"] == "zstd+age", key
    return objects


class TestSealedCheck:
    """The check above fails on plaintext, never on what the cipher makes by chance."""

    def test_a_magic_made_by_the_cipher_is_not_a_leak(self) -> None:
        """A real sealed object whose ciphertext holds zstd's 4-byte magic at random passes."""
        data = (ROOT / "tests/data/zstd_magic_by_chance.age").read_bytes()
        identity = x25519.Identity.from_str((ROOT / "tests/data/zstd_magic_by_chance.key").read_text().strip())
        assert ZSTD_MAGIC in data[len(AGE_HEADER) :]
        _assert_sealed("chance", data, [identity])

    def test_plaintext_behind_an_age_header_is_caught(self) -> None:
        """An object that only looks sealed, or holds a database, fails the check."""
        key = x25519.Identity.generate()
        frame = zstandard.ZstdCompressor(write_checksum=True).compress(os.urandom(20_000))
        with pytest.raises(pyrage.DecryptError):
            _assert_sealed("fake", AGE_HEADER + frame, [key])
        with pytest.raises(AssertionError, match="SQLite header"):
            _assert_sealed("database", AGE_HEADER + b"SQLite format 3\x00" + frame, [key])


def _newest_restore(store: ObjectStore, output: Path, keys: Keyring | None) -> None:
    chosen = current_snapshots(store)[-1]
    restore_snapshot(store, chosen, output, keys=keys)


class TestEncryptedReplica:
    def test_shipped_under_writers_restores_with_the_identity(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        key = Key(tmp_path, "key")
        running = Running(
            database, store, tmp_path / "spool", checkpoint_pages=300, snapshot_seconds=0.5, recipients=(key.recipient,)
        )
        running.run_while_writing(3.0, count=2, rate=200)
        _assert_all_sealed(store, key)
        assert index.read_index(store)[0].encrypted is True  # type: ignore[union-attr]

        restored = tmp_path / "restored.db"
        _newest_restore(store, restored, key.keys)
        assert committed_counts(restored) == committed_counts(database)
        assert content_digest(restored) == content_digest(database)
        report = verify_replica(store, keys=key.keys)
        assert report.passed, report.failed

        # Status and retention read metadata only: no identity needed.
        assert replica_status(store).snapshots
        plan = plan_replica(store, RetentionPolicy(keep_last=1), utcnow())
        assert plan.delete_keys
        apply_retention(store, plan)
        again = tmp_path / "again.db"
        _newest_restore(store, again, key.keys)
        assert content_digest(again) == content_digest(database)

    def test_without_or_with_a_wrong_identity_nothing_is_written(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        key, other = Key(tmp_path, "key"), Key(tmp_path, "other")
        info = snapshot.stream_snapshot(
            store, database, database_id="app.db", level=codec.DEFAULT_LEVEL, recipients=(key.recipient,)
        )
        index.add_snapshot(store, info)
        output = tmp_path / "out.db"
        with pytest.raises(IdentityNeededError, match="--age-identity"):
            _newest_restore(store, output, None)
        with pytest.raises(IdentityMismatchError, match=info.key):
            _newest_restore(store, output, other.keys)
        assert list(tmp_path.glob("out.db*")) == []
        with pytest.raises(IdentityNeededError):
            verify_replica(store)
        assert not verify_replica(store, keys=other.keys).passed

    def test_a_streamed_snapshot_seals_its_checksum_too(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        """The SHA-256 at a streamed snapshot's end is inside the encryption, and restore checks it there."""
        key = Key(tmp_path, "key")
        info = snapshot.stream_snapshot(
            store, database, database_id="app.db", level=codec.DEFAULT_LEVEL, recipients=(key.recipient,)
        )
        data = _data_objects(store)[info.key]
        plain = pyrage.decrypt(data, [key.identity])
        assert plain.endswith(format_trailer(info.sha256))
        assert format_trailer(info.sha256)[-32:] not in data
        # Without the identity the rebuild cannot read it: restore checks it as it opens the object.
        rebuilt = index.rebuild_index(store).snapshots
        assert [s.sha256 for s in rebuilt] == [""]
        restored = tmp_path / "restored.db"
        assert restore_snapshot(store, rebuilt[0], restored, keys=key.keys).snapshot.sha256 == info.sha256
        assert restored.read_bytes() == database.read_bytes()

        changed = bytearray(plain)
        changed[-1] ^= 0x01  # the recorded digest, resealed for the same key
        resealed = pyrage.encrypt(bytes(changed), [key.identity.to_public()])
        store.put_stream(info.key, io.BytesIO(resealed), metadata=store.head(info.key).metadata)
        output = tmp_path / "out.db"
        with pytest.raises(ChecksumMismatchError, match=info.key):
            restore_snapshot(store, rebuilt[0], output, keys=key.keys)
        assert not output.exists()

    def test_a_replica_never_mixes_plaintext_and_encrypted(self, store: ObjectStore, database: Path) -> None:
        key = Key(database.parent, "key")
        index.add_snapshot(store, snapshot.stream_snapshot(store, database, database_id="app.db", level=1))
        before = sorted(o.key for o in store.list())
        with pytest.raises(ReplicaSealingError, match="not encrypted"):
            snapshot.stream_snapshot(store, database, database_id="app.db", level=1, recipients=(key.recipient,))
        assert sorted(o.key for o in store.list()) == before

    def test_rotation_each_object_opens_with_its_own_identity(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        old, new = Key(tmp_path, "old"), Key(tmp_path, "new")
        spool = tmp_path / "spool"
        Running(database, store, spool, checkpoint_pages=300, recipients=(old.recipient,)).run_while_writing(
            1.5, count=2, rate=200
        )
        first = _assert_all_sealed(store, old)
        running = Running(database, store, spool, checkpoint_pages=300, recipients=(new.recipient,))
        # Writers 3 and 4: the first run's writers 1 and 2 have committed their sequences already.
        later_writers = [
            subprocess.Popen(writer_command(database, writer=w, seed=SEED, seconds=60, rate=200), cwd=ROOT)
            for w in (3, 4)
        ]
        try:
            running.run(1.5)
        finally:
            for process in later_writers:
                process.terminate()
                process.wait(timeout=30)
        running.close()
        later = {k: v for k, v in _assert_all_sealed(store, old, new).items() if k not in first}
        assert any("/wal/" in k for k in later), list(later)
        for objects, opens, refuses in ((first, old, new), (later, new, old)):
            for key, data in objects.items():
                assert pyrage.decrypt(data, [opens.identity]), key
                with pytest.raises(pyrage.DecryptError):
                    pyrage.decrypt(data, [refuses.identity])

        both = tmp_path / "both.txt"
        both.write_text(old.file.read_text() + new.file.read_text())
        restored = tmp_path / "restored.db"
        _newest_restore(store, restored, Keyring.from_file(both))
        assert content_digest(restored) == content_digest(database)
        with pytest.raises(IdentityMismatchError, match="none of the age identities"):
            _newest_restore(store, tmp_path / "old-only.db", old.keys)
        # What was sealed before the rotation still restores with the old identity alone.
        oldest = current_snapshots(store)[0]
        assert oldest.key in first
        last = max(p.sequence for k in first if (p := parse_segment_key(k)) and p.generation == oldest.generation)
        early = restore_snapshot(store, oldest, tmp_path / "early.db", keys=old.keys, until_sequence=last)
        assert early.segments_applied > 0

    def test_a_snapshot_opens_with_pyrage_and_zstandard_alone(
        self, store: ObjectStore, database: Path, tmp_path: Path
    ) -> None:
        """The disaster recovery of docs/OPERATIONS.md: age -d -i key.txt OBJECT | zstd -d > app.db."""
        key = Key(tmp_path, "key")
        info = snapshot.stream_snapshot(store, database, database_id="app.db", level=3, recipients=(key.recipient,))
        with store.open(info.key) as stream:
            sealed = stream.read()
        recovered = tmp_path / "recovered.db"
        plain = pyrage.decrypt(sealed, [key.identity])
        with recovered.open("wb") as out:
            zstandard.ZstdDecompressor().copy_stream(io.BytesIO(plain), out)
        with sqlite3.connect(recovered) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert content_digest(recovered) == content_digest(database)
        # ... | tail -c 32 | xxd -p -c 32: the SHA-256 the object ends with, against sha256sum app.db.
        assert plain[-32:].hex() == hashlib.sha256(recovered.read_bytes()).hexdigest()


def test_an_object_without_envelope_metadata_is_plain_zstd(store: ObjectStore, database: Path, tmp_path: Path) -> None:
    """What walship wrote before the envelope: no walship-envelope key."""
    info = single_stream_snapshot(store, database, level=1)
    metadata = {k: v for k, v in store.head(info.key).metadata.items() if k != "walship-envelope"}
    with store.open(info.key) as stream:
        store.put_stream(info.key, io.BytesIO(stream.read()), metadata=metadata)
    index.add_snapshot(store, info.model_copy(update={"envelope": "zstd"}))
    assert "walship-envelope" not in store.head(info.key).metadata
    restored = tmp_path / "restored.db"
    _newest_restore(store, restored, None)
    assert content_digest(restored) == content_digest(database)


def test_a_keyring_is_never_shown_or_pickled(tmp_path: Path) -> None:
    key = Key(tmp_path, "key")
    assert str(key.identity) not in repr(key.keys)
    with pytest.raises(TypeError):
        pickle.dumps(key.keys)


class TestCli:
    """The operator's view: exit statuses and one-line errors (direct mode)."""

    def test_errors_and_refusals(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        key, other = Key(tmp_path, "key"), Key(tmp_path, "other")
        env = {"WALSHIP_AGE_RECIPIENTS": ""}
        taken = walship("snapshot", str(database), "--replica", replica_url, "--age-recipient", key.recipient, env=env)
        assert taken.returncode == 0, taken.stderr
        store = open_store(replica_url)
        before = sorted(o.key for o in store.list())
        output = tmp_path / "out.db"

        needed = walship("restore", "--replica", replica_url, "--output", str(output))
        _one_line(needed, 2, "--age-identity")
        wrong = walship("restore", "--replica", replica_url, "--output", str(output), "--age-identity", str(other.file))
        _one_line(wrong, 1, "/snapshots/")
        assert not output.exists()
        plain = walship("snapshot", str(database), "--replica", replica_url, env=env)
        _one_line(plain, 2, "is encrypted with age")
        shipped = walship("ship", str(database), "--replica", replica_url, "--once", env=env)
        _one_line(shipped, 2, "is encrypted with age")
        assert sorted(o.key for o in store.list()) == before  # not even a lease

        verified = walship("verify", "--replica", replica_url, env={"WALSHIP_AGE_IDENTITY_FILE": str(key.file)})
        assert verified.returncode == 0, verified.stdout + verified.stderr
        restored = walship(
            "restore", "--replica", replica_url, "--output", str(output), "--age-identity", str(key.file)
        )
        assert restored.returncode == 0, restored.stderr
        assert content_digest(output) == content_digest(database)
        status = walship("status", "--replica", replica_url)
        assert status.returncode == 0, status.stderr
        assert "encryption:   age (restore and verify need --age-identity)" in status.stdout, status.stdout

    def test_an_encrypted_write_into_a_plaintext_replica_is_refused(
        self, replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        key = Key(tmp_path, "key")
        assert walship("snapshot", str(database), "--replica", replica_url).returncode == 0
        store = open_store(replica_url)
        before = sorted(o.key for o in store.list())
        sealed = walship("snapshot", str(database), "--replica", replica_url, "--age-recipient", key.recipient)
        _one_line(sealed, 2, "is not encrypted")
        shipped = walship(
            "ship", str(database), "--replica", replica_url, "--once", env={"WALSHIP_AGE_RECIPIENTS": key.recipient}
        )
        _one_line(shipped, 2, "is not encrypted")
        assert sorted(o.key for o in store.list()) == before


def _one_line(result: subprocess.CompletedProcess[str], status: int, fragment: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("walship: "), result.stderr
    assert fragment in lines[0], result.stderr


def test_a_full_disk_under_the_cipher_stays_a_full_disk(tmp_path: Path) -> None:
    """The spool's ENOSPC reaches the shipper as itself (SpoolFullError), not as an anonymous cipher error."""

    class FullDisk:
        written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return len(data)

    sealer = SegmentSealer(FullDisk(), Sealing(level=1, recipients=(Key(tmp_path, "key").recipient,)))  # type: ignore[arg-type]

    def fill() -> None:
        for _ in range(50):
            sealer.write(os.urandom(1 << 20))
        sealer.finish()

    with pytest.raises(OSError, match="No space left") as raised:
        fill()
    assert raised.value.errno == errno.ENOSPC


@pytest.mark.parametrize("change", ["flip", "truncate"])
def test_a_damaged_encrypted_object_names_itself(
    store: ObjectStore, database: Path, tmp_path: Path, change: str
) -> None:
    key = Key(tmp_path, "key")
    info = snapshot.stream_snapshot(store, database, database_id="app.db", level=1, recipients=(key.recipient,))
    index.add_snapshot(store, info)
    rewrite_object(store, info.key, change)
    with pytest.raises(CorruptObjectError, match=info.key):
        _newest_restore(store, tmp_path / "out.db", key.keys)
    assert list(tmp_path.glob("out.db*")) == []


def test_a_resync_segment_is_sealed_too(store: ObjectStore, database: Path, tmp_path: Path) -> None:
    """The gap after which the shipper resyncs the changed pages: that segment is encrypted like any other."""
    key = Key(tmp_path, "key")
    spool = tmp_path / "spool"
    writers = Writers(database, seed=SEED, count=2, rate=200)
    try:
        running = Running(database, store, spool, recipients=(key.recipient,))
        running.run(1.0)
        running.close()
        time.sleep(0.5)  # commits nobody captures
    finally:
        writers.stop()
    _checkpoint(database, "TRUNCATE")
    running = Running(database, store, spool, recipients=(key.recipient,))
    assert running.opened.resync is not None
    running.step()
    running.close()
    objects = _assert_all_sealed(store, key)
    assert [k for k in objects if is_resync_key(k)] == [running.opened.resync.key]
    restored = tmp_path / "restored.db"
    _newest_restore(store, restored, key.keys)
    assert content_digest(restored) == content_digest(database)


def test_a_fleet_ships_encrypted(tmp_path: Path, base_database: Path) -> None:
    """``ship-many --age-recipient``: every database's objects sealed for the key, each restoring with it."""
    key = Key(tmp_path, "fleet")
    (tmp_path / "dbs").mkdir()
    databases = [tmp_path / "dbs" / f"db{n}.db" for n in range(3)]
    for path in databases:
        shutil.copyfile(base_database, path)
    template = f"file://{tmp_path}/replicas/{{name}}"
    shipped = walship(
        "--no-prefect", "ship-many", str(tmp_path / "dbs" / "*.db"), "--replica", template, "--once",
        "--age-recipient", key.recipient, env={"WALSHIP_AGE_RECIPIENTS": ""},
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr
    for path in databases:
        replica = template.format(name=path.name)
        objects = _data_objects(open_store(replica))
        assert objects, replica
        for object_key, data in objects.items():
            _assert_sealed(object_key, data, [key.identity])
        output = tmp_path / f"restored-{path.name}"
        restored = walship(
            "--no-prefect", "restore", "--replica", replica, "--output", str(output), "--age-identity", str(key.file)
        )
        assert restored.returncode == 0, restored.stderr
        assert content_digest(output) == content_digest(path)
