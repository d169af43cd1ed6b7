"""`walship query`: a replica's database read at a point without restoring it, on every backend.

What a query reads at the newest point, at a --timestamp and at a --sequence
equals what `walship restore` of the same point holds, row for row. A
damaged frame fails the query naming the object; the frame cache keeps to
its bound; SQL that writes and snapshots that cannot be read page by page
(encrypted, or one zstd stream) are refused with the fix.
"""

import hashlib
import io
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest
from pyrage import x25519

from bench.workload import content_digest
from tests.helpers import rewrite_object, single_stream_snapshot, take_and_upload, walship
from tests.test_cli import assert_plain_error
from walship import index
from walship.chain import list_segment_keys, read_segment_info
from walship.errors import ChecksumMismatchError, CorruptObjectError, NotSeekableError, UsageError
from walship.frames import format_tail, parse_tail
from walship.lease import holder_for
from walship.query import open_backup, open_point, run_sql
from walship.ship import ShipConfig, Shipper
from walship.spool import Spool
from walship.storage import ObjectStore
from walship.upload import upload_pending

_DIRECT = {"PREFECT_API_URL": ""}


# What the application does between syncs, each in its own process: grow, change, shrink with VACUUM, regrow.
_ROUNDS = (
    "CREATE TABLE late (id INTEGER PRIMARY KEY, body TEXT);"
    "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 300) "
    "INSERT INTO late (body) SELECT printf('first %d ', value) || hex(randomblob(120)) FROM n;",
    "UPDATE accounts SET balance = balance + 7 WHERE id % 5 = 0;"
    "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 100) "
    "INSERT INTO late (body) SELECT printf('second %d', value) FROM n;",
    "DELETE FROM orders WHERE id % 2 = 0; DELETE FROM late WHERE id % 3 = 0; VACUUM;",
    "WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n WHERE value < 200) "
    "INSERT INTO late (body) SELECT printf('fourth %d ', value) || hex(randomblob(200)) FROM n;",
)


def _app_sql(database: Path, sql: str) -> None:
    """The application runs ``sql`` in a process of its own (apsw's SQLite, which has generate_series)."""
    code = "import apsw, sys; c = apsw.Connection(sys.argv[1]); c.execute(sys.argv[2]).fetchall(); c.close()"
    subprocess.run([sys.executable, "-c", code, str(database), sql], check=True)


def _ship_rounds(database: Path, store: ObjectStore, spool_dir: Path) -> str:
    """Ship the database (its snapshot), then a segment after each round; the generation's name."""
    spool = Spool(spool_dir)
    shipper = Shipper(database, spool, ShipConfig(database_id="app.db"))
    opened = shipper.open()
    assert opened.new_generation is not None
    upload_pending(store, spool, holder=holder_for(database))
    for sql in _ROUNDS:
        time.sleep(0.02)  # each segment captured at a time of its own, so a --timestamp can fall between two
        _app_sql(database, sql)
        shipper.sync()
        upload_pending(store, spool, holder=holder_for(database))
    shipper.finish()
    upload_pending(store, spool, holder=holder_for(database))
    shipper.close()
    spool.close()
    return opened.new_generation


def _digest(connection: apsw.Connection) -> str:
    """``bench.workload.content_digest`` over a connection: every row of every table in primary-key order."""
    digest = hashlib.sha256()
    tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
    for table in tables:
        digest.update(table.encode())
        for row in connection.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):  # noqa: S608 - names from the schema
            digest.update(repr(row).encode())
    return digest.hexdigest()


def _restored(replica: str, output: Path, *options: str) -> Path:
    result = walship("restore", "--replica", replica, "--output", str(output), *options, env=_DIRECT)
    assert result.returncode == 0, result.stderr
    return output


def _late_count(path: Path) -> int:
    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(connection.execute("SELECT count(*) FROM late").fetchall()[0][0])
    finally:
        connection.close()


