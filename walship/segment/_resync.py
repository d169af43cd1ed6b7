"""A resync segment's body: the pages that differ from the replica, written and applied.

The body (before the object's envelope) is a run of records, one per page in
ascending page order: a 4-byte big-endian page number, then the page. Page 1
is always among them: it holds the header, and a snapshot copied with
SQLite's backup API may differ there from the database it was copied from.
"""

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from walship.errors import ChecksumMismatchError, CorruptObjectError
from walship.resync import DIGEST_SIZE, PageChanges, PageMap, StateHasher, page_digest
from walship.segment._models import ResyncSegment

__all__ = ["ResyncPages", "apply_resync", "restored_state", "write_resync"]

_PAGE_NUMBER = 4
_READ_BYTES = 1 << 20


class ResyncPages(NamedTuple):
    """What a resync wrote: its changes to the map, the new state's digest, and the raw bytes written."""

    changes: PageChanges
    state: str
    raw_size: int


def write_resync(
    blocks: Iterable[bytes | bytearray | memoryview],
    page_size: int,
    page_count: int,
    replica: PageMap,
    write: Callable[[bytes], object],
) -> ResyncPages:
    """Compare every page of one consistent state (``blocks``, in page order) with ``replica``;
    hand ``write`` a record for each page that differs."""
    if page_size != replica.page_size:
        raise ValueError(f"page size {page_size} differs from the map's {replica.page_size}")
    state = StateHasher(page_size, page_count)
    changed: dict[int, bytes] = {}
    raw_size = 0
    page = 0
    for block in blocks:
        view = memoryview(block)
        count = len(view) // page_size
        known = replica.read(page + 1, count)  # the map's digests of this block's pages (fewer past its end)
        for n in range(count):
            page += 1
            image = view[n * page_size : (n + 1) * page_size]
            digest = page_digest(image)
            state.update(digest)
            if page == 1 or known[n * DIGEST_SIZE : (n + 1) * DIGEST_SIZE] != digest:
                changed[page] = digest
                write(page.to_bytes(_PAGE_NUMBER, "big") + bytes(image))
                raw_size += _PAGE_NUMBER + page_size
    if page != page_count:
        raise CorruptObjectError(f"resync: read {page} pages of a state of {page_count}")
    changes = PageChanges(page_count, min(page_count, replica.page_count), changed)
    return ResyncPages(changes, state.hexdigest(), raw_size)


def apply_resync(raw_path: Path, info: ResyncSegment, database: BinaryIO) -> None:
    """Write a resync's pages into ``database`` (open r+b), then prove the whole state is the one it records."""
    record = _PAGE_NUMBER + info.page_size
    previous = 0
    written = 0
    with raw_path.open("rb") as raw:
        while chunk := raw.read(record):
            if len(chunk) != record:
                raise CorruptObjectError(f"verify {info.key}: its body ends inside a page record")
            page = int.from_bytes(chunk[:_PAGE_NUMBER], "big")
            if not previous < page <= info.db_size_pages:
                raise CorruptObjectError(f"verify {info.key}: page {page} out of order or past its page count")
            database.seek((page - 1) * info.page_size)
            database.write(chunk[_PAGE_NUMBER:])
            previous, written = page, written + 1
    if written != info.pages:
        raise CorruptObjectError(f"verify {info.key}: {written} pages, recorded {info.pages}")
    database.truncate(info.db_size_pages * info.page_size)
    database.flush()
    if restored_state(database, info.page_size, info.db_size_pages) != info.state_digest:
        raise ChecksumMismatchError(
            f"verify {info.key}: the restored database is not the state this resync segment records "
            "(the shipper's page digest map drifted from the replica)"
        )


def restored_state(database: BinaryIO, page_size: int, page_count: int) -> str:
    """The state digest of the first ``page_count`` pages of a database file being restored."""
    per_read = max(1, _READ_BYTES // page_size) * page_size
    state = StateHasher(page_size, page_count)
    database.seek(0)
    left = page_count * page_size
    while left:
        block = database.read(min(per_read, left))
        if not block:
            block = bytes(min(per_read, left))  # past the end of the file: zeros, as SQLite reads a hole
        elif len(block) % page_size:
            block += bytes(page_size - len(block) % page_size)
        view = memoryview(block)
        for at in range(0, len(view), page_size):
            state.update(page_digest(view[at : at + page_size]))
        left -= len(block)
    return state.hexdigest()
