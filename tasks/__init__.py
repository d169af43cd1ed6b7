"""Thin Prefect tasks over walship's core: open storage, call one function, return a small model.

None of them carries database bytes: they pass paths, keys and pydantic
models, and none caches or persists its result (``NO_CACHE``, no result
persistence), because every one either has side effects or large inputs.

``from tasks import upload`` imports only the module that defines it (PEP 562
``__getattr__``): a flow run's process then loads the tasks its flow uses, not
every task's part of the core (a restore needs neither the snapshot's SQLite
and zstd code nor the shipper's).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks._progress import finish_progress, start_progress
    from tasks._retry import with_retry_policy
    from tasks.restore import describe_generations, read_snapshot, restore_original, restore_snapshot
    from tasks.retention import apply_retention, plan_retention
    from tasks.ship import acquire_lease, record_position, release_lease, upload_spool
    from tasks.snapshot import check_replica, stream_snapshot, update_metadata
    from tasks.standby import catch_up_copy
    from tasks.verify import check_index, check_lock, restore_drill

_HOME = {
    "tasks._progress": ("finish_progress", "start_progress"),
    "tasks._retry": ("with_retry_policy",),
    "tasks.restore": ("describe_generations", "read_snapshot", "restore_original", "restore_snapshot"),
    "tasks.retention": ("apply_retention", "plan_retention"),
    "tasks.ship": ("acquire_lease", "record_position", "release_lease", "upload_spool"),
    "tasks.snapshot": ("check_replica", "stream_snapshot", "update_metadata"),
    "tasks.standby": ("catch_up_copy",),
    "tasks.verify": ("check_index", "check_lock", "restore_drill"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = [
    "acquire_lease",
    "apply_retention",
    "catch_up_copy",
    "check_index",
    "check_lock",
    "check_replica",
    "describe_generations",
    "finish_progress",
    "plan_retention",
    "read_snapshot",
    "record_position",
    "release_lease",
    "restore_drill",
    "restore_original",
    "restore_snapshot",
    "start_progress",
    "stream_snapshot",
    "update_metadata",
    "upload_spool",
    "with_retry_policy",
]


def __getattr__(name: str) -> Any:
    try:
        module = _MODULE_OF[name]
    except KeyError:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)
