"""The S3 backend's versions, for ``S3Store``: the bucket's protection,
versions listed and deleted, locks read.

S3 lists a page's versions and delete markers as two lists; a key's entries
are merged back newest first, a version before a marker of the same second
(storage keeps times to the second, so their order within it is unknown).
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol, cast

import botocore.exceptions

from walship.storage._protocol import DELETE_BATCH_LIMIT
from walship.storage._versions import BucketProtection, LockMode, ObjectVersion, VersionRefusal

__all__ = ["Bucket", "bucket_protection", "delete_versions", "list_versions", "stamp", "version_lock"]

_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound", "NoSuchObjectLockConfiguration"}
_DENIED = {"AccessDenied", "403", "NotImplemented", "MethodNotAllowed"}


class Bucket(Protocol):
    """What these need of ``S3Store`` (which calls them, so they cannot import it)."""

    client: Any
    bucket: str
    prefix: str
    list_page_size: int

    def full(self, key: str) -> str: ...

    def errors(self, operation: str, key: str) -> AbstractContextManager[None]: ...


def bucket_protection(store: Bucket) -> BucketProtection:
    """Versioning and the default lock, each ``None``/unknown where the credential may not read it."""
    try:
        versioning = store.client.get_bucket_versioning(Bucket=store.bucket).get("Status") or "Off"
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in _DENIED:
            return BucketProtection(versioning=None, lock_known=False)
        _raise(store, "get bucket versioning", exc)
    try:
        config = store.client.get_object_lock_configuration(Bucket=store.bucket)["ObjectLockConfiguration"]
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in _NO_LOCK:
            return BucketProtection(versioning=versioning)
        if _code(exc) in _DENIED:
            return BucketProtection(versioning=versioning, lock_known=False)
        _raise(store, "get object lock configuration", exc)
    rule = config.get("Rule", {}).get("DefaultRetention", {})
    mode = rule.get("Mode")
    if config.get("ObjectLockEnabled") != "Enabled" or mode is None:
        return BucketProtection(versioning=versioning)
    days = rule.get("Days") or 365 * rule.get("Years", 0)
    return BucketProtection(versioning=versioning, lock_mode=mode, lock_days=days)


def list_versions(store: Bucket, prefix: str = "") -> Iterator[Sequence[ObjectVersion]]:
    """Each key under ``prefix`` (relative to the store) with its versions and markers, newest first."""
    paginator = store.client.get_paginator("list_object_versions")
    key: str | None = None
    entries: list[ObjectVersion] = []
    with store.errors("list object versions", prefix or "/"):
        pages = paginator.paginate(
            Bucket=store.bucket, Prefix=store.full(prefix), PaginationConfig={"PageSize": store.list_page_size}
        )
        for page in pages:
            found = [_version(store, item, marker=False) for item in page.get("Versions", [])]
            found += [_version(store, item, marker=True) for item in page.get("DeleteMarkers", [])]
            found.sort(key=lambda version: version.key)  # stable: versions before markers, each newest first
            for version in found:
                if version.key != key:
                    if entries:
                        yield _newest_first(entries)
                    key, entries = version.key, []
                entries.append(version)
    if entries:
        yield _newest_first(entries)


def delete_versions(store: Bucket, versions: Sequence[ObjectVersion]) -> Sequence[VersionRefusal]:
    """Delete each version for good (never placing a delete marker); what storage refused comes back."""
    refused: list[VersionRefusal] = []
    for start in range(0, len(versions), DELETE_BATCH_LIMIT):
        batch = versions[start : start + DELETE_BATCH_LIMIT]
        with store.errors("delete object versions", batch[0].key):
            response = store.client.delete_objects(
                Bucket=store.bucket,
                Delete={
                    "Objects": [{"Key": store.full(v.key), "VersionId": v.version_id} for v in batch],
                    "Quiet": True,
                },
            )
        # Some servers leave the version out of an error: it is then the next one asked for under that key.
        unmatched: dict[str, list[str]] = {}
        for version in batch:
            unmatched.setdefault(version.key, []).append(version.version_id)
        for error in response.get("Errors", []):
            key = error.get("Key", "")[len(store.prefix) :]
            version_id = error.get("VersionId") or (unmatched.get(key) or [""])[0]
            if version_id in unmatched.get(key, []):
                unmatched[key].remove(version_id)
            refused.append(
                VersionRefusal(
                    key=key, version_id=version_id, code=error.get("Code", ""), message=error.get("Message", "")
                )
            )
    return refused


def version_lock(store: Bucket, key: str, version_id: str | None) -> tuple[LockMode | None, datetime | None]:
    args: dict[str, Any] = {"Bucket": store.bucket, "Key": store.full(key)}
    if version_id is not None:
        args["VersionId"] = version_id
    with store.errors("head object", key):
        response = store.client.head_object(**args)
    return cast("LockMode | None", response.get("ObjectLockMode")), response.get("ObjectLockRetainUntilDate")


def _version(store: Bucket, item: Mapping[str, Any], *, marker: bool) -> ObjectVersion:
    return ObjectVersion(
        key=item["Key"][len(store.prefix) :],
        version_id=item.get("VersionId") or "null",
        last_modified=item["LastModified"],
        size=item.get("Size", 0),
        etag=str(item.get("ETag", "")).strip('"'),
        delete_marker=marker,
    )


def _newest_first(entries: list[ObjectVersion]) -> list[ObjectVersion]:
    return sorted(entries, key=lambda version: version.last_modified, reverse=True)  # stable on ties


def _code(exc: botocore.exceptions.ClientError) -> str:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code") or status)


def _raise(store: Bucket, operation: str, exc: botocore.exceptions.ClientError) -> NoReturn:
    """``exc`` as the typed error ``S3Store.errors`` makes of it."""
    with store.errors(operation, ""):
        raise exc
    raise AssertionError("S3Store.errors translates every ClientError")


def stamp(at: datetime) -> str:
    """A time as the view names it: UTC, to the second."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
