"""A segment's description, in the two places it is stored.

The object's own end holds it (a skippable frame, ``walship.trailer``): the
source of truth, read with the bytes it describes, so a restore needs no
HEAD. Its user metadata holds the same fields (``walship-*``): a shortcut
for readers that want one segment's description without its bytes (status,
the newest capture time), and the only description of segments written
before objects described themselves.
"""

import json

from pydantic import ValidationError

from walship.catalog import from_metadata, to_metadata
from walship.errors import CorruptObjectError
from walship.layout import is_resync_key
from walship.models import ObjectInfo
from walship.segment._models import ResyncSegment, WalSegment, parse_segment
from walship.trailer import format_description, parse_description

__all__ = ["FORMAT", "description_trailer", "from_head", "from_trailer", "segment_metadata"]

FORMAT = 1  # of the description frame; a reader refuses a newer one (it may mean what this one cannot check)
_TAG = b"wseg"


def segment_metadata(segment: WalSegment | ResyncSegment) -> dict[str, str]:
    """User metadata stored with a segment object."""
    # A WAL segment's metadata stays as it always was: readers default its kind.
    return to_metadata(segment, exclude={"kind"} if segment.kind == "wal" else set())


def from_head(obj: ObjectInfo) -> WalSegment | ResyncSegment:
    """A segment's description from its user metadata (a HEAD), checked against the object it came with."""
    try:
        segment = parse_segment(from_metadata(obj.metadata))
    except ValidationError as exc:
        raise CorruptObjectError(
            f"segment {obj.key} has missing or bad metadata: {exc.error_count()} problem(s)"
        ) from exc
    if segment.key != obj.key or segment.compressed_size != obj.size:
        raise CorruptObjectError(f"segment {obj.key}: its metadata does not describe this object")
    return segment


def description_trailer(segment: WalSegment | ResyncSegment) -> bytes:
    """The frame that ends a segment object and describes it (its stored size aside: that is the object's)."""
    fields = segment.model_dump(mode="json", exclude={"compressed_size"})
    body = json.dumps({"format": FORMAT, **fields}, separators=(",", ":"), sort_keys=True).encode()
    return format_description(_TAG, body)


def from_trailer(tail: bytes, key: str) -> WalSegment | ResyncSegment | None:
    """The description a segment object's end (``tail``) carries; None when it carries none (an older object)."""
    body = parse_description(tail, _TAG)
    if body is None:
        return None
    try:
        fields = json.loads(body)
        version = fields.pop("format")
    except (ValueError, AttributeError, KeyError) as exc:
        raise CorruptObjectError(f"verify {key}: the description at its end is not readable") from exc
    if version != FORMAT:
        raise CorruptObjectError(
            f"segment {key} is described in format {version!r}, which this walship cannot read: upgrade walship"
        )
    try:
        segment = parse_segment(fields)
    except ValidationError as exc:
        raise CorruptObjectError(
            f"verify {key}: the description at its end is bad: {exc.error_count()} problem(s)"
        ) from exc
    if segment.key != key:
        named_as = "resync" if is_resync_key(key) else "wal"
        raise CorruptObjectError(
            f"segment {key} describes itself as {segment.key} ({segment.kind}, named as {named_as}): "
            "it is stored under another object's key"
        )
    return segment
