"""Object keys, in one place: every ``format_*`` has its ``parse_*`` twin.

Keys are relative to the replica's prefix; the storage backend adds the
prefix. The layout is documented in docs/FORMAT.md.

    metadata.json
    lease.json
    generations/<gen>/snapshots/<seq:020>.sqlite.zst
    generations/<gen>/wal/<seq:020>.wal.zst
"""

import re
import secrets
from datetime import UTC, datetime
from typing import NamedTuple

__all__ = [
    "GENERATIONS_PREFIX",
    "LEASE_KEY",
    "METADATA_KEY",
    "ParsedKey",
    "format_segment_key",
    "format_snapshot_key",
    "generation_prefix",
    "new_generation",
    "parse_generation",
    "parse_segment_key",
    "parse_snapshot_key",
]

METADATA_KEY = "metadata.json"
LEASE_KEY = "lease.json"
GENERATIONS_PREFIX = "generations/"

# Generation names sort by creation time, so the newest is the last in a
# listing; the random tail keeps two generations of one second apart.
_GENERATION = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{8})$")
_SNAPSHOT = re.compile(r"^generations/([^/]+)/snapshots/(\d{20})\.sqlite\.zst$")
_SEGMENT = re.compile(r"^generations/([^/]+)/wal/(\d{20})\.wal\.zst$")


class ParsedKey(NamedTuple):
    generation: str
    sequence: int


def new_generation(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def parse_generation(name: str) -> datetime:
    """Return the creation time encoded in a generation name."""
    match = _GENERATION.match(name)
    if match is None:
        raise ValueError(f"not a generation name: {name!r}")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def generation_prefix(generation: str) -> str:
    parse_generation(generation)
    return f"{GENERATIONS_PREFIX}{generation}/"


def format_snapshot_key(generation: str, sequence: int) -> str:
    return f"{generation_prefix(generation)}snapshots/{_sequence(sequence)}.sqlite.zst"


def parse_snapshot_key(key: str) -> ParsedKey | None:
    return _parse(_SNAPSHOT, key)


def format_segment_key(generation: str, sequence: int) -> str:
    return f"{generation_prefix(generation)}wal/{_sequence(sequence)}.wal.zst"


def parse_segment_key(key: str) -> ParsedKey | None:
    return _parse(_SEGMENT, key)


def _sequence(sequence: int) -> str:
    if not 0 <= sequence < 10**20:
        raise ValueError(f"sequence out of range: {sequence}")
    return f"{sequence:020d}"


def _parse(pattern: re.Pattern[str], key: str) -> ParsedKey | None:
    match = pattern.match(key)
    if match is None or _GENERATION.match(match.group(1)) is None:
        return None
    return ParsedKey(match.group(1), int(match.group(2)))
