"""The S3 backend's versions: the bucket's protection, versions listed and deleted, locks read, and
``S3VersionsView``, the replica as it was at a time.

S3 lists a page's versions and delete markers as two lists; a key's entries
are merged back newest first, a version before a marker of the same second
(storage keeps times to the second, so their order within it is unknown).
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, cast

import botocore.exceptions

from walship.errors import NotFoundError, PermanentStorageError, UsageError
from walship.models import ObjectInfo
from walship.storage._protocol import DELETE_BATCH_LIMIT
from walship.storage._s3 import S3Store
from walship.storage._versions import BucketProtection, LockMode, ObjectVersion, VersionRefusal, newest_before

__all__ = ["S3VersionsView", "bucket_protection", "delete_versions", "list_versions", "version_lock"]

_NO_LOCK = {"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound", "NoSuchObjectLockConfiguration"}
_DENIED = {"AccessDenied", "403", "NotImplemented", "MethodNotAllowed"}


def bucket_protection(store: S3Store) -> BucketProtection:
    """Versioning and the default lock, each ``None``/unknown where the credential may not read it."""
    try:
        status = store.client.get_bucket_versioning(Bucket=store.bucket).get("Status") or "Off"
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in _DENIED:
            return BucketProtection(versioning=None, lock_known=False)
        _raise(store, "get bucket versioning", exc)
    versioning = cast("Any", status)
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


def list_versions(store: S3Store, prefix: str = "") -> Iterator[Sequence[ObjectVersion]]:
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


def delete_versions(store: S3Store, versions: Sequence[ObjectVersion]) -> Sequence[VersionRefusal]:
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


def version_lock(store: S3Store, key: str, version_id: str | None) -> tuple[LockMode | None, datetime | None]:
    args: dict[str, Any] = {"Bucket": store.bucket, "Key": store.full(key)}
    if version_id is not None:
        args["VersionId"] = version_id
    with store.errors("head object", key):
        response = store.client.head_object(**args)
    return cast("LockMode | None", response.get("ObjectLockMode")), response.get("ObjectLockRetainUntilDate")


def _version(store: S3Store, item: Mapping[str, Any], *, marker: bool) -> ObjectVersion:
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


def _raise(store: S3Store, operation: str, exc: botocore.exceptions.ClientError) -> NoReturn:
    """``exc`` as the typed error ``S3Store.errors`` makes of it."""
    with store.errors(operation, ""):
        raise exc
    raise AssertionError("S3Store.errors translates every ClientError")


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class S3VersionsView(S3Store):
    """A replica read as it was at ``at``: each key's newest version written by then, delete markers
    honoured, everything written later ignored. Read-only: a write is refused."""

    at: datetime
    _chosen: dict[str, ObjectVersion]
    _checked: list[bool]

    @classmethod
    def of(cls, store: S3Store, at: datetime) -> "S3VersionsView":
        view = cls.__new__(cls)
        view.__dict__.update(vars(store))
        view.at = at.astimezone(UTC)
        view._chosen = {}  # by full key, shared by every view of one bucket made with under()
        view._checked = [False]
        return view

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} as at {_stamp(self.at)}"

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._require_versioning()
        for versions in list_versions(self, prefix):
            chosen = newest_before(versions, self.at)
            if chosen is None:
                continue
            self._chosen[self.full(chosen.key)] = chosen
            yield ObjectInfo(key=chosen.key, size=chosen.size, etag=chosen.etag, last_modified=chosen.last_modified)

    def read_arguments(self, key: str) -> dict[str, Any]:
        chosen = self._chosen.get(self.full(key))
        if chosen is None:
            self._require_versioning()
            for versions in list_versions(self, key):
                if versions[0].key == key:
                    chosen = newest_before(versions, self.at)
                    break
            if chosen is None:
                raise NotFoundError(f"s3: get object s3://{self.bucket}/{self.full(key)}: none at {_stamp(self.at)}")
            self._chosen[self.full(key)] = chosen
        return {"VersionId": chosen.version_id}

    def version_lock(self, key: str, version_id: str | None = None) -> tuple[LockMode | None, datetime | None]:
        return version_lock(self, key, version_id or self.read_arguments(key)["VersionId"])

    def _require_versioning(self) -> None:
        if self._checked[0]:
            return
        if bucket_protection(self).versioning == "Off":
            raise UsageError(
                f"--versions-at: bucket {self.bucket!r} keeps no object versions (versioning is off), "
                "so only its current objects exist: read it without --versions-at"
            )
        self._checked[0] = True

    def _refuse(self, key: str) -> NoReturn:
        raise PermanentStorageError(
            f"s3: put object s3://{self.bucket}/{self.full(key)}: the replica is read as at {_stamp(self.at)} "
            "(--versions-at) and is never written"
        )

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        self._refuse(key)

    def put_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, sha256: str | None = None
    ) -> ObjectInfo:
        self._refuse(key)

    def put_chunks(
        self, key: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str], size_hint: int | None = None
    ) -> ObjectInfo:
        self._refuse(key)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        self._refuse(key)

    def delete(self, keys: Sequence[str]) -> None:
        if keys:
            self._refuse(keys[0])

    def delete_versions(self, versions: Sequence[ObjectVersion]) -> Sequence[VersionRefusal]:
        if versions:
            self._refuse(versions[0].key)
        return []
