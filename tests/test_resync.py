"""Resync: after a gap the shipper continues its generation with the pages that changed, proven by digest."""

import json
import random
import re
import secrets
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.workload import committed_counts, content_digest, expected_state
from tests.conftest import Writers, use_credentials
from tests.helpers import ROOT, WALSHIP, rewrite_object, walship
from tests.s3servers import MotoS3
from tests.shipping import WriterGroup
from tests.test_ship import SEED, Running, _restore
from walship.chain import list_segment_keys
from walship.errors import ChecksumMismatchError, MapUnusableError
from walship.index import current_snapshots
from walship.layout import is_resync_key, parse_snapshot_key
from walship.resync import (
    FrameDigester,
    PageChanges,
    PageMap,
    PageMapStore,
    digest_file,
    page_digest,
    state_digest,
    zero_digest,
)
from walship.resync import _digest as resync_digest
from walship.segment import restored_state
from walship.status import replica_status
from walship.storage import ObjectStore, open_store
from walship.verify import verify_replica

PAGE = 512


def _frame(page: int, size_after: int, fill: int) -> bytes:
    return struct.pack(">IIIIII", page, size_after, 1, 2, 0, 0) + bytes([fill]) * PAGE


def _map(store: PageMapStore, pages: int) -> PageMap:
    digests = [page_digest(bytes([n]) * PAGE) for n in range(1, pages + 1)]
    return PageMap.build(store.work, "20261129T000000Z-00000000", 0, PAGE, digests)


