"""Resync: continue a generation after a gap by shipping only the pages that changed.

The shipper keeps, in its spool, a digest of every page as the replica holds
it at the cursor (``PageMapStore``, updated with each captured segment). When
continuity cannot be proven but the database is the same file, a consistent
copy is compared with that map page by page, and the pages that differ go up
as a *resync segment* in the same generation (``walship.segment.write_resync``).
Its object records the digest of the whole state it produces, and restore
checks the restored file against it (``walship.segment.apply_resync``): a map
that drifted shows up as a failed check naming the segment, never as a
different database.
"""

from walship.resync._digest import (
    DIGEST_SIZE,
    FrameDigester,
    PageChanges,
    StateHasher,
    digest_blocks,
    digest_file,
    page_digest,
    state_digest,
    zero_digest,
)
from walship.resync._map import PageMap, PageMapStore

__all__ = [
    "DIGEST_SIZE",
    "FrameDigester",
    "PageChanges",
    "PageMap",
    "PageMapStore",
    "StateHasher",
    "digest_blocks",
    "digest_file",
    "page_digest",
    "state_digest",
    "zero_digest",
]