class TestQueryEqualsRestore:
    """At every kind of point, the query reads the state a restore of that point writes."""

    def test_newest_timestamp_and_sequence(
        self, store: ObjectStore, replica_url: str, database: Path, tmp_path: Path
    ) -> None:
        generation = _ship_rounds(database, store, tmp_path / "spool")
        sequences = sorted(list_segment_keys(store, generation))
        assert len(sequences) >= len(_ROUNDS), sequences
        segments = {s: read_segment_info(store, k) for s, k in list_segment_keys(store, generation).items()}
        # Between the second round's segment and the next one: the state after round 2, before the VACUUM.
        second = sorted(s for s in sequences if segments[s].commits)[1]
        after = segments[second].captured_at + (segments[second + 1].captured_at - segments[second].captured_at) / 2
        assert after < segments[second + 1].captured_at
        vacuumed = sorted(s for s in sequences if segments[s].commits)[2]
        points: list[tuple[str, list[str], dict[str, Any]]] = [
            ("newest", [], {}),
            ("timestamp", ["--timestamp", after.isoformat()], {"timestamp": after}),
            ("sequence", ["--sequence", str(vacuumed)], {"sequence": vacuumed}),
        ]
        counts = {}
        for name, options, point in points:
            restored = _restored(replica_url, tmp_path / f"{name}.db", *options)
            with open_point(replica_url, **point) as backup:
                assert [row for row in run_sql(backup.connection, "PRAGMA integrity_check") if row == ("ok",)]
                assert _digest(backup.connection) == content_digest(restored), name
                assert backup.page_count * backup.snapshot.page_size == restored.stat().st_size, name
            counts[name] = _late_count(restored)
            queried = walship("query", "--replica", replica_url, *options, "SELECT count(*) FROM late", env=_DIRECT)
            assert queried.returncode == 0, queried.stderr
            assert queried.stdout.splitlines() == ["count(*)", str(counts[name])], name
        # The three points are three different states: a query that ignored the point could not pass.
        assert len(set(counts.values())) == 3, counts
        assert content_digest(_restored(replica_url, tmp_path / "source-now.db")) == content_digest(database)


def _damage_frame_digest(store: ObjectStore, key: str, frame: int) -> None:
    """Rewrite the object's frame table so frame ``frame``'s SHA-256 is wrong (the table's own digest made anew)."""
    metadata = store.head(key).metadata
    with store.open(key) as stream:
        data = stream.read()
    layout = parse_tail(data, len(data), key)
    assert not isinstance(layout, int)
    frames = [(f.size, f.raw_size, bytes(32) if f.index == frame else f.sha256) for f in layout.frames]
    tail = format_tail(
        page_size=layout.page_size,
        pages_per_frame=layout.pages_per_frame,
        raw_size=layout.raw_size,
        sha256=layout.sha256,
        frames=frames,
    )
    store.put_stream(key, io.BytesIO(data[: layout.data_end] + tail), metadata=metadata)


class TestDamage:
    def test_a_frame_that_is_not_its_digest_fails_naming_the_object(self, store: ObjectStore, database: Path) -> None:
        info = take_and_upload(store, database)
        _damage_frame_digest(store, info.key, frame=2)
        with open_backup(store) as connection, pytest.raises(ChecksumMismatchError, match=f"{info.key}: frame 2"):
            list(run_sql(connection, "PRAGMA integrity_check"))

    def test_a_flipped_byte_exits_1_naming_the_object(
        self, store: ObjectStore, replica_url: str, database: Path
    ) -> None:
        info = take_and_upload(store, database)
        rewrite_object(store, info.key, "flip")
        result = walship("query", "--replica", replica_url, "PRAGMA integrity_check", env=_DIRECT)
        assert_plain_error(result, 1, info.key)
        with open_backup(store) as connection, pytest.raises((ChecksumMismatchError, CorruptObjectError)):
            list(run_sql(connection, "PRAGMA integrity_check"))


