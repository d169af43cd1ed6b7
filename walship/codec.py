"""Streaming zstd with a SHA-256 of the uncompressed bytes, computed on the fly.

Memory stays bounded by the chunk size and zstd's window whatever the input
size: nothing here holds a whole object.
"""

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Protocol, cast

import zstandard

from walship.errors import ChecksumMismatchError, CorruptObjectError, UsageError
from walship.models import CompressedFile

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_LEVEL",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "Readable",
    "compress_file",
    "decompress_to_file",
    "validate_level",
]

CHUNK_SIZE = 1 << 20
DEFAULT_LEVEL = 3
MIN_LEVEL = 1
MAX_LEVEL = 22


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _HashingReader:
    """Hands bytes to zstd while hashing and counting them."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data


def validate_level(level: int) -> int:
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise UsageError(
            f"compression level {level} is out of range: use {MIN_LEVEL} to {MAX_LEVEL} (default {DEFAULT_LEVEL})"
        )
    return level


def compress_file(source: Path, target: Path, level: int = DEFAULT_LEVEL) -> CompressedFile:
    """Compress ``source`` into ``target`` (fsynced); hash the uncompressed bytes."""
    validate_level(level)
    size = source.stat().st_size
    # threads=-1: one zstd worker per core; level 3 on one core is slower than
    # the disk and the network, so the extra worker pays for itself.
    compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
    with source.open("rb") as raw, target.open("wb") as out:
        reader = _HashingReader(raw)
        compressor.copy_stream(cast(BinaryIO, reader), out, size=size, read_size=CHUNK_SIZE, write_size=CHUNK_SIZE)
        out.flush()
        os.fsync(out.fileno())
    if reader.count != size:
        raise CorruptObjectError(f"compress {source}: file changed size while being read ({size} -> {reader.count})")
    return CompressedFile(
        path=target,
        raw_size=reader.count,
        compressed_size=target.stat().st_size,
        sha256=reader.digest.hexdigest(),
        level=level,
    )


def decompress_to_file(
    source: Readable, target: BinaryIO, *, expected_sha256: str, expected_size: int, name: str
) -> int:
    """Stream-decompress ``source`` into ``target`` and verify size and SHA-256.

    ``name`` (the object key) goes into every error so an operator knows which
    object is bad. Returns the number of bytes written.
    """
    digest = hashlib.sha256()
    written = 0
    decompressor = zstandard.ZstdDecompressor()
    try:
        with decompressor.stream_reader(cast(BinaryIO, source), read_size=CHUNK_SIZE, closefd=False) as reader:
            while chunk := reader.read(CHUNK_SIZE):
                digest.update(chunk)
                target.write(chunk)
                written += len(chunk)
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"decompress {name}: the object is corrupt ({exc})") from exc
    if written != expected_size:
        raise ChecksumMismatchError(
            f"verify {name}: decompressed to {written} bytes, expected {expected_size} (object truncated or corrupt)"
        )
    actual = digest.hexdigest()
    if actual != expected_sha256:
        raise ChecksumMismatchError(f"verify {name}: SHA-256 {actual} does not match recorded {expected_sha256}")
    return written
