"""Thin Prefect tasks over walship's core: open storage, call one function, return a small model.

None of them carries database bytes: they pass paths, keys and pydantic
models, and none caches or persists its result (``NO_CACHE``, no result
persistence), because every one either has side effects or large inputs.
"""

from tasks._retry import with_retry_policy
from tasks.restore import list_snapshots, restore_snapshot
from tasks.ship import acquire_lease, record_position, release_lease, upload_spool
from tasks.snapshot import check_replica, compress, take_snapshot, update_metadata, upload

__all__ = [
    "acquire_lease",
    "check_replica",
    "compress",
    "list_snapshots",
    "record_position",
    "release_lease",
    "restore_snapshot",
    "take_snapshot",
    "update_metadata",
    "upload",
    "upload_spool",
    "with_retry_policy",
]