@pytest.mark.parametrize("backend", ["local"])
class TestLocalReplica:
    """What does not depend on the backend, on a local directory."""

    def test_the_cache_keeps_to_its_bound(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        take_and_upload(store, database)
        cache = tmp_path / "cache"
        bound = 2 << 20
        with open_point(store, cache_dir=cache, cache_bytes=bound) as backup:
            frames = len(backup.frames.layout.frames)
            assert frames >= 4  # more frames than the bound holds: it must evict
            assert list(run_sql(backup.connection, "PRAGMA integrity_check"))[-1] == ("ok",)
            assert backup.cache.misses >= frames
            assert sum(p.stat().st_size for p in cache.iterdir()) <= bound
            assert 0 < backup.cache.size <= bound

    def test_a_kept_cache_serves_the_next_query(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        take_and_upload(store, database)
        cache = tmp_path / "cache"
        with open_point(store, cache_dir=cache) as first:
            list(run_sql(first.connection, "PRAGMA integrity_check"))
            fetched = first.fetched_bytes
        with open_point(store, cache_dir=cache) as second:
            list(run_sql(second.connection, "PRAGMA integrity_check"))
            assert second.cache.misses == 0
            assert second.fetched_bytes < fetched
        # A cached frame damaged on disk is fetched again, not served.
        victim = next(cache.iterdir())
        victim.write_bytes(b"x" + victim.read_bytes()[1:])
        with open_point(store, cache_dir=cache) as third:
            assert list(run_sql(third.connection, "PRAGMA integrity_check"))[-1] == ("ok",)
            assert third.cache.misses == 1

    def test_sql_that_writes_is_refused(self, store: ObjectStore, replica_url: str, database: Path) -> None:
        take_and_upload(store, database)
        with open_backup(store) as connection:
            with pytest.raises(apsw.ReadOnlyError):
                connection.execute("DELETE FROM accounts")
            with pytest.raises(UsageError, match="read-only"):
                list(run_sql(connection, "UPDATE accounts SET balance = 0"))
        result = walship("query", "--replica", replica_url, "DROP TABLE accounts", env=_DIRECT)
        assert_plain_error(result, 2, "read-only")
        assert result.stdout == ""

    def test_bad_sql_exits_2(self, store: ObjectStore, replica_url: str, database: Path) -> None:
        take_and_upload(store, database)
        result = walship("query", "--replica", replica_url, "SELECT nope FROM accounts", env=_DIRECT)
        assert_plain_error(result, 2, "no such column: nope")

    def test_an_encrypted_snapshot_is_refused(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        identity = x25519.Identity.generate()
        key_file = tmp_path / "key.txt"
        key_file.write_text(f"{identity}\n")
        taken = walship(
            "snapshot", str(database), "--replica", replica_url, "--age-recipient", str(identity.to_public())
        )
        assert taken.returncode == 0, taken.stderr
        for extra in ([], ["--age-identity", str(key_file)]):
            result = walship("query", "--replica", replica_url, *extra, "SELECT 1", env=_DIRECT)
            assert_plain_error(result, 2, "walship restore --age-identity")
            assert "encrypted" in result.stderr

    def test_a_single_stream_snapshot_is_refused(self, store: ObjectStore, replica_url: str, database: Path) -> None:
        index.add_snapshot(store, single_stream_snapshot(store, database))
        with pytest.raises(NotSeekableError, match="one zstd stream"):
            open_backup(store).__enter__()
        result = walship("query", "--replica", replica_url, "SELECT 1", env=_DIRECT)
        assert_plain_error(result, 2, "'walship restore'")

    def test_json_output(self, replica_url: str, tmp_path: Path) -> None:
        database = tmp_path / "kinds.db"
        _app_sql(
            database,
            "PRAGMA journal_mode=WAL; CREATE TABLE kinds (id INTEGER PRIMARY KEY, t TEXT, r REAL, b BLOB, n);"
            "INSERT INTO kinds VALUES (1, 'tab\there', 1.5, x'00ff10', NULL), (2, 'line\nbreak', -2.0, x'', 7);",
        )
        assert walship("snapshot", str(database), "--replica", replica_url).returncode == 0
        result = walship("query", "--json", "--replica", replica_url, "SELECT * FROM kinds ORDER BY id", env=_DIRECT)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [
            {"id": 1, "t": "tab\there", "r": 1.5, "b": "00ff10", "n": None},
            {"id": 2, "t": "line\nbreak", "r": -2.0, "b": "", "n": 7},
        ]
        plain = walship("query", "--replica", replica_url, "SELECT t, b, n FROM kinds ORDER BY id", env=_DIRECT)
        assert plain.stdout.splitlines() == ["t\tb\tn", "tab\\there\t00ff10\t", "line\\nbreak\t\t7"]
        empty = walship("query", "--json", "--replica", replica_url, "SELECT * FROM kinds WHERE 0", env=_DIRECT)
        assert json.loads(empty.stdout) == []

    def test_a_timestamp_before_every_snapshot_fails(
        self, store: ObjectStore, replica_url: str, database: Path
    ) -> None:
        info = take_and_upload(store, database)
        before = (info.created_at - timedelta(days=1)).isoformat()
        result = walship("query", "--replica", replica_url, "--timestamp", before, "SELECT 1", env=_DIRECT)
        assert_plain_error(result, 1, "no snapshot")
