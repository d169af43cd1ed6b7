"""Framed snapshots (walship.frames): the tables at the end, frames fetched in parallel, frames taken from a seed."""

import hashlib
import io
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from walship.codec import StreamTotals
from walship.errors import ChecksumMismatchError, CorruptObjectError
from walship.frames import FRAME_BYTES, compress_framed, fetch_framed, framed_chunks, parse_tail, read_layout
from walship.storage import LocalStore, open_store

PAGE = 4096


def _pages(frames: float, seed: int = 7) -> bytes:
    """Compressible pages (text with some noise), ``frames`` frames' worth."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", os.urandom(6), b"epsilon"]
    size = int(frames * FRAME_BYTES) // PAGE * PAGE
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choice(words) for _ in range(64)) + b"\n"
    return bytes(out[:size])


def _framed(raw: bytes, block: int = 300_000) -> tuple[bytes, StreamTotals]:
    totals = StreamTotals()
    blocks = (raw[i : i + block] for i in range(0, len(raw), block))
    data = b"".join(framed_chunks(blocks, totals, size=len(raw), page_size=PAGE, level=3))
    return data, totals


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    opened = open_store(f"file://{tmp_path / 'replica'}")
    assert isinstance(opened, LocalStore)
    return opened


def test_frames_hold_whole_pages_and_any_zstd_decoder_gives_the_database() -> None:
    raw = _pages(3.5)
    data, totals = _framed(raw)
    assert (totals.raw_size, totals.compressed_size, totals.sha256) == (
        len(raw),
        len(data),
        hashlib.sha256(raw).hexdigest(),
    )
    layout = parse_tail(data, len(data), "k")
    assert not isinstance(layout, int)
    assert [f.raw_size for f in layout.frames] == [FRAME_BYTES] * 3 + [len(raw) - 3 * FRAME_BYTES]
    assert layout.frame_of_page(FRAME_BYTES // PAGE + 1).index == 1
    for frame in layout.frames:
        chunk = zstandard.ZstdDecompressor().decompress(data[frame.offset : frame.offset + frame.size])
        assert chunk == raw[frame.raw_offset : frame.raw_offset + frame.raw_size]
        assert hashlib.sha256(chunk).digest() == frame.sha256
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
        assert reader.read() == raw


def test_a_short_tail_asks_for_what_it_needs_and_a_stream_of_another_size_makes_no_object() -> None:
    data, _ = _framed(_pages(2))
    needed = parse_tail(data[-20:], len(data), "k")
    assert isinstance(needed, int)
    assert not isinstance(parse_tail(data[-needed:], len(data), "k"), int)
    with pytest.raises(CorruptObjectError, match="announced"):
        list(framed_chunks([b"x" * PAGE], StreamTotals(), size=2 * PAGE, page_size=PAGE, level=1))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("table", "does not match its own SHA-256"),
        ("seek", "frame table.s frame is damaged"),
        ("cut", "not a framed snapshot's end"),
        ("grown", "the object"),
    ],
)
def test_damaged_tables_are_never_trusted(damage: str, message: str) -> None:
    data, _ = _framed(_pages(2))
    layout = parse_tail(data, len(data), "k")
    assert not isinstance(layout, int)
    broken = bytearray(data)
    if damage == "table":
        broken[layout.data_end + 40] ^= 1  # inside the frame table's digests
    elif damage == "seek":
        broken[-12] ^= 1  # the seek table's entry of the frame table
    elif damage == "cut":
        del broken[-5:]
    else:
        broken[:0] = b"\0" * 16  # sizes no longer add up to the object's
    with pytest.raises(CorruptObjectError, match=message):
        parse_tail(bytes(broken), len(broken), "k")


def test_a_second_read_fetches_tables_bigger_than_the_first_guess(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, totals = _framed(_pages(4))
    store.put_bytes("snap", data)
    monkeypatch.setattr("walship.frames._read.TAIL_GUESS", 64)
    assert read_layout(store, "snap", len(data)).sha256 == totals.sha256


def test_fetched_whole_in_parallel_and_checked(store: LocalStore, tmp_path: Path) -> None:
    raw = _pages(20.25)
    data, totals = _framed(raw)
    store.put_bytes("snap", data)
    with (tmp_path / "out").open("w+b") as out:
        fetched = fetch_framed(store, "snap", len(data), out, expected_sha256=totals.sha256, expected_size=len(raw))
    assert (tmp_path / "out").read_bytes() == raw
    assert (fetched.fetched, fetched.seeded) == (len(data), 0)


def test_frames_the_seed_holds_are_not_fetched(store: LocalStore, tmp_path: Path) -> None:
    raw = _pages(6)
    data, _ = _framed(raw)
    store.put_bytes("snap", data)
    layout = read_layout(store, "snap", len(data))
    seed = bytearray(raw[: -PAGE * 3])  # shorter: the last frame is fetched
    seed[FRAME_BYTES + 100] ^= 1  # frame 1 differs
    with (tmp_path / "out").open("w+b") as out:
        fetched = fetch_framed(
            store,
            "snap",
            len(data),
            out,
            expected_sha256="",
            expected_size=len(raw),
            seed=lambda offset, length: bytes(seed[offset : offset + length]),
        )
    assert (tmp_path / "out").read_bytes() == raw
    frames = layout.frames
    assert fetched.seeded == len(frames) - 2
    assert fetched.fetched == frames[1].size + frames[-1].size + len(data) - layout.data_end


@pytest.mark.parametrize("where", ["data", "recorded"])
def test_a_damaged_frame_or_a_wrong_recorded_checksum_fails_naming_the_object(
    store: LocalStore, tmp_path: Path, where: str
) -> None:
    raw = _pages(3)
    data, totals = _framed(raw)
    if where == "data":
        broken = bytearray(data)
        broken[FRAME_BYTES // 8] ^= 0xFF  # inside frame 0's compressed bytes
        data = bytes(broken)
    expected = totals.sha256 if where == "data" else "0" * 64
    store.put_bytes("generations/g/snap", data)
    with (tmp_path / "out").open("w+b") as out, pytest.raises((CorruptObjectError, ChecksumMismatchError)) as caught:
        fetch_framed(store, "generations/g/snap", len(data), out, expected_sha256=expected, expected_size=len(raw))
    assert "generations/g/snap" in str(caught.value)


def test_the_zstd_tool_decompresses_a_framed_file(tmp_path: Path) -> None:
    """What the shipper spools (``compress_framed``) is still a database to ``zstd -d``."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed")
    raw = _pages(2.5)
    (tmp_path / "db").write_bytes(raw)
    with (tmp_path / "db.zst").open("wb") as out:
        totals = compress_framed(tmp_path / "db", out, page_size=PAGE, level=3)
    assert totals.sha256 == hashlib.sha256(raw).hexdigest()
    plain = subprocess.run(["zstd", "-d", "-c", str(tmp_path / "db.zst")], check=False, capture_output=True)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == raw
