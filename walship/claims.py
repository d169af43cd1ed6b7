"""What the index claims a replica holds, and which keys walship writes.

The index (``metadata.json``) is written only after what it records was
uploaded: its shipped position and its snapshots are claims a listing must
reach. A listing that falls short lost objects; restore, verify and status
compare the two (walship.generations).
"""

from pydantic import BaseModel, ConfigDict

from walship.layout import (
    LEASE_KEY,
    METADATA_KEY,
    parse_original_snapshot_key,
    parse_original_wal_key,
    parse_segment_key,
    parse_snapshot_key,
)
from walship.models import ReplicaMetadata

__all__ = ["Claim", "claims_of", "is_walship_key"]


class Claim(BaseModel):
    """How far something other than the listing says a generation reached, and what says so."""

    model_config = ConfigDict(frozen=True)

    sequence: int
    source: str


def claims_of(index: ReplicaMetadata | None) -> dict[str, Claim]:
    """The furthest sequence the index says each generation reached: its shipped position, its snapshots."""
    claims: dict[str, Claim] = {}

    def claim(generation: str, sequence: int, source: str) -> None:
        if generation not in claims or sequence > claims[generation].sequence:
            claims[generation] = Claim(sequence=sequence, source=source)

    if index is None:
        return claims
    for snapshot in index.snapshots:
        claim(snapshot.generation, snapshot.sequence, f"{METADATA_KEY} records snapshot {snapshot.key}")
    if index.current_generation is not None and index.latest_wal_sequence is not None:
        latest = index.latest_wal_sequence
        claim(index.current_generation, latest, f"{METADATA_KEY} records sequence {latest} as shipped")
    return claims


def is_walship_key(key: str) -> bool:
    """A key walship (or the original design it grows from) writes; older walships' ``staging/`` included."""
    return (
        key in (METADATA_KEY, LEASE_KEY)
        or key.startswith("staging/")
        or any(parse(key) is not None for parse in _KEY_PARSERS)
    )


_KEY_PARSERS = (parse_snapshot_key, parse_segment_key, parse_original_snapshot_key, parse_original_wal_key)
