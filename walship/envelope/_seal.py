"""Sealing and opening an object: zstd, then age when the replica has recipients.

The envelope an object was sealed in is recorded in its own metadata
(``walship-envelope``); opening reads that name and nothing else, so a new
transform is one more name here.
"""

import hashlib
import os
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from walship import codec
from walship.envelope._age import AgeWriter, decrypt_into
from walship.envelope._keys import IDENTITY_ENV, Keyring, parse_recipients
from walship.errors import ChecksumMismatchError, CorruptObjectError, IdentityNeededError
from walship.frames import ENVELOPE as ZSTD_FRAMES
from walship.frames import compress_framed, framed_chunks
from walship.models import CompressedFile
from walship.sqlite import read_header
from walship.trailer import TRAILER_SIZE, TailReader, TailWriter, parse_trailer

__all__ = [
    "ENVELOPES",
    "ZSTD",
    "ZSTD_AGE",
    "ZSTD_FRAMES",
    "Opened",
    "Sealing",
    "SegmentSealer",
    "detect_envelope",
    "is_encrypted",
    "open_detected",
    "open_to_file",
    "require_keys",
    "seal_blocks",
    "seal_file",
    "stored_bound",
]

ZSTD = "zstd"
ZSTD_AGE = "zstd+age"
ENVELOPES = (ZSTD, ZSTD_AGE, ZSTD_FRAMES)

# age: a header stanza per recipient (about 100 bytes for X25519, under 1 KiB for SSH RSA: 4 KiB is
# ample), then 16 bytes of tag per 64 KiB chunk.
_AGE_CHUNK = 64 << 10
_AGE_TAG = 16
_AGE_HEADER = 4096


class Sealing(BaseModel):
    """How new objects are sealed: the zstd level and the age recipients (none: not encrypted).

    Recipients are public keys: they may travel as flow parameters.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: int = Field(default=codec.DEFAULT_LEVEL, ge=codec.MIN_LEVEL, le=codec.MAX_LEVEL)
    recipients: tuple[str, ...] = ()

    @property
    def envelope(self) -> str:
        return ZSTD_AGE if self.recipients else ZSTD

    @property
    def snapshot_envelope(self) -> str:
        """Snapshots are framed unless encrypted: age is one authenticated stream, read from its start, so
        frames inside it would not let a reader fetch one (docs/FORMAT.md, "Framed snapshots")."""
        return ZSTD_AGE if self.recipients else ZSTD_FRAMES

    @property
    def encrypted(self) -> bool:
        return bool(self.recipients)

    def check(self) -> "Sealing":
        """Fail on a recipient age cannot use before anything is copied."""
        codec.validate_level(self.level)
        parse_recipients(self.recipients)
        return self


def is_encrypted(envelope: str) -> bool:
    return "age" in envelope.split("+")


def stored_bound(size: int, sealing: Sealing) -> int:
    """The most ``size`` raw bytes can take once sealed (zstd's bound, then age's overhead)."""
    bound = size + size // 128 + (1 << 16)
    if sealing.encrypted:
        bound += (bound // _AGE_CHUNK + 1) * _AGE_TAG + _AGE_HEADER * len(sealing.recipients)
    return bound


class SegmentSealer:
    """``codec.SealingWriter`` (zstd, hashing the raw bytes), encrypted on the way out when there are recipients."""

    def __init__(self, target: BinaryIO, sealing: Sealing, size: int = 0) -> None:
        self._age = AgeWriter(target, parse_recipients(sealing.recipients)) if sealing.encrypted else None
        self._out: codec.Writable = self._age or target
        self._zstd = codec.SealingWriter(self._out, sealing.level, size)

    @property
    def digest(self) -> "hashlib._Hash":
        return self._zstd.digest

    @property
    def raw_size(self) -> int:
        return self._zstd.raw_size

    def write(self, data: bytes) -> int:
        return self._zstd.write(data)

    def finish(self, trailer: bytes = b"") -> None:
        """End the zstd frame, add ``trailer`` (skippable frames, ``walship.trailer``) inside the
        encryption, and end the age stream; the caller flushes and fsyncs ``target``."""
        self._zstd.finish()
        if trailer:
            self._out.write(trailer)
        if self._age is not None:
            self._age.finish()

    def abort(self) -> None:
        if self._age is not None:
            self._age.abort()


def seal_file(source: Path, target: Path, sealing: Sealing) -> CompressedFile:
    """Seal the database file ``source`` into ``target`` (fsynced): the shipper's spooled snapshots."""
    if not sealing.encrypted:
        with target.open("wb") as out:
            totals = compress_framed(source, out, page_size=read_header(source).page_size, level=sealing.level)
            out.flush()
            os.fsync(out.fileno())
        return CompressedFile(
            path=target,
            raw_size=totals.raw_size,
            compressed_size=totals.compressed_size,
            sha256=totals.sha256,
            level=sealing.level,
            envelope=ZSTD_FRAMES,
        )
    with target.open("wb") as out:
        age = AgeWriter(out, parse_recipients(sealing.recipients))
        try:
            raw_size, sha256 = codec.compress_into(source, age, sealing.level)
            age.finish()
        except BaseException:
            age.abort()
            raise
        out.flush()
        os.fsync(out.fileno())
    return CompressedFile(
        path=target,
        raw_size=raw_size,
        compressed_size=target.stat().st_size,
        sha256=sha256,
        level=sealing.level,
        envelope=sealing.envelope,
    )


