import hashlib
import io
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from walship.codec import compress_into, decompress_to_file, validate_level
from walship.errors import ChecksumMismatchError, CorruptObjectError, UsageError
from walship.trailer import TRAILER_SIZE, TailReader, TailWriter, format_trailer, parse_trailer


def _roundtrip(tmp_path: Path, data: bytes, level: int = 3) -> tuple[bytes, bytes]:
    source = tmp_path / "in"
    source.write_bytes(data)
    out = io.BytesIO()
    raw_size, sha256 = compress_into(source, out, level)
    assert raw_size == len(data)
    assert sha256 == hashlib.sha256(data).hexdigest()
    return out.getvalue(), sha256.encode()


class TestCompressInto:
    """compress_into streams zstd and hashes the uncompressed bytes."""

    @settings(max_examples=30, deadline=None)
    @given(data=st.binary(max_size=300_000), level=st.integers(1, 9))
    def test_roundtrip(self, tmp_path_factory: pytest.TempPathFactory, data: bytes, level: int) -> None:
        tmp_path = tmp_path_factory.mktemp("codec")
        blob, sha = _roundtrip(tmp_path, data, level)
        out = io.BytesIO()
        written = decompress_to_file(
            io.BytesIO(blob), out, expected_sha256=sha.decode(), expected_size=len(data), name="k"
        )
        assert written == len(data)
        assert out.getvalue() == data

    def test_compresses_repetitive_data(self, tmp_path: Path) -> None:
        blob, _ = _roundtrip(tmp_path, b"walship " * 100_000)
        assert len(blob) < 10_000

    @pytest.mark.parametrize("level", [0, 23, -1])
    def test_rejects_levels_out_of_range(self, level: int) -> None:
        with pytest.raises(UsageError, match="1 to 22"):
            validate_level(level)


class TestDecompressToFile:
    """decompress_to_file refuses anything but the exact bytes that were written."""

    DATA = bytes(range(256)) * 4096

    def _blob(self, tmp_path: Path) -> tuple[bytes, str]:
        blob, sha = _roundtrip(tmp_path, self.DATA)
        return blob, sha.decode()

    def test_flipped_byte_is_detected(self, tmp_path: Path) -> None:
        blob, sha = self._blob(tmp_path)
        corrupt = bytearray(blob)
        corrupt[len(corrupt) // 2] ^= 0x01
        with pytest.raises((ChecksumMismatchError, CorruptObjectError), match="obj"):
            decompress_to_file(
                io.BytesIO(bytes(corrupt)), io.BytesIO(), expected_sha256=sha, expected_size=len(self.DATA), name="obj"
            )

    def test_truncated_object_is_detected(self, tmp_path: Path) -> None:
        blob, sha = self._blob(tmp_path)
        with pytest.raises((ChecksumMismatchError, CorruptObjectError), match="obj"):
            decompress_to_file(
                io.BytesIO(blob[: len(blob) // 2]),
                io.BytesIO(),
                expected_sha256=sha,
                expected_size=len(self.DATA),
                name="obj",
            )

    def test_wrong_recorded_checksum_is_detected(self, tmp_path: Path) -> None:
        blob, _ = self._blob(tmp_path)
        with pytest.raises(ChecksumMismatchError, match="does not match"):
            decompress_to_file(
                io.BytesIO(blob), io.BytesIO(), expected_sha256="0" * 64, expected_size=len(self.DATA), name="obj"
            )

    def test_not_zstd_is_corrupt(self) -> None:
        with pytest.raises(CorruptObjectError, match="corrupt"):
            decompress_to_file(
                io.BytesIO(b"plain text, not zstd" * 10), io.BytesIO(), expected_sha256="0", expected_size=1, name="o"
            )


class TestTrailer:
    """The SHA-256 at a streamed snapshot's end: written, found however the bytes arrive, refused when damaged."""

    SHA = hashlib.sha256(b"walship").hexdigest()

    @settings(max_examples=50, deadline=None)
    @given(body=st.binary(max_size=200), cuts=st.lists(st.integers(0, 300), max_size=8))
    def test_found_whatever_the_reads(self, body: bytes, cuts: list[int]) -> None:
        """Reads of any size, a trailer split across them included, leave the trailer as the tail."""
        reader = TailReader(io.BytesIO(body + format_trailer(self.SHA)))
        for size in cuts:
            reader.read(size)
        while reader.read(7):
            pass
        assert reader.sha256("k") == self.SHA
        writer = TailWriter(io.BytesIO())
        data = body + format_trailer(self.SHA)
        for start in range(0, len(data), 5):
            writer.write(data[start : start + 5])
        assert writer.sha256("k") == self.SHA

    @pytest.mark.parametrize("damage", [0, 3, 4, 8, TRAILER_SIZE - 1])
    def test_a_damaged_frame_header_or_a_cut_is_refused(self, damage: int) -> None:
        trailer = bytearray(format_trailer(self.SHA))
        if damage == TRAILER_SIZE - 1:
            del trailer[0]  # one byte short
        else:
            trailer[damage] ^= 0x01
        with pytest.raises(CorruptObjectError, match=r"^verify obj: the object does not end with its SHA-256"):
            parse_trailer(bytes(trailer), "obj")

    def test_zstd_skips_it(self) -> None:
        """A skippable frame: decoders go past it to the next frame or the end."""
        frame = zstandard.ZstdCompressor(write_checksum=True).compress(b"data" * 1000)
        out = io.BytesIO()
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(frame + format_trailer(self.SHA) + frame), read_across_frames=True
        )
        while chunk := reader.read(4096):
            out.write(chunk)
        assert out.getvalue() == b"data" * 2000
