"""``S3VersionsView``: an S3 replica as it was at a time, read from object versions."""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from walship.errors import NotFoundError, PermanentStorageError, UsageError
from walship.models import ObjectInfo
from walship.storage._s3 import S3Store
from walship.storage._s3_versions import bucket_protection, list_versions, stamp, version_lock
from walship.storage._versions import LockMode, ObjectVersion, VersionRefusal, newest_before

__all__ = ["S3VersionsView"]


class S3VersionsView(S3Store):
    """A replica read as it was at ``at``: each key's newest version written by then, delete markers
    honoured, everything written later ignored. Read-only: a write is refused."""

    read_only = True
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
        return f"s3://{self.bucket}/{self.prefix} as at {stamp(self.at)}"

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
                raise NotFoundError(f"s3: get object s3://{self.bucket}/{self.full(key)}: none at {stamp(self.at)}")
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
            f"s3: put object s3://{self.bucket}/{self.full(key)}: the replica is read as at {stamp(self.at)} "
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
