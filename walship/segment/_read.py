"""Reading a segment object: one GET gives its bytes and, at their end, its description."""

from typing import BinaryIO

from walship import codec
from walship.catalog import has_walship_metadata
from walship.envelope import Keyring, open_detected
from walship.errors import CorruptObjectError
from walship.segment._describe import from_head, from_trailer
from walship.segment._models import ResyncSegment, WalSegment
from walship.storage import ObjectStore
from walship.trailer import DESCRIPTION_LIMIT

__all__ = ["download_segment", "read_description"]


def download_segment(store: ObjectStore, key: str, out: BinaryIO, keys: Keyring | None) -> WalSegment | ResyncSegment:
    """Open segment ``key`` into ``out`` (its raw body) and return its description, both verified:
    the body's size and SHA-256 are the description's, and the description names this key."""
    with store.open(key) as stream:
        counted = _Counted(stream)
        opened = open_detected(counted, out, keys=keys, name=key, keep=DESCRIPTION_LIMIT)
    segment = from_trailer(opened.tail, key)
    if segment is None:
        # Written before segments described themselves (or its end is damaged): its metadata describes it.
        segment = from_head(store.head(key))
    segment = segment.model_copy(update={"compressed_size": counted.size})
    if segment.envelope != opened.envelope:
        raise CorruptObjectError(f"verify {key}: sealed as {opened.envelope}, described as {segment.envelope}")
    codec.check_decoded(
        opened.size, opened.sha256, expected_sha256=segment.sha256, expected_size=segment.raw_size, name=key
    )
    return segment


class _Counted:
    """A reader that counts what it read: the stored object's size, without a HEAD."""

    def __init__(self, source: codec.Readable) -> None:
        self._source, self.size = source, 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._source.read(size)
        self.size += len(data)
        return data


def read_description(store: ObjectStore, key: str) -> WalSegment | ResyncSegment | None:
    """Segment ``key``'s description without its body: its metadata (a HEAD), else the description at
    its plaintext end (a ranged GET). None when it has neither: walship did not write it, or it is
    encrypted and its metadata is gone."""
    head = store.head(key)
    if has_walship_metadata(head):
        return from_head(head)
    start = max(0, head.size - DESCRIPTION_LIMIT)
    with store.open(key, start=start, length=head.size - start) as stream:
        segment = from_trailer(stream.read(), key)
    return segment.model_copy(update={"compressed_size": head.size}) if segment is not None else None