class TestFrameDigester:
    """Frames fed in any chunking give each page's newest digest and the sizes their commits left."""

    def test_chunks_newest_image_and_shrink(self) -> None:
        wal = b"".join(
            [
                _frame(3, 0, 7),
                _frame(5, 5, 8),  # commit: 5 pages
                _frame(3, 0, 9),
                _frame(2, 2, 1),  # commit: shrinks to 2 pages, page 3 and 5 go
                _frame(4, 4, 2),  # commit: grows to 4, page 3 a hole
            ]
        )
        digester = FrameDigester(PAGE)
        for at in range(0, len(wal), 7):
            digester.feed(wal[at : at + 7])
        changes = digester.changes()
        assert changes.page_count == 4
        assert changes.low_water == 2
        assert changes.digests == {2: page_digest(bytes([1]) * PAGE), 4: page_digest(bytes([2]) * PAGE)}

    def test_each_page_is_digested_once_in_its_newest_image(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A page rewritten by every transaction costs one digest per segment, not one per frame."""
        digested: list[bytes] = []
        honest = resync_digest.page_digest

        def counting(page: bytes | bytearray | memoryview) -> bytes:
            digested.append(bytes(page))
            return honest(page)

        monkeypatch.setattr(resync_digest, "page_digest", counting)
        digester = FrameDigester(PAGE)
        for n in range(1, 101):  # 100 transactions, each rewriting pages 1 and 2
            digester.feed(_frame(1, 0, n) + _frame(2, 2, n))
        changes = digester.changes()
        assert sorted(digested) == sorted([bytes([100]) * PAGE] * 2)
        assert changes.digests == {1: honest(bytes([100]) * PAGE), 2: honest(bytes([100]) * PAGE)}

    def test_a_backlog_past_the_memory_bound_digests_the_same(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Newest images held past the bound are digested early; the changes are the same, shrink included."""
        wal = b"".join(_frame(page, 0, page % 251) for page in range(1, 41)) + _frame(30, 30, 9) + _frame(35, 35, 4)
        unbounded = FrameDigester(PAGE)
        unbounded.feed(wal)
        monkeypatch.setattr(FrameDigester, "PENDING_BYTES", 4 * PAGE)
        bounded = FrameDigester(PAGE)
        for at in range(0, len(wal), 3 * PAGE):
            bounded.feed(wal[at : at + 3 * PAGE])
        assert bounded.changes() == unbounded.changes()
        assert set(unbounded.changes().digests) == set(range(1, 31)) | {35}  # 31-34 and 36-40 cut at the commit to 30

    def test_random_transactions_in_random_chunks_match_a_replay(self) -> None:
        """Against a plain replay (every frame applied in order, each commit cutting the file to its size)."""
        rng = random.Random(11)
        for _ in range(30):
            frames, size = [], 8
            for _ in range(rng.randint(1, 40)):  # transactions
                pages = [rng.randint(1, 24) for _ in range(rng.randint(1, 6))]
                size = max(rng.choice([size, size, rng.randint(1, 24)]), max(pages) if rng.random() < 0.8 else 1)
                frames += [(page, 0) for page in pages[:-1]] + [(pages[-1], size)]
            wal = b"".join(_frame(page, after, rng.randint(0, 255)) for page, after in frames)
            replay: dict[int, bytes] = {}
            low = None
            for at in range(0, len(wal), len(wal) // len(frames)):
                page, after = struct.unpack(">II", wal[at : at + 8])
                replay[page] = page_digest(wal[at + 24 : at + 24 + PAGE])
                if after:
                    replay = {p: d for p, d in replay.items() if p <= after}
                    low = after if low is None else min(low, after)
            digester = FrameDigester(PAGE)
            cut = sorted(rng.sample(range(1, len(wal)), min(5, len(wal) - 1)))
            for start, end in zip([0, *cut], [*cut, len(wal)], strict=True):
                digester.feed(wal[start:end])
            assert digester.changes() == (frames[-1][1], low, replay)

    def test_a_torn_frame_is_refused(self) -> None:
        digester = FrameDigester(PAGE)
        digester.feed(_frame(1, 1, 1)[:-1])
        with pytest.raises(ValueError, match="inside a frame"):
            digester.changes()


class TestStateDigest:
    """Restore's digest of a file it restored is the shipper's digest of the same pages."""

    def test_streamed_equals_whole(self, tmp_path: Path) -> None:
        path = tmp_path / "pages"
        path.write_bytes(bytes(range(256)) * (PAGE * 5 // 256) + b"\x07" * 100)  # a short last page
        whole = state_digest(PAGE, b"".join(digest_file(path, PAGE)))
        with path.open("rb") as database:
            assert restored_state(database, PAGE, 6) == whole
            # Two pages past the end of the file read as holes: zeros.
            longer = state_digest(PAGE, b"".join(digest_file(path, PAGE)) + zero_digest(PAGE) * 2)
            assert restored_state(database, PAGE, 8) == longer != whole


class TestPageMap:
    """The map replays its journal up to the cursor and refuses to describe any other state."""

    def test_replay_to_the_cursor_and_drop_what_lies_past_it(self, tmp_path: Path) -> None:
        store = PageMapStore(tmp_path)
        page_map = _map(store, 4)
        store.reset(page_map)
        store.record(page_map, 1, PageChanges(6, 4, {6: page_digest(b"x" * PAGE)}))
        store.record(page_map, 2, PageChanges(3, 3, {1: page_digest(b"y" * PAGE)}))
        loaded = PageMapStore(tmp_path).load(page_map.generation, 1)
        assert loaded.page_count == 6
        assert loaded.digest(5) == zero_digest(PAGE)  # grown past 4 with page 5 never written: a hole
        assert loaded.digest(6) == page_digest(b"x" * PAGE)
        # Record 2 (a crash before the cursor moved there) is gone for good: a new record 2 follows record 1.
        store = PageMapStore(tmp_path)
        again = store.load(page_map.generation, 1)
        store.record(again, 2, PageChanges(2, 2, {}))
        assert PageMapStore(tmp_path).load(page_map.generation, 2).page_count == 2

    def test_behind_damaged_or_another_generation(self, tmp_path: Path) -> None:
        store = PageMapStore(tmp_path)
        page_map = _map(store, 4)
        store.reset(page_map)
        store.record(page_map, 1, PageChanges(4, 4, {2: page_digest(b"z" * PAGE)}))
        with pytest.raises(MapUnusableError, match="reaches sequence 1, the cursor 2"):
            PageMapStore(tmp_path).load(page_map.generation, 2)
        with pytest.raises(MapUnusableError, match="describes generation"):
            PageMapStore(tmp_path).load("20261129T000001Z-00000000", 1)
        journal = tmp_path / "pages" / "journal"
        journal.write_bytes(journal.read_bytes()[:-3])  # a torn record
        with pytest.raises(MapUnusableError, match="reaches sequence 0"):
            PageMapStore(tmp_path).load(page_map.generation, 1)
        base = tmp_path / "pages" / "base"
        data = bytearray(base.read_bytes())
        data[-1] ^= 0xFF
        base.write_bytes(bytes(data))
        with pytest.raises(MapUnusableError, match="damaged"):
            PageMapStore(tmp_path).load(page_map.generation, 0)


def _checkpoint(database: Path, mode: str) -> None:
    """The application checkpoints in its own process (never Python's sqlite3 beside apsw here)."""
    code = f"import sqlite3, sys; sqlite3.connect(sys.argv[1], timeout=30).execute('PRAGMA wal_checkpoint({mode})')"
    subprocess.run([sys.executable, "-c", code, str(database)], check=True)


def _in_own_process(database: Path, *statements: str) -> None:
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
        "for s in sys.argv[2:]: c.execute(s)\n"
        "c.execute('PRAGMA wal_checkpoint(TRUNCATE)')"
    )
    subprocess.run([sys.executable, "-c", code, str(database), *statements], check=True)


def _ship_then_gap(store: ObjectStore, database: Path, spool: Path) -> None:
    """One run under two writers, then the writers go on and the application checkpoints while nobody watches."""
    writers = Writers(database, seed=SEED, count=2, rate=200)
    try:
        running = Running(database, store, spool)
        running.run(1.0)
        running.close()
        time.sleep(0.5)  # commits nobody captures
    finally:
        writers.stop()
    _checkpoint(database, "TRUNCATE")


class TestResyncAfterGaps:
    """A gap with the same database file continues the generation with a resync segment, restored equal."""

    def test_truncate_while_down(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        _ship_then_gap(store, database, tmp_path / "spool")
        running = Running(database, store, tmp_path / "spool")
        resync = running.opened.resync
        assert running.opened.new_generation is None
        assert resync is not None
        assert resync.reason == "the WAL was checkpointed and removed while nobody watched"
        assert 0 < resync.pages < resync.page_count
        running.step()
        running.close()
        print(f"\nresync: {resync.pages} of {resync.page_count} pages, {resync.stored_bytes} bytes stored")
        [generation] = {s.generation for s in current_snapshots(store)}
        keys = list_segment_keys(store, generation)
        assert [k for k in keys.values() if is_resync_key(k)] == [resync.key]
        restored = tmp_path / "restored.db"
        result = _restore(store, restored)
        assert result.segments_applied == len(keys)
        assert content_digest(restored) == content_digest(database)
        status = replica_status(store)
        assert (status.resyncs_total, status.resync_bytes) == (1, resync.stored_bytes)
        assert "resyncs:      1 gap bridged without a full snapshot" in status.render()
        report = verify_replica(store)
        assert report.passed, report.failed

    def test_vacuum_and_delete_while_down(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        _ship_then_gap(store, database, tmp_path / "spool")
        before = database.stat().st_size
        _in_own_process(database, "DELETE FROM orders WHERE id % 2 = 0", "VACUUM")
        assert database.stat().st_size < before
        running = Running(database, store, tmp_path / "spool")
        resync = running.opened.resync
        assert resync is not None, running.opened
        assert resync.page_count * 4096 <= before
        running.close()
        restored = tmp_path / "restored.db"
        _restore(store, restored)  # integrity_check runs inside every restore
        assert content_digest(restored) == content_digest(database)
        assert restored.stat().st_size == database.stat().st_size

    def test_a_damaged_map_means_a_full_snapshot(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        _ship_then_gap(store, database, tmp_path / "spool")
        base = tmp_path / "spool" / "pages" / "base"
        data = bytearray(base.read_bytes())
        data[-5] ^= 0x01
        base.write_bytes(bytes(data))
        running = Running(database, store, tmp_path / "spool")
        assert running.opened.resync is None
        assert running.opened.new_generation is not None
        assert running.opened.reason is not None
        assert "the page digest map is damaged" in running.opened.reason, running.opened.reason
        running.close()
        restored = tmp_path / "restored.db"
        _restore(store, restored)
        assert content_digest(restored) == content_digest(database)


class TestResyncProven:
    """A drifted map or a tampered resync segment fails the restore, naming the segment; nothing is written."""

    def test_drifted_map_fails_the_restore(self, store: ObjectStore, database: Path, tmp_path: Path) -> None:
        _ship_then_gap(store, database, tmp_path / "spool")
        # The map claims a changed page already holds its new content, so the resync leaves it out.
        _drift_map(tmp_path / "spool", database)
        running = Running(database, store, tmp_path / "spool")
        resync = running.opened.resync
        assert resync is not None
        running.close()
        with pytest.raises(ChecksumMismatchError, match=f"verify {resync.key}: the restored database is not"):
            _restore(store, tmp_path / "restored.db")
        assert not (tmp_path / "restored.db").exists()
        report = verify_replica(store)
        assert not report.passed
        assert any(resync.key in check.detail for check in report.checks if not check.ok), report.failed

    def test_tampered_segment_exits_1_naming_it(self, replica_url: str, database: Path, tmp_path: Path) -> None:
        spool = tmp_path / "app.db-walship"
        writers = Writers(database, seed=SEED, count=2, rate=200)
        try:
            first = walship("ship", str(database), "--replica", replica_url, "--once")
            assert first.returncode == 0, first.stderr
            time.sleep(1.0)
        finally:
            writers.stop()
        _checkpoint(database, "TRUNCATE")
        second = walship("ship", str(database), "--replica", replica_url, "--once")
        assert second.returncode == 0, second.stderr
        assert "resynced: " in second.stdout, second.stdout
        assert spool.is_dir()
        store = open_store(replica_url)
        [key] = [o.key for o in store.list("generations/") if is_resync_key(o.key)]
        rewrite_object(store, key, "flip")
        output = tmp_path / "restored.db"
        result = walship("restore", "--replica", replica_url, "--output", str(output))
        assert result.returncode == 1, (result.stdout, result.stderr)
        assert key in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
        assert not output.exists()


def _drift_map(spool: Path, database: Path) -> int:
    """Set the map's digest of the first page (past 1) that the gap changed to what the database holds there
    now, with the map's own checksum made to match; return that page."""
    store = PageMapStore(spool)
    cursor = json.loads((spool / "cursor.json").read_bytes())
    page_map = store.load(cursor["generation"], cursor["sequence"])
    data = database.read_bytes()  # the WAL was truncated into it: the file is the whole state
    size = page_map.page_size
    for page in range(2, min(page_map.page_count, len(data) // size) + 1):
        digest = page_digest(data[(page - 1) * size : page * size])
        if page_map.digest(page) != digest:
            page_map.set(page, digest)
            store.reset(page_map)
            return page
    raise AssertionError("the gap changed no page past page 1")


class TestScheduledWindows:
    """Six scheduled windows with gaps under writers: one generation, one full snapshot, resyncs between."""

    RUNS = 6

    def test_six_windows_one_generation(
        self, moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch, base_database: Path, database: Path, tmp_path: Path
    ) -> None:
        use_credentials(monkeypatch, moto_server)
        bucket = f"walship-{secrets.token_hex(6)}"
        moto_server.create_bucket(bucket)
        replica = f"s3://{bucket}/app?endpoint={moto_server.endpoint}"
        rng = random.Random(20261129)
        logs = tmp_path / "logs"
        logs.mkdir()
        # SQLite's default autocheckpoint: the WAL restarts while nobody watches, every gap.
        writers = WriterGroup(database, [1, 2], rate=100, logs=logs)
        outputs: list[str] = []
        moment = 0.0
        try:
            for number in range(1, self.RUNS + 1):
                started = time.time()
                if number == 3:
                    moment = started + 4.5
                run = subprocess.Popen(
                    [WALSHIP, "--no-prefect", "ship", str(database), "--replica", replica, "--duration", "8"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=ROOT,
                )
                if number == self.RUNS:
                    time.sleep(4)
                    writers.stop()  # the last window captures the writers' end
                out, err = run.communicate(timeout=120)
                assert run.returncode == 0, err
                outputs.append(out)
                if number < self.RUNS:
                    # Long enough for the writers' autocheckpoint (1,000 pages) to restart the WAL unwatched.
                    time.sleep(rng.uniform(5, 9))
        finally:
            writers.stop()

        resyncs = [_RESYNCED.search(out) for out in outputs]
        print()
        for number, (out, found) in enumerate(zip(outputs, resyncs, strict=True), start=1):
            line = f"resync: {found[1]} of {found[2]} pages, {int(found[4]):,} bytes" if found else "continued"
            print(f"  run {number}: {'full snapshot' if 'started generation' in out else line}")
        assert "started generation" in outputs[0]
        assert all("started generation" not in out for out in outputs[1:]), outputs
        assert sum(found is not None for found in resyncs) >= 1, outputs
        store = open_store(replica)
        assert len({o.key.split("/")[1] for o in store.list("generations/")}) == 1
        assert len([o for o in store.list("generations/") if parse_snapshot_key(o.key)]) == 1

        restored = tmp_path / "newest.db"
        result = walship("--no-prefect", "restore", "--replica", replica, "--output", str(restored))
        assert result.returncode == 0, result.stderr
        assert content_digest(restored) == content_digest(database)

        at = tmp_path / "run3.db"
        stamp = datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        result = walship("--no-prefect", "restore", "--replica", replica, "--output", str(at), "--timestamp", stamp)
        assert result.returncode == 0, result.stderr
        counts = committed_counts(at)
        expected = tmp_path / "expected.db"
        expected_state(base_database, expected, SEED, counts)
        assert content_digest(at) == content_digest(expected)  # one consistent committed state
        for writer in (1, 2):
            times = [float(line.split("\t")[1]) for line in (logs / f"w{writer}.log").read_text().splitlines()]
            held = counts.get(writer, 0)
            # Its moment: nothing logged after it, everything logged well before it (a sync is 1 s).
            assert held == 0 or times[held - 1] <= moment + 0.5, (writer, held, times[held - 1] - moment)
            assert sum(t <= moment - 3.0 for t in times) <= held, writer


_RESYNCED = re.compile(r"resynced: (\d+) of (\d+) pages in (\S+) \((\d+) bytes\)")
