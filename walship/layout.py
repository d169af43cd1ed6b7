"""Object keys, in one place: every ``format_*`` has its ``parse_*`` twin.

Keys are relative to the replica's prefix; the storage backend adds the
prefix. The layout is documented in docs/FORMAT.md.

    metadata.json
    lease.json
    generations/<gen>/snapshots/<seq:020>.sqlite.zst
    generations/<gen>/wal/<seq:020>.wal.zst
    generations/<gen>/wal/<seq:020>.resync.zst    a resync segment (pages, not WAL frames)

A resync segment takes its place in the generation's sequence like any
segment (``parse_segment_key`` reads both), so listings, gaps and retention
treat it as one; its own name lets a listing tell it apart without a HEAD.

The original design (docs/FORMAT.md, "The original layout") wrote, under
the same kind of prefix:

    snapshots/<YYYYmmdd_HHMMSS>.sqlite.zst
    wal/<seq:020>.wal.zst
"""

import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

__all__ = [
    "GENERATIONS_PREFIX",
    "LEASE_KEY",
    "METADATA_KEY",
    "ParsedKey",
    "format_original_snapshot_key",
    "format_original_wal_key",
    "format_resync_key",
    "format_segment_key",
    "format_snapshot_key",
    "generation_of",
    "generation_prefix",
    "is_generation",
    "is_replica_key",
    "is_resync_key",
    "new_generation",
    "parse_generation",
    "parse_original_snapshot_key",
    "parse_original_wal_key",
    "parse_segment_key",
    "parse_snapshot_key",
    "segment_prefix",
]

METADATA_KEY = "metadata.json"
LEASE_KEY = "lease.json"
GENERATIONS_PREFIX = "generations/"

# Generation names sort by creation time, so the newest is the last in a
# listing; the random tail keeps two generations of one second apart.
_GENERATION = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_SNAPSHOT = re.compile(r"^generations/([^/]+)/snapshots/(\d{20})\.sqlite\.zst$")
_SEGMENT = re.compile(r"^generations/([^/]+)/wal/(\d{20})\.(?:wal|resync)\.zst$")
_RESYNC_SUFFIX = ".resync.zst"
_UNDER_GENERATION = re.compile(r"^generations/([^/]+)/")
# The original design's keys: a snapshot named by the UTC second its upload
# began (two in one second overwrote each other there), WAL by sequence.
_ORIGINAL_SNAPSHOT = re.compile(r"^snapshots/(\d{8}_\d{6})\.sqlite\.zst$")
_ORIGINAL_WAL = re.compile(r"^wal/(\d{20})\.wal\.zst$")
_ORIGINAL_TIME = "%Y%m%d_%H%M%S"


class ParsedKey(NamedTuple):
    generation: str
    sequence: int


def new_generation(now: datetime | None = None, *, after: str | None = None) -> str:
    """A new generation's name: its UTC start to the second, then random digits.

    ``after`` is the newest generation the spool knows. Spools and
    acknowledgements order entries by generation name, and two generations
    begun within one second would sort by their random digits, the newer
    one first half the time, and a replica's mark on the older one would
    want nothing of the newer; within ``after``'s second the digits are
    drawn above its own.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}-{secrets.token_hex(4)}"
    match = _GENERATION.match(after or "")
    if match is None or after is None or name > after:
        return name
    digits = int(match.group(2), 16)
    if digits < 0xFFFFFFFF:
        return f"{match.group(1)}-{digits + 1 + secrets.randbelow(0xFFFFFFFF - digits):08x}"
    later = parse_generation(match.group(0)) + timedelta(seconds=1)
    return f"{later:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_generation(name: str) -> datetime:
    """Return the creation time encoded in a generation name."""
    match = _GENERATION.match(name)
    if match is None:
        raise ValueError(f"not a generation name: {name!r}")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def is_generation(name: str) -> bool:
    return _GENERATION.match(name) is not None


def generation_prefix(generation: str) -> str:
    parse_generation(generation)
    return f"{GENERATIONS_PREFIX}{generation}/"


def generation_of(key: str) -> str | None:
    """The generation a key under ``generations/`` belongs to (None: no generation's)."""
    match = _UNDER_GENERATION.match(key)
    return match.group(1) if match and _GENERATION.match(match.group(1)) else None


def format_snapshot_key(generation: str, sequence: int) -> str:
    return f"{generation_prefix(generation)}snapshots/{_sequence(sequence)}.sqlite.zst"


def parse_snapshot_key(key: str) -> ParsedKey | None:
    return _parse(_SNAPSHOT, key)


def format_segment_key(generation: str, sequence: int) -> str:
    return f"{generation_prefix(generation)}wal/{_sequence(sequence)}.wal.zst"


def segment_prefix(generation: str, sequence: int) -> str:
    """The prefix both kinds of segment ``sequence`` share (WAL or resync): one listing finds either."""
    return f"{generation_prefix(generation)}wal/{_sequence(sequence)}."


def format_resync_key(generation: str, sequence: int) -> str:
    return f"{generation_prefix(generation)}wal/{_sequence(sequence)}{_RESYNC_SUFFIX}"


def parse_segment_key(key: str) -> ParsedKey | None:
    """A WAL or a resync segment's generation and sequence."""
    return _parse(_SEGMENT, key)


def is_resync_key(key: str) -> bool:
    return key.endswith(_RESYNC_SUFFIX) and parse_segment_key(key) is not None


def is_replica_key(key: str) -> bool:
    """A key walship writes, or the original design wrote: where there is one, there is a replica."""
    return (
        key in (METADATA_KEY, LEASE_KEY)
        or key.startswith(GENERATIONS_PREFIX)
        or parse_original_snapshot_key(key) is not None
        or parse_original_wal_key(key) is not None
    )


def format_original_snapshot_key(taken_at: datetime) -> str:
    return f"snapshots/{taken_at.astimezone(UTC).strftime(_ORIGINAL_TIME)}.sqlite.zst"


def parse_original_snapshot_key(key: str) -> datetime | None:
    """The upload time an original-layout snapshot key encodes (UTC, to the second)."""
    match = _ORIGINAL_SNAPSHOT.match(key)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), _ORIGINAL_TIME).replace(tzinfo=UTC)
    except ValueError:  # digits in the right places, but no such date (month 13)
        return None


def format_original_wal_key(sequence: int) -> str:
    return f"wal/{_sequence(sequence)}.wal.zst"


def parse_original_wal_key(key: str) -> int | None:
    match = _ORIGINAL_WAL.match(key)
    return int(match.group(1)) if match else None


def _sequence(sequence: int) -> str:
    if not 0 <= sequence < 10**20:
        raise ValueError(f"sequence out of range: {sequence}")
    return f"{sequence:020d}"


def _parse(pattern: re.Pattern[str], key: str) -> ParsedKey | None:
    match = pattern.match(key)
    if match is None or _GENERATION.match(match.group(1)) is None:
        return None
    return ParsedKey(match.group(1), int(match.group(2)))
