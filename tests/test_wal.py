"""The pure-Python WAL reader against WALs that SQLite itself wrote, intact and damaged."""

import io
import itertools
import random
import struct
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, NamedTuple, cast

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walship.errors import CorruptObjectError
from walship.sqlite import FrameShares, frame_checksum, wal_checksum
from walship.sqlite import _wal as wal_module
from walship.sqlite._vouched import scan_vouched
from walship.sqlite._wal import (
    FRAME_HEADER_SIZE,
    WAL_HEADER_SIZE,
    WalHeader,
    WalScan,
    iter_frame_runs,
    iter_frames,
    parse_wal_header,
    scan_wal,
)
from walship.standby import SegmentPages
from walship.standby import _pages as standby_pages

MASK = 0xFFFFFFFF
PROPERTY = settings(max_examples=60, deadline=None)


def reference_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """Section 4.2 of the file format document, word by word: the oracle for wal_checksum."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & MASK
        s1 = (s1 + words[i + 1] + s0) & MASK
    return s0, s1


class LiveDatabase:
    """A WAL-mode database whose connection stays open, so SQLite never checkpoints the WAL away."""

    def __init__(self, directory: Path, page_size: int, seed: int = 0, *, auto_vacuum: bool = False) -> None:
        self.path = directory / "app.db"
        self.connection = apsw.Connection(str(self.path))
        self.connection.execute(f"PRAGMA page_size={page_size}")
        if auto_vacuum:
            self.connection.execute("PRAGMA auto_vacuum=FULL")
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.wal_autocheckpoint(0)
        self.random = random.Random(seed)
        self.transactions = 0
        self.commit("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")

    def commit(self, sql: str, *bindings: tuple[object, ...]) -> None:
        """Run ``sql`` once per bindings (once if none) as one write transaction."""
        self.connection.execute("BEGIN")
        for values in bindings or [()]:
            self.connection.execute(sql, values)
        self.connection.execute("COMMIT")
        self.transactions += 1

    def insert_random(self, rows: int, max_size: int) -> None:
        blobs = [(self.random.randbytes(self.random.randrange(max_size)),) for _ in range(rows)]
        self.commit("INSERT INTO t(body) VALUES (?)", *blobs)

    def page_count(self) -> int:
        (count,) = self.connection.execute("PRAGMA page_count").fetchall()[0]
        assert isinstance(count, int)
        return count

    def wal(self) -> bytes:
        return self.path.with_name("app.db-wal").read_bytes()

    def close(self) -> None:
        self.connection.close()


def build_wal(directory: Path, page_size: int, transactions: int, seed: int) -> tuple[bytes, int, int]:
    """A WAL of one CREATE TABLE and ``transactions`` inserts: its bytes, commits, final page count."""
    database = LiveDatabase(directory, page_size, seed)
    try:
        for _ in range(transactions):
            database.insert_random(database.random.randint(1, 4), 3 * page_size)
        return database.wal(), database.transactions, database.page_count()
    finally:
        database.close()


def sign_header(header: bytes) -> bytes:
    """``header`` with its checksum recomputed, so only the field under test is wrong."""
    big_endian = bool(struct.unpack_from(">I", header)[0] & 1)
    return header[:24] + struct.pack(">2I", *reference_checksum(header[:24], 0, 0, big_endian)) + header[32:]


def rechain(wal: bytes) -> bytes:
    """``wal`` with the header and every frame checksum recomputed, as if SQLite had written it so."""
    out = bytearray(sign_header(wal[:WAL_HEADER_SIZE]) + wal[WAL_HEADER_SIZE:])
    header = parse_wal_header(bytes(out))
    checksum = (header.checksum1, header.checksum2)
    for offset in range(WAL_HEADER_SIZE, len(out), header.frame_size):
        frame = bytes(out[offset : offset + header.frame_size])
        checksum = reference_checksum(frame[:8] + frame[FRAME_HEADER_SIZE:], *checksum, header.big_endian)
        out[offset + 16 : offset + 24] = struct.pack(">2I", *checksum)
    return bytes(out)


def to_big_endian(wal: bytes) -> bytes:
    """Rewrite a little-endian WAL as a big-endian host would have written it."""
    return rechain(struct.pack(">I", 0x377F0683) + wal[4:])


class Wal(NamedTuple):
    """A WAL SQLite wrote, and its frame headers decoded plainly (no validation) as the oracle."""

    data: bytes
    header: WalHeader
    frames: list[tuple[int, ...]]  # (page number, db size, salt1, salt2, checksum1, checksum2)
    commits: int
    page_count: int

    @classmethod
    def of(cls, data: bytes, commits: int, page_count: int) -> "Wal":
        header = parse_wal_header(data)
        frames = [
            struct.unpack_from(">6I", data, offset)
            for offset in range(WAL_HEADER_SIZE, len(data) - header.frame_size + 1, header.frame_size)
        ]
        return cls(data, header, frames, commits, page_count)

    def expected_scan(self, intact_frames: int) -> WalScan:
        """The scan of this WAL when only its first ``intact_frames`` frames survive."""
        size = self.header.frame_size
        committed = [i for i, frame in enumerate(self.frames[:intact_frames]) if frame[1] != 0]
        if not committed:
            return WalScan(self.header, WAL_HEADER_SIZE, (self.header.checksum1, self.header.checksum2), 0, 0, None)
        last = committed[-1]
        _, db_size, _, _, checksum1, checksum2 = self.frames[last]
        end = WAL_HEADER_SIZE + (last + 1) * size
        return WalScan(self.header, end, (checksum1, checksum2), last + 1, len(committed), db_size)

    def intact_before(self, damaged: bytes) -> int:
        """How many whole frames precede the first byte where ``damaged`` differs from this WAL."""
        first = next((i for i, (a, b) in enumerate(zip(self.data, damaged, strict=False)) if a != b), None)
        if first is None:
            first = min(len(self.data), len(damaged))
        return min((first - WAL_HEADER_SIZE) // self.header.frame_size, len(self.frames))


def scan(data: bytes, **kwargs: object) -> WalScan:
    return scan_wal(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["little-endian", "big-endian"])
def wal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Wal:
    """About 140 frames of 1 KiB pages over 21 transactions, in either checksum byte order."""
    data, commits, page_count = build_wal(tmp_path_factory.mktemp("wal"), 1024, 20, seed=7)
    if request.param == "big-endian":
        data = to_big_endian(data)
    return Wal.of(data, commits, page_count)


class TestWalChecksum:
    """wal_checksum computes section 4.2's running checksum, in either byte order, from any seed."""

    @settings(max_examples=200, deadline=None)
    @given(
        data=st.binary(max_size=2100).map(lambda b: b[: len(b) // 8 * 8]),
        s0=st.integers(0, MASK),
        s1=st.integers(0, MASK),
        big_endian=st.booleans(),
    )
    def test_equals_the_documented_algorithm(self, data: bytes, s0: int, s1: int, big_endian: bool) -> None:
        assert wal_checksum(data, s0, s1, big_endian) == reference_checksum(data, s0, s1, big_endian)

    @pytest.mark.parametrize("page_size", [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536])
    @pytest.mark.parametrize("big_endian", [False, True])
    def test_largest_words_and_seeds_on_every_page_size(self, page_size: int, big_endian: bool) -> None:
        # All ones is the worst case for how far lane sums grow before the final reduction.
        data = b"\xff" * page_size
        assert wal_checksum(data, MASK, MASK, big_endian) == reference_checksum(data, MASK, MASK, big_endian)
        data = random.Random(page_size).randbytes(page_size)
        assert wal_checksum(data, 1, 2, big_endian) == reference_checksum(data, 1, 2, big_endian)

    @PROPERTY
    @given(data=st.binary(max_size=1200), cut=st.integers(0, 150), big_endian=st.booleans())
    def test_chains_across_any_split(self, data: bytes, cut: int, big_endian: bool) -> None:
        data = data[: len(data) // 8 * 8]
        cut = min(cut * 8, len(data))
        head = wal_checksum(data[:cut], 5, 6, big_endian)
        assert wal_checksum(data[cut:], *head, big_endian) == wal_checksum(data, 5, 6, big_endian)

    @pytest.mark.parametrize("page_size", [512, 4096, 65536])
    @pytest.mark.parametrize("big_endian", [False, True])
    def test_frame_shares_chain_as_frame_by_frame(self, page_size: int, big_endian: bool) -> None:
        """A batch's shares give every frame the checksum the documented algorithm gives it, in a chain."""
        frame_size = FRAME_HEADER_SIZE + page_size
        rng = random.Random(page_size + big_endian)
        frames = rng.randbytes(5 * frame_size) + b"\xff" * frame_size + rng.randbytes(frame_size // 2)
        shares = FrameShares(frames, frame_size, big_endian)
        assert len(shares) == 6, "a torn frame at the end has no share"
        checksum = (MASK, 7)
        for index in range(6):
            frame = frames[index * frame_size : (index + 1) * frame_size]
            expected = reference_checksum(frame[:8] + frame[FRAME_HEADER_SIZE:], *checksum, big_endian)
            assert frame_checksum(frame, checksum, big_endian) == expected
            checksum = shares.after(index, checksum)
            assert checksum == expected

    def test_accepts_memoryviews(self) -> None:
        data = bytes(range(256)) * 4
        assert wal_checksum(memoryview(data)[8:], 0, 0, False) == wal_checksum(data[8:], 0, 0, False)

    def test_refuses_partial_word_pairs(self) -> None:
        with pytest.raises(ValueError, match="8-byte pairs"):
            wal_checksum(b"\x00" * 12, 0, 0, False)


class TestParseWalHeader:
    """parse_wal_header accepts the headers SQLite writes and refuses any damaged one."""

    def test_reads_sqlite_header(self, tmp_path: Path) -> None:
        data, _, _ = build_wal(tmp_path, 4096, 1, seed=1)
        header = parse_wal_header(data)
        # SQLite writes the checksum in its host's byte order.
        assert header.magic == (0x377F0683 if sys.byteorder == "big" else 0x377F0682)
        assert header.big_endian == (sys.byteorder == "big")
        assert (header.version, header.page_size, header.frame_size) == (3007000, 4096, 4120)
        assert header.checkpoint_seq == 0

    def test_reads_big_endian_header(self, wal: Wal) -> None:
        assert wal.header.big_endian == (wal.header.magic == 0x377F0683)

    def test_reads_64k_pages(self) -> None:
        header = sign_header(struct.pack(">8I", 0x377F0682, 3007000, 65536, 0, 1, 2, 0, 0))
        assert parse_wal_header(header).page_size == 65536

    def test_any_single_bit_flip_is_refused(self, wal: Wal) -> None:
        for bit in range(WAL_HEADER_SIZE * 8):
            damaged = bytearray(wal.data[:WAL_HEADER_SIZE])
            damaged[bit // 8] ^= 1 << (bit % 8)
            with pytest.raises(CorruptObjectError):
                parse_wal_header(bytes(damaged))

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            (0, 0x377F0684, "magic 0x377f0684"),
            (1, 3007001, "version 3007001"),
            (2, 3000, "page size 3000"),
            (2, 256, "page size 256"),
            (2, 131072, "page size 131072"),
            (2, 0, "page size 0"),
        ],
    )
    def test_refuses_bad_field(self, field: int, value: int, message: str) -> None:
        fields = [0x377F0682, 3007000, 4096, 0, 1, 2, 0, 0]
        fields[field] = value
        with pytest.raises(CorruptObjectError, match=message):
            parse_wal_header(sign_header(struct.pack(">8I", *fields)))

    def test_refuses_bad_checksum(self) -> None:
        header = bytearray(sign_header(struct.pack(">8I", 0x377F0682, 3007000, 4096, 0, 1, 2, 0, 0)))
        header[31] ^= 0x80
        with pytest.raises(CorruptObjectError, match="checksum mismatch"):
            parse_wal_header(bytes(header))

    @pytest.mark.parametrize("size", [0, 1, 31])
    def test_refuses_truncated_header(self, wal: Wal, size: int) -> None:
        with pytest.raises(CorruptObjectError, match=f"truncated: {size} of 32"):
            parse_wal_header(wal.data[:size])


class TestScanRealWal:
    """scan_wal finds exactly the transactions SQLite committed to the WAL, whatever the page size."""

    @pytest.mark.parametrize("page_size", [512, 1024, 4096, 65536])
    def test_finds_every_commit(self, tmp_path: Path, page_size: int) -> None:
        data, commits, page_count = build_wal(tmp_path, page_size, 12, seed=page_size)
        result = scan(data)
        frame_size = FRAME_HEADER_SIZE + page_size
        assert result.header == parse_wal_header(data)
        assert result.commits == commits == 13
        assert result.db_size_pages == page_count
        # Nothing is left in progress: the WAL ends with the last commit frame.
        assert result.last_commit_offset == len(data)
        assert result.frames_committed == (len(data) - WAL_HEADER_SIZE) // frame_size
        last_frame = struct.unpack_from(">6I", data, len(data) - frame_size)
        assert result.last_commit_checksum == last_frame[4:]

    def test_checksums_chain_from_header_through_every_frame(self, wal: Wal) -> None:
        checksum = (wal.header.checksum1, wal.header.checksum2)
        size = wal.header.frame_size
        for offset, frame in zip(range(WAL_HEADER_SIZE, len(wal.data), size), wal.frames, strict=True):
            page = wal.data[offset + FRAME_HEADER_SIZE : offset + size]
            checksum = reference_checksum(wal.data[offset : offset + 8] + page, *checksum, wal.header.big_endian)
            assert checksum == frame[4:]
            assert frame[2:4] == (wal.header.salt1, wal.header.salt2)

    def test_counts_match_the_database(self, wal: Wal) -> None:
        result = scan(wal.data)
        assert result == wal.expected_scan(len(wal.frames))
        assert (result.commits, result.db_size_pages) == (wal.commits, wal.page_count)

    def test_uncommitted_frames_are_not_counted(self, tmp_path: Path) -> None:
        database = LiveDatabase(tmp_path, 1024)
        try:
            database.insert_random(3, 2000)
            committed = scan(database.wal())
            # A tiny page cache makes SQLite spill the open transaction's
            # pages into the WAL before it commits.
            database.connection.execute("PRAGMA cache_size=5")
            database.connection.execute("BEGIN")
            for _ in range(60):
                database.connection.execute("INSERT INTO t(body) VALUES (zeroblob(900))")
            in_progress = database.wal()
            during = scan(in_progress)
            with open(database.path.with_name("app.db-wal"), "rb") as f:
                valid = list(iter_frames(f, during.header))
            database.connection.execute("COMMIT")
            complete = database.wal()
            page_count = database.page_count()
        finally:
            database.close()
        assert len(valid) > during.frames_committed
        assert during == committed
        after = scan(complete)
        assert (after.commits, after.db_size_pages) == (committed.commits + 1, page_count)
        assert after.last_commit_offset == len(complete)

    def test_reset_wal_ignores_the_previous_generation(self, tmp_path: Path) -> None:
        database = LiveDatabase(tmp_path, 1024)
        try:
            for _ in range(8):
                database.insert_random(3, 3000)
            before = database.wal()
            old = scan(before)
            database.connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
            database.insert_random(1, 100)
            after = database.wal()
            page_count = database.page_count()
        finally:
            database.close()
        new = scan(after)
        # The writer rewrote the WAL from the start instead of growing it:
        # same file, new salts, old frames still there past the new ones.
        assert len(after) == len(before)
        assert (new.header.salt1, new.header.checkpoint_seq) == ((old.header.salt1 + 1) & MASK, 1)
        assert (new.commits, new.db_size_pages) == (1, page_count)
        assert new.last_commit_offset < len(after)
        # Resuming where the old generation ended finds nothing there.
        stale = scan(after, start_offset=old.last_commit_offset, start_checksum=old.last_commit_checksum)
        assert (stale.commits, stale.last_commit_offset) == (0, old.last_commit_offset)

    def test_empty_wal_has_no_header(self) -> None:
        with pytest.raises(CorruptObjectError, match="truncated: 0 of 32"):
            scan(b"")


class TestScanDamagedWal:
    """Damage anywhere after the header loses the damaged frame's transaction and all after, never more."""

    @PROPERTY
    @given(data=st.data())
    def test_truncation(self, wal: Wal, data: st.DataObject) -> None:
        cut = data.draw(st.integers(WAL_HEADER_SIZE, len(wal.data)), label="cut")
        result = scan(wal.data[:cut])
        assert result == wal.expected_scan((cut - WAL_HEADER_SIZE) // wal.header.frame_size)
        assert result.last_commit_offset <= cut

    @PROPERTY
    @given(data=st.data())
    def test_single_bit_flip(self, wal: Wal, data: st.DataObject) -> None:
        bit = data.draw(st.integers(WAL_HEADER_SIZE * 8, len(wal.data) * 8 - 1), label="bit")
        damaged = bytearray(wal.data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        frame = (bit // 8 - WAL_HEADER_SIZE) // wal.header.frame_size
        assert scan(bytes(damaged)) == wal.expected_scan(frame)

    @PROPERTY
    @given(data=st.data())
    def test_torn_tail(self, wal: Wal, data: st.DataObject) -> None:
        start = data.draw(st.integers(WAL_HEADER_SIZE, len(wal.data)), label="start")
        length = data.draw(st.integers(0, len(wal.data) - start + 3 * wal.header.frame_size), label="length")
        fill = data.draw(st.sampled_from(["zeros", "random", "stale"]), label="fill")
        if fill == "zeros":
            tail = bytes(length)
        elif fill == "random":
            tail = random.Random(data.draw(st.integers(0, 2**32), label="seed")).randbytes(length)
        else:
            # Whole frames of this WAL written again out of place, as if left over.
            tail = (wal.data[WAL_HEADER_SIZE:] * 2)[:length]
        damaged = wal.data[:start] + tail
        assert scan(damaged) == wal.expected_scan(wal.intact_before(damaged))

    def test_zeroed_frame_is_the_end(self, wal: Wal) -> None:
        size = wal.header.frame_size
        middle = WAL_HEADER_SIZE + len(wal.frames) // 2 * size
        damaged = wal.data[:middle] + bytes(size) + wal.data[middle + size :]
        assert scan(damaged) == wal.expected_scan(len(wal.frames) // 2)

    def test_page_zero_is_the_end(self, wal: Wal) -> None:
        # Checksums cannot catch this one: SQLite's reader refuses page 0 by itself.
        middle = WAL_HEADER_SIZE + len(wal.frames) // 2 * wal.header.frame_size
        damaged = rechain(wal.data[:middle] + bytes(4) + wal.data[middle + 4 :])
        assert scan(damaged) == wal.expected_scan(len(wal.frames) // 2)


class TestResume:
    """A scan resumed at a commit boundary with the checksum there finds the same later commits."""

    @PROPERTY
    @given(data=st.data())
    def test_resume_at_any_commit(self, wal: Wal, data: st.DataObject) -> None:
        whole = scan(wal.data)
        commit_frames = [i for i, frame in enumerate(wal.frames) if frame[1] != 0]
        done = data.draw(st.integers(0, len(commit_frames)), label="commits already shipped")
        boundary = WAL_HEADER_SIZE + (commit_frames[done - 1] + 1 if done else 0) * wal.header.frame_size
        shipped = scan(wal.data[:boundary])
        assert (shipped.commits, shipped.last_commit_offset) == (done, boundary)
        rest = scan(wal.data, start_offset=boundary, start_checksum=shipped.last_commit_checksum)
        assert rest.commits == whole.commits - done
        assert rest.frames_committed == whole.frames_committed - shipped.frames_committed
        assert rest.last_commit_offset == whole.last_commit_offset
        assert rest.last_commit_checksum == whole.last_commit_checksum
        assert rest.db_size_pages == (whole.db_size_pages if done < whole.commits else None)

    def test_wrong_checksum_finds_nothing(self, wal: Wal) -> None:
        boundary = WAL_HEADER_SIZE + wal.header.frame_size
        rest = scan(wal.data, start_offset=boundary, start_checksum=(1, 2))
        assert (rest.commits, rest.last_commit_offset, rest.last_commit_checksum) == (0, boundary, (1, 2))


class TestByteBudget:
    """A scan with a byte budget ends at the last commit within it; chained, such scans cover the whole WAL."""

    @PROPERTY
    @given(data=st.data())
    def test_pieces_chain_to_the_whole_scan(self, wal: Wal, data: st.DataObject) -> None:
        whole = scan(wal.data)
        size = wal.header.frame_size
        budget = data.draw(st.integers(0, 12 * size), label="budget")
        commit_ends = {WAL_HEADER_SIZE + (i + 1) * size for i, frame in enumerate(wal.frames) if frame[1] != 0}
        offset, checksum, commits, frames = WAL_HEADER_SIZE, None, 0, 0
        while True:
            piece = scan(wal.data, start_offset=offset, start_checksum=checksum, max_bytes=budget)
            if piece.commits == 0:
                break
            assert piece.last_commit_offset in commit_ends
            length = piece.last_commit_offset - offset
            # Within the budget, unless one transaction alone is bigger.
            assert length <= budget or piece.commits == 1
            # As much as fits: the next commit would not have.
            later = [end for end in commit_ends if end > piece.last_commit_offset]
            assert piece.budget_reached == bool(later)
            if later:
                assert min(later) - offset > budget
            offset, checksum = piece.last_commit_offset, piece.last_commit_checksum
            commits, frames = commits + piece.commits, frames + piece.frames_committed
        assert (offset, checksum or (0, 0), commits, frames) == (
            whole.last_commit_offset,
            whole.last_commit_checksum if whole.commits else (0, 0),
            whole.commits,
            whole.frames_committed,
        )

    def test_no_budget_reads_to_the_end(self, wal: Wal) -> None:
        assert scan(wal.data, max_bytes=None) == scan(wal.data)
        assert not scan(wal.data).budget_reached


class TestIterFrames:
    """iter_frames yields each valid frame's header and, on request, its page."""

    def test_frames_and_pages(self, wal: Wal) -> None:
        size = wal.header.frame_size
        frames = list(iter_frames(io.BytesIO(wal.data), wal.header, with_data=True))
        assert len(frames) == len(wal.frames)
        for i, (frame, page) in enumerate(frames):
            offset = WAL_HEADER_SIZE + i * size
            assert (frame.index, frame.offset) == (i, offset)
            fields = (frame.page_number, frame.db_size_after_commit, frame.salt1, frame.salt2)
            assert (*fields, frame.checksum1, frame.checksum2) == wal.frames[i]
            assert frame.is_commit == (frame.db_size_after_commit != 0)
            assert page == wal.data[offset + FRAME_HEADER_SIZE : offset + size]

    def test_reads_through_short_reads(self, wal: Wal) -> None:
        class Trickle(io.BytesIO):
            """A file returning at most 1000 bytes a read, as raw files and pipes may."""

            def read(self, size: int | None = -1) -> bytes:
                return super().read(1000 if size is None or size < 0 else min(size, 1000))

        assert scan_wal(Trickle(wal.data)) == scan(wal.data)

    def test_starts_mid_wal(self, wal: Wal) -> None:
        size = wal.header.frame_size
        checksum = (wal.frames[2][4], wal.frames[2][5])
        start = WAL_HEADER_SIZE + 3 * size
        frames = list(iter_frames(io.BytesIO(wal.data), wal.header, start_offset=start, start_checksum=checksum))
        assert [frame.index for frame in frames] == list(range(3, len(wal.frames)))

    @pytest.mark.parametrize("offset", [0, 31, 33, WAL_HEADER_SIZE + 1024])
    def test_refuses_offsets_off_frame_boundaries(self, wal: Wal, offset: int) -> None:
        with pytest.raises(ValueError, match="not a frame boundary"):
            iter_frames(io.BytesIO(wal.data), wal.header, start_offset=offset, start_checksum=(0, 0))

    def test_needs_checksum_past_first_frame(self, wal: Wal) -> None:
        with pytest.raises(ValueError, match="running checksum"):
            iter_frames(io.BytesIO(wal.data), wal.header, start_offset=WAL_HEADER_SIZE + wal.header.frame_size)

    @PROPERTY
    @given(data=st.data())
    def test_runs_of_any_length_end_at_the_first_bad_frame(self, wal: Wal, data: st.DataObject) -> None:
        """Frames are checked a run at a time; wherever a run begins or ends, the valid frames are the same."""
        size = wal.header.frame_size
        run_bytes = data.draw(st.integers(1, 5), label="frames a run") * size
        bit = data.draw(st.integers(WAL_HEADER_SIZE * 8, len(wal.data) * 8 - 1), label="bit")
        damaged = bytearray(wal.data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        good = (bit // 8 - WAL_HEADER_SIZE) // size
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(wal_module, "_BATCH_BYTES", run_bytes)
            runs = list(iter_frame_runs(io.BytesIO(bytes(damaged)), wal.header))
        assert [n for run in runs for n in run.page_numbers] == [frame[0] for frame in wal.frames[:good]]
        assert [c for run in runs for c in run.checksums] == [frame[4:] for frame in wal.frames[:good]]
        assert b"".join(run.frames for run in runs) == wal.data[WAL_HEADER_SIZE : WAL_HEADER_SIZE + good * size]


class TestFrameRuns:
    """A run of frames applied at once leaves a database as SQLite's frame by frame replay does."""

    @staticmethod
    def shrinking_wal(directory: Path, seed: int) -> bytes:
        """A WAL of small commits that grow the file and cut it (auto-vacuum), and of VACUUMs."""
        database = LiveDatabase(directory, 1024, seed, auto_vacuum=True)
        try:
            for step in range(40):
                if step % 3 == 2:
                    database.commit("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 1)")
                else:
                    database.insert_random(1, 3 * 1024)
                if step % 20 == 19:
                    database.connection.execute("VACUUM")
            return database.wal()
        finally:
            database.close()

    @PROPERTY
    @given(seed=st.integers(0, 2**16), frames=st.integers(1, 9), hot=st.integers(1, 12))
    def test_runs_of_any_length_apply_as_frames_do(
        self, tmp_path_factory: pytest.TempPathFactory, seed: int, frames: int, hot: int
    ) -> None:
        """``hot``: the pages a standby keeps in memory before they go to its scratch file."""
        data = self.shrinking_wal(tmp_path_factory.mktemp("runs"), seed)
        header = parse_wal_header(data)
        sizes = [frame[1] for frame in Wal.of(data, 0, 0).frames if frame[1]]
        assert any(later < earlier for earlier, later in itertools.pairwise(sizes)), "the WAL never shrinks the file"
        # The oracle: every frame written in turn, the file cut at each commit.
        replayed, one_by_one = io.BytesIO(), iter_frames(io.BytesIO(data), header, with_data=True)
        out, applied = io.BytesIO(), 0
        scratch = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, whatever happens
        with scratch, pytest.MonkeyPatch.context() as patch:
            patch.setattr(wal_module, "_BATCH_BYTES", frames * header.frame_size)
            patch.setattr(standby_pages, "_HOT_BYTES", hot * header.page_size)
            kept = SegmentPages(header.page_size, cast(BinaryIO, scratch))  # what a standby keeps of the runs
            for run in iter_frame_runs(io.BytesIO(data), header):
                run.apply_to(out)
                kept.take(run)
                for frame, page in itertools.islice(one_by_one, len(run)):
                    replayed.seek((frame.page_number - 1) * header.page_size)
                    replayed.write(page)
                    if frame.is_commit:
                        replayed.truncate(frame.db_size_after_commit * header.page_size)
                applied += len(run)
                # After every run, not only at the end: a VACUUM rewrites every page and would hide a wrong one.
                assert out.getvalue() == replayed.getvalue(), f"after {applied} frames"
                if run.db_sizes[-1]:
                    assert kept.page_count == run.db_sizes[-1]
                    images = dict(kept.pages())
                    assert max(images, default=0) <= kept.page_count, "a page the file no longer holds is kept"
                    assert len(kept) == len(images)
                    blank = bytes(header.page_size)
                    whole = b"".join(images.get(n, blank) for n in range(1, kept.page_count + 1))
                    assert whole == replayed.getvalue(), f"kept pages after {applied} frames"
        assert applied * header.frame_size == len(data) - WAL_HEADER_SIZE


def vouched(data: bytes, **kwargs: object) -> WalScan:
    return scan_vouched(io.BytesIO(data), **kwargs)  # type: ignore[arg-type]


class TestVouchedScan:
    """Frames the WAL index vouches for: headers checked by columns, checksums only where the range starts and ends."""

    @PROPERTY
    @given(data=st.data())
    def test_equals_the_full_scan_on_an_intact_wal(self, wal: Wal, data: st.DataObject) -> None:
        commit_frames = [i for i, frame in enumerate(wal.frames) if frame[1] != 0]
        done = data.draw(st.integers(0, len(commit_frames)), label="commits already shipped")
        boundary = WAL_HEADER_SIZE + (commit_frames[done - 1] + 1 if done else 0) * wal.header.frame_size
        seed = scan(wal.data[:boundary]).last_commit_checksum if done else None
        budget = data.draw(st.none() | st.integers(0, len(wal.data)), label="max_bytes")
        cut = data.draw(st.integers(boundary, len(wal.data)), label="file ends at")
        full = scan(wal.data[:cut], start_offset=boundary, start_checksum=seed, max_bytes=budget)
        assert vouched(wal.data[:cut], start_offset=boundary, start_checksum=seed, max_bytes=budget) == full

    def test_a_wal_rewritten_under_the_cursor_finds_nothing(self, wal: Wal) -> None:
        boundary = WAL_HEADER_SIZE + wal.header.frame_size
        rest = vouched(wal.data, start_offset=boundary, start_checksum=(1, 2))
        assert (rest.commits, rest.last_commit_offset) == (0, boundary)

    def test_a_damaged_last_commit_falls_back_to_the_full_scan(self, wal: Wal) -> None:
        size = wal.header.frame_size
        last_commit = max(i for i, frame in enumerate(wal.frames) if frame[1] != 0)
        flipped = WAL_HEADER_SIZE + last_commit * size + FRAME_HEADER_SIZE + 100
        damaged = bytearray(wal.data)
        damaged[flipped] ^= 0x01
        assert vouched(bytes(damaged), start_offset=WAL_HEADER_SIZE, start_checksum=None) == wal.expected_scan(
            last_commit
        )

    def test_header_damage_still_ends_the_scan(self, wal: Wal) -> None:
        # Salts are checked on every frame, vouched or not: a stale frame is never taken.
        middle = len(wal.frames) // 2
        salt = WAL_HEADER_SIZE + middle * wal.header.frame_size + 8
        damaged = bytearray(wal.data)
        damaged[salt] ^= 0x01
        assert vouched(bytes(damaged), start_offset=WAL_HEADER_SIZE, start_checksum=None) == wal.expected_scan(middle)
