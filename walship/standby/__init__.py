"""A live standby: a database others read while walship applies a replica's segments to it, one atomic step each.

``Standby`` applies pages as one commit of the standby's own WAL under
SQLite's write lock (docs/ARCHITECTURE.md, "A standby readers can trust");
``KeptCopy`` keeps a restored copy at a replica's position; ``catch_up``
(``restore --delta``) and ``follow`` bring it there and keep it there;
``follow_window`` and ``catch_up_alone`` do so holding the copy's applier lock.
"""

from walship.standby._apply import CHECKPOINT_FRAMES, Applied, Standby
from walship.standby._catch_up import CaughtUp, catch_up
from walship.standby._copy import KeptCopy
from walship.standby._follow import follow
from walship.standby._overlay import Overlay
from walship.standby._pages import SegmentPages, segment_pages
from walship.standby._window import (
    CopyLock,
    FollowerIdentity,
    FollowReport,
    catch_up_alone,
    follow_window,
    hold_copy,
    lock_path,
)

__all__ = [
    "CHECKPOINT_FRAMES",
    "Applied",
    "CaughtUp",
    "CopyLock",
    "FollowReport",
    "FollowerIdentity",
    "KeptCopy",
    "Overlay",
    "SegmentPages",
    "Standby",
    "catch_up",
    "catch_up_alone",
    "follow",
    "follow_window",
    "hold_copy",
    "lock_path",
    "segment_pages",
]