def seal_blocks(
    blocks: Iterable[bytes | bytearray],
    totals: codec.StreamTotals,
    *,
    size: int,
    page_size: int,
    sealing: Sealing,
    progress: codec.Progress | None = None,
) -> Iterator[bytes]:
    """A database's pages arriving as ``blocks``, sealed as ``sealing.snapshot_envelope`` says; ``totals`` is
    complete once the last chunk has been yielded. The SHA-256 is at the end either way: in the frame table,
    or in a trailer inside the encryption (``walship.trailer``)."""
    if not sealing.encrypted:
        yield from framed_chunks(blocks, totals, size=size, page_size=page_size, level=sealing.level, progress=progress)
        return
    chunks = codec.compress_blocks(blocks, totals, size=size, level=sealing.level, progress=progress, trailer=True)
    out: deque[bytes] = deque()
    age = AgeWriter(_Appending(out), parse_recipients(sealing.recipients))
    try:
        for chunk in chunks:
            age.write(chunk)
            while out:
                yield out.popleft()
        age.finish()
    except BaseException:
        age.abort()
        raise
    while out:
        yield out.popleft()
    totals.compressed_size = age.stored


class _Appending:
    """Where the cipher's thread leaves sealed bytes for the generator to yield."""

    def __init__(self, out: deque[bytes]) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        self._out.append(data)
        return len(data)


def require_keys(envelope: str, keys: Keyring | None, name: str) -> None:
    """Fail before reading ``name`` when it is encrypted and no identity was given (exit 2)."""
    if envelope not in ENVELOPES:
        raise CorruptObjectError(
            f"{name} is sealed as {envelope!r}, which this walship cannot open: upgrade walship to restore it"
        )
    if is_encrypted(envelope) and keys is None:
        raise IdentityNeededError(
            f"{name} is encrypted with age: give an identity that opens it with --age-identity FILE (or {IDENTITY_ENV})"
        )


def open_to_file(
    source: codec.Readable,
    target: BinaryIO,
    *,
    envelope: str,
    keys: Keyring | None,
    expected_sha256: str,
    expected_size: int,
    name: str,
    progress: codec.Progress | None = None,
    trailer: bool = False,
) -> tuple[int, str]:
    """Open the object ``source`` reads, sealed in ``envelope``, into ``target``: size and SHA-256 verified.

    With ``trailer`` the object records its SHA-256 at its end (``walship.trailer``):
    the bytes must hash to it, and ``expected_sha256`` (when known) must be it.
    Returns the size and the SHA-256 verified.
    """
    require_keys(envelope, keys, name)
    if not is_encrypted(envelope) and not trailer:
        written = codec.decompress_to_file(
            source, target, expected_sha256=expected_sha256, expected_size=expected_size, name=name, progress=progress
        )
        return written, expected_sha256
    opened = _open(source, target, envelope, keys, name=name, total=expected_size, progress=progress)
    if trailer:
        expected_sha256 = _agreed(parse_trailer(opened.tail, name), expected_sha256, name)
    codec.check_decoded(
        opened.size, opened.sha256, expected_sha256=expected_sha256, expected_size=expected_size, name=name
    )
    return opened.size, opened.sha256


class Opened(NamedTuple):
    """An object opened: the plaintext's size and SHA-256 (compared with nothing yet), the last
    ``keep`` bytes of its zstd stream (where its trailers are), and the envelope it was sealed in."""

    size: int
    sha256: str
    tail: bytes
    envelope: str


_AGE_MAGIC = b"age-encryption.org/"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SNIFF = len(_AGE_MAGIC)


def detect_envelope(first: bytes) -> str | None:
    """The envelope an object's first bytes show (None: neither a zstd frame nor an age file)."""
    if first.startswith(_AGE_MAGIC):
        return ZSTD_AGE
    if first.startswith(_ZSTD_MAGIC):
        return ZSTD
    return None


def open_detected(source: codec.Readable, target: BinaryIO, *, keys: Keyring | None, name: str, keep: int) -> Opened:
    """Open an object whose envelope its own first bytes tell into ``target``; nothing is compared here."""
    first = b""
    while len(first) < _SNIFF and (more := source.read(_SNIFF - len(first))):
        first += more
    envelope = detect_envelope(first)
    if envelope is None:
        raise CorruptObjectError(f"verify {name}: the object is neither zstd nor age (corrupt, or not walship's)")
    return _open(codec.PrefixedReader(first, source), target, envelope, keys, name=name, keep=keep)


def _open(
    source: codec.Readable,
    target: BinaryIO,
    envelope: str,
    keys: Keyring | None,
    *,
    name: str,
    total: int = 0,
    progress: codec.Progress | None = None,
    keep: int = TRAILER_SIZE,
) -> Opened:
    require_keys(envelope, keys, name)
    tail: TailReader | TailWriter
    if not is_encrypted(envelope):
        source = tail = TailReader(source, keep)
        written, actual = codec.decompress_stream(
            source, target, name=name, total=total, progress=progress, across_frames=True
        )
    else:
        assert keys is not None  # require_keys refused otherwise
        plain = codec.DecompressingWriter(target, name=name, total=total, progress=progress)
        tail = TailWriter(plain, keep)
        try:
            decrypt_into(source, tail, keys.identities, name)  # type: ignore[arg-type]
        finally:
            written, actual = plain.finish()
    return Opened(written, actual, tail.tail, envelope)


def _agreed(recorded: str, expected: str, name: str) -> str:
    """The SHA-256 an object records at its end, which the index's (when it has one) must equal."""
    if expected and expected != recorded:
        raise ChecksumMismatchError.index_disagrees(name, f"SHA-256 {recorded}", f"SHA-256 {expected}")
    return recorded
