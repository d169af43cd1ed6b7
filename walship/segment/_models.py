"""What a segment is: ``WalSegment`` (committed WAL frames) or ``ResyncSegment`` (the pages a gap changed).

Both take their place in a generation's sequence and end at a WAL position
(``WalPoint``) that the next segment continues from. Their key follows from
what they are, so a description can never name another object.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, model_validator

from walship.layout import format_resync_key, format_segment_key

__all__ = ["ResyncSegment", "Segment", "WalPoint", "WalSegment", "parse_segment"]


class WalPoint(BaseModel):
    """A place in a WAL lineage: the WAL's salts, a byte offset, and SQLite's running checksum there."""

    model_config = ConfigDict(frozen=True)

    salt1: int
    salt2: int
    offset: int
    checksum1: int
    checksum2: int


class _Segment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    generation: str
    sequence: int = Field(ge=1)
    page_size: int
    db_size_pages: int = Field(description="the database's page count once the segment is applied")
    # The WAL position the next segment continues from.
    salt1: int
    salt2: int
    end_offset: int
    checksum_end1: int
    checksum_end2: int
    committed_after: datetime = Field(description="the previous capture: every commit here came later")
    captured_at: datetime = Field(description="every commit made before this moment is here or earlier")
    raw_size: int
    sha256: str = Field(description="of the raw bytes")
    compressed_size: int = Field(default=0, description="the stored object's size (sealed)")
    level: int = 0
    # How the object is stored (walship.envelope); objects older than the envelope are plain zstd.
    envelope: str = "zstd"

    @model_validator(mode="before")
    @classmethod
    def _older_descriptions(cls, data: Any) -> Any:
        """Descriptions spooled or stored by an older walship: a ``key`` given must be the segment's own."""
        if not isinstance(data, dict):
            return data
        fields = cls._legacy(dict(data))  # the caller's stays as it was
        given = fields.pop("key", None)
        try:
            own = cls._key_of(str(fields["generation"]), int(fields["sequence"]))
        except (KeyError, TypeError, ValueError):
            return fields  # the missing or bad fields are reported by validation
        if given is not None and given != own:
            raise ValueError(f"the description names {given}, not {own}")
        return fields

    @classmethod
    def _legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @classmethod
    def _key_of(cls, generation: str, sequence: int) -> str:
        raise NotImplementedError

    @property
    def key(self) -> str:
        return self._key_of(self.generation, self.sequence)

    @property
    def end(self) -> WalPoint:
        return WalPoint(
            salt1=self.salt1,
            salt2=self.salt2,
            offset=self.end_offset,
            checksum1=self.checksum_end1,
            checksum2=self.checksum_end2,
        )


class WalSegment(_Segment):
    """Whole committed transactions copied verbatim from the WAL (frame headers and pages, no WAL header)."""

    kind: Literal["wal"] = "wal"
    big_endian: bool
    start_offset: int
    checksum_start1: int
    checksum_start2: int
    frames: int
    commits: int
    wal_restarted: bool = Field(description="first segment of a WAL that restarted after our checkpoint")

    @classmethod
    def _key_of(cls, generation: str, sequence: int) -> str:
        return format_segment_key(generation, sequence)

    @classmethod
    def _legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        data.pop("state_digest", None)  # an older walship's model carried it, empty, on every segment
        return data

    @property
    def start(self) -> WalPoint:
        return WalPoint(
            salt1=self.salt1,
            salt2=self.salt2,
            offset=self.start_offset,
            checksum1=self.checksum_start1,
            checksum2=self.checksum_start2,
        )


class ResyncSegment(_Segment):
    """The pages that differ between the replica's state and the database's, after a gap nobody watched.

    Its WAL position is the one the database's WAL stood at when the state
    was taken; it continues no WAL itself.
    """

    kind: Literal["resync"]
    pages: int = Field(description="page records in the body")
    state_digest: str = Field(description="the digest of the whole state it produces (walship.resync)")

    @classmethod
    def _key_of(cls, generation: str, sequence: int) -> str:
        return format_resync_key(generation, sequence)

    @classmethod
    def _legacy(cls, data: dict[str, Any]) -> dict[str, Any]:
        """An older walship described a resync with a WAL segment's fields: ``frames`` counted its pages."""
        if "frames" in data and "pages" not in data:
            data["pages"] = data.pop("frames")
        for field in ("big_endian", "start_offset", "checksum_start1", "checksum_start2", "commits", "wal_restarted"):
            data.pop(field, None)
        return data

    @property
    def commits(self) -> int:
        return 1  # one state

    @property
    def frames(self) -> int:
        return self.pages


def _kind(value: Any) -> str:
    # WAL segments were described without a kind before resyncs existed.
    if isinstance(value, dict):
        return str(value.get("kind", "wal"))
    return str(getattr(value, "kind", "wal"))


Segment = Annotated[Annotated[WalSegment, Tag("wal")] | Annotated[ResyncSegment, Tag("resync")], Discriminator(_kind)]

_SEGMENT: TypeAdapter[WalSegment | ResyncSegment] = TypeAdapter(Segment)


def parse_segment(fields: dict[str, Any]) -> WalSegment | ResyncSegment:
    """A segment from its description's fields (pydantic's ``ValidationError`` when they do not describe one)."""
    return _SEGMENT.validate_python(fields)
