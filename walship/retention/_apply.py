"""Apply a retention plan: delete in batches, confirm with a listing, update the index.

A delete counts as done only when a listing afterwards no longer shows the
key: S3's DeleteObjects can fail per key inside a successful response, and a
request that times out may or may not have happened. Whatever is still
listed is reported as failed; the next run plans it again. On a versioned
bucket each version is deleted for good (walship.retention._locks), and one
that object lock keeps is reported with its retain-until date, not failed.
"""

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from walship.catalog import require_replica
from walship.errors import WalshipError
from walship.generations import describe_generations
from walship.index import current_snapshots, forget_snapshots
from walship.layout import GENERATIONS_PREFIX, generation_of, generation_prefix, parse_segment_key, parse_snapshot_key
from walship.models import ObjectInfo, SnapshotInfo
from walship.retention._locks import hold_locked
from walship.retention._plan import RetentionPlan, plan_retention
from walship.retention._policy import LEFTOVER_AGE, RetentionPolicy
from walship.storage import (
    DELETE_BATCH_LIMIT,
    LocalStore,
    ObjectStore,
    ObjectVersion,
    VersionedStore,
    leftovers_of,
    versions_of,
)

__all__ = ["RetentionReport", "RetentionResult", "apply_retention", "list_history", "newest_data", "plan_replica"]


class RetentionResult(BaseModel):
    """What an apply did; ``failed`` keys are still in storage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dry_run: bool
    planned: int
    deleted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    bytes_freed: int = 0
    # Kept by object lock (key -> retain-until): planned around, or refused by storage when applied.
    held: dict[str, datetime] = {}

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def list_history(store: ObjectStore) -> tuple[list[SnapshotInfo], list[ObjectInfo]]:
    """The snapshots and segments a plan needs, listed so no generation looks orphaned.

    Segments are listed before snapshots: a shipper uploads a generation's
    snapshot before its first segment, so every generation seen in the
    segment listing has its snapshot in the later snapshot listing.
    """
    segments = [o for o in store.list(GENERATIONS_PREFIX) if parse_segment_key(o.key) is not None]
    return current_snapshots(store), segments


def newest_data(store: ObjectStore, snapshots: Sequence[SnapshotInfo]) -> str | None:
    """The generation holding the newest data, which retention never deletes (``snapshots`` spare HEADs)."""
    newest = describe_generations(store, known=snapshots).newest
    return newest.generation if newest else None


def apply_retention(store: ObjectStore, plan: RetentionPlan, *, dry_run: bool = False) -> RetentionResult:
    """Delete what ``plan`` deletes (nothing with ``dry_run``), then drop deleted snapshots from the index."""
    keys = plan.delete_keys
    planned = len(keys) + len(plan.leftovers)
    if dry_run or not planned:
        return RetentionResult(dry_run=dry_run, planned=planned, held=plan.held)
    errors: list[str] = []
    held = dict(plan.held)
    gone_leftovers = _remove_leftovers(store, plan.leftovers, errors)
    versioned = versions_of(store)
    if plan.versioned and versioned is not None:
        held.update(_delete_versions(versioned, [v for k in keys for v in plan.versions.get(k, ())], errors))
    else:
        for start in range(0, len(keys), DELETE_BATCH_LIMIT):
            batch = keys[start : start + DELETE_BATCH_LIMIT]
            try:
                store.delete(batch)
            except WalshipError as exc:
                errors.append(str(exc))
    listed = _still_listed(store, keys, errors)
    remaining = listed - set(held)
    deleted = [k for k in keys if k not in listed]
    gone_snapshots = [k for k in deleted if parse_snapshot_key(k) is not None]
    if gone_snapshots:
        try:
            forget_snapshots(store, gone_snapshots)
        except WalshipError as exc:
            # The listing is the truth for restore; a stale index only costs HEADs.
            errors.append(f"update index: {exc}")
    sizes = plan.delete_sizes
    return RetentionResult(
        dry_run=False,
        planned=planned,
        deleted=(*deleted, *gone_leftovers),
        failed=tuple(k for k in keys if k in remaining),
        errors=tuple(errors),
        held=held,
        bytes_freed=sum(sizes[k] for k in deleted) + sum(plan.leftovers[k] for k in gone_leftovers),
    )


def _delete_versions(store: VersionedStore, versions: list[ObjectVersion], errors: list[str]) -> dict[str, datetime]:
    """Delete ``versions`` for good; those object lock keeps come back with their retain-until dates."""
    try:
        refused = store.delete_versions(versions)
    except WalshipError as exc:
        errors.append(str(exc))
        return {}
    held: dict[str, datetime] = {}
    for refusal in refused:
        try:
            _, until = store.version_lock(refusal.key, refusal.version_id)
        except WalshipError as exc:
            errors.append(f"{refusal.key}: {refusal.code} {refusal.message}; reading its lock: {exc}")
            continue
        if until is None:
            errors.append(f"delete {refusal.key} version {refusal.version_id}: {refusal.code} {refusal.message}")
        else:
            held[refusal.key] = max(until, held.get(refusal.key, until))
    return held


def _remove_leftovers(store: ObjectStore, leftovers: dict[str, int], errors: list[str]) -> tuple[str, ...]:
    """Those a live upload took up again (its flock) stay: skipped, not failed."""
    if not leftovers or not isinstance(store, LocalStore):
        return ()
    try:
        return store.remove_leftovers(sorted(leftovers))
    except WalshipError as exc:
        errors.append(str(exc))
        return ()


def _still_listed(store: ObjectStore, keys: Sequence[str], errors: list[str]) -> set[str]:
    wanted = set(keys)
    generations = {parsed.generation for k in keys if (parsed := parse_snapshot_key(k) or parse_segment_key(k))}
    listed: set[str] = set()
    try:
        for generation in sorted(generations):
            listed.update(o.key for o in store.list(generation_prefix(generation)) if o.key in wanted)
    except WalshipError as exc:
        errors.append(f"confirm deletes: {exc}")
        return wanted  # unconfirmed is not done
    return listed


def _versions_of(store: VersionedStore, keys: Sequence[str]) -> dict[str, Sequence[ObjectVersion]]:
    """Every version of ``keys``, listed generation by generation."""
    wanted = set(keys)
    found: dict[str, Sequence[ObjectVersion]] = {}
    for generation in sorted({g for k in keys if (g := generation_of(k))}):
        for versions in store.versions(generation_prefix(generation)):
            if versions and versions[0].key in wanted:
                found[versions[0].key] = versions
    return found


class RetentionReport(BaseModel):
    """The plan a retention run made and what applying it did."""

    plan: RetentionPlan
    result: RetentionResult


def plan_replica(store: ObjectStore, policy: RetentionPolicy, now: datetime) -> RetentionPlan:
    """List the replica's snapshots and segments and decide what ``policy`` keeps (never the newest data).

    Raises ``NotFoundError`` where no replica is: "deleted 0 objects" would
    hide a wrong URL."""
    snapshots, segments = list_history(store)
    if not snapshots and not segments:
        require_replica(store)
    plan = plan_retention(policy, snapshots, segments, now, newest_data(store, snapshots))
    versioned = versions_of(store)
    if versioned is not None and (protection := versioned.protection()).versioned:
        plan = hold_locked(plan, _versions_of(versioned, plan.delete_keys), protection, now)
    idle = {
        leftover.key: leftover.size
        for leftover in leftovers_of(store)
        if not leftover.in_use and now - leftover.modified >= LEFTOVER_AGE
    }
    return plan.model_copy(update={"leftovers": idle})
