"""A live standby: a database others read while walship applies a replica's segments to it, one atomic step each.

``Standby`` applies pages as one commit of the standby's own WAL under
SQLite's write lock (docs/ARCHITECTURE.md, "A standby readers can trust");
``segment_pages`` turns a downloaded WAL segment into the pages it leaves.
"""

from walship.standby._apply import CHECKPOINT_FRAMES, Applied, Standby
from walship.standby._pages import SegmentPages, segment_pages

__all__ = ["CHECKPOINT_FRAMES", "Applied", "SegmentPages", "Standby", "segment_pages"]
