"""Retention on a versioned bucket: what goes is every version of a key, and what object lock holds stays.

Deleting a key of a versioned bucket only hides it behind a delete marker:
the bytes stay, and so does the cost. Retention deletes each version for
good instead, which a version under object lock refuses until its
retain-until date. Planning estimates those dates from the bucket's default
retention (no request per object) and keeps a whole generation's planned
keys while any of them is locked: lock dates follow write order, so a
generation's snapshot is freed before its segments, and deleting it first
would leave segments nothing restores. What applying finds locked anyway
(a lock of its own, a default set later) is reported with its date, never a
failed run.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime

from walship.layout import generation_of
from walship.retention._plan import RetentionPlan
from walship.storage import BucketProtection, ObjectVersion

__all__ = ["hold_locked"]


def hold_locked(
    plan: RetentionPlan,
    versions: Mapping[str, Sequence[ObjectVersion]],
    protection: BucketProtection,
    now: datetime,
) -> RetentionPlan:
    """``plan`` for a versioned bucket: the versions each deleted key has, and the keys object lock holds."""
    planned = plan.delete_keys
    locked_until: dict[str, datetime] = {}
    for key in planned:
        generation = generation_of(key) or key
        for version in versions.get(key, ()):
            until = None if version.delete_marker else protection.default_until(version.last_modified)
            if until is not None and until > now:
                locked_until[generation] = max(until, locked_until.get(generation, until))
    held = {key: locked_until[g] for key in planned if (g := generation_of(key) or key) in locked_until}
    return plan.model_copy(
        update={
            "versioned": True,
            "held": held,
            "versions": {key: tuple(versions.get(key, ())) for key in planned if key not in held},
        }
    )
