"""S3 replica URLs, ``s3://bucket/prefix[?endpoint=URL][&versions-at=TIME]``: the S3 backend's entry, free of botocore.

``versions-at`` names the replica as it was at TIME, read from the bucket's
object versions (``walship restore|status|verify --versions-at``).

botocore takes about 0.3 s to import, which parsing a URL (a run's name, a
fleet's plan) need not pay: the store's module is imported when one opens.
"""

import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from walship.errors import UsageError
from walship.storage._credentials import StorageCredentials
from walship.storage._protocol import ObjectStore
from walship.storage._url import ReplicaURL

__all__ = ["S3URL"]

# Bucket naming rules from the S3 user guide ("General purpose bucket naming
# rules"): 3-63 characters, lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3URL(ReplicaURL):
    """A bucket, a key prefix in it, and the endpoint of an S3-compatible server (else AWS's, or botocore's chain)."""

    example = "s3://bucket/prefix"

    bucket: str
    endpoint: str | None = None
    versions_at: datetime | None = None

    @classmethod
    def parse(cls, url: str) -> "S3URL":
        parts = urlsplit(url)
        if not _BUCKET.match(parts.netloc):
            raise UsageError(
                f"replica URL {url!r} has an invalid bucket name {parts.netloc!r}: "
                "use 3-63 lowercase letters, digits, dots or hyphens, as in s3://bucket/prefix"
            )
        params = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(params) - {"endpoint", "versions-at"})
        if unknown:
            raise UsageError(
                f"replica URL {url!r} has unknown parameter(s) {', '.join(unknown)}: "
                "only endpoint= and versions-at= are known"
            )
        endpoint = params.get("endpoint", [None])[-1]
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            raise UsageError(f"replica URL {url!r}: endpoint must be an http:// or https:// URL")
        prefix = parts.path.strip("/")
        if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
            raise UsageError(f"replica URL {url!r} has an invalid prefix {prefix!r}: use plain path segments")
        at = params.get("versions-at", [None])[-1]
        return cls(
            scheme="s3",
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            versions_at=_time(url, at) if at is not None else None,
        )

    def open(self, credentials: StorageCredentials | None = None) -> ObjectStore:
        from walship.storage._s3 import S3Store  # noqa: PLC0415 - see the module docstring

        store = S3Store(self.bucket, self.prefix, endpoint=self.endpoint, credentials=credentials)
        if self.versions_at is None:
            return store
        from walship.storage._s3_view import S3VersionsView  # noqa: PLC0415 - see the module docstring

        return S3VersionsView.of(store, self.versions_at)

    def at(self, when: datetime) -> "S3URL":
        return self.model_copy(update={"versions_at": when.astimezone(UTC)})

    @property
    def read_only(self) -> bool:
        return self.versions_at is not None

    def shared_root(self) -> "S3URL":
        return self.model_copy(update={"prefix": ""})

    @property
    def name(self) -> str:
        return super().name or self.bucket

    def __str__(self) -> str:
        query = f"?endpoint={self.endpoint}" if self.endpoint else ""
        if self.versions_at is not None:
            query += f"{'&' if query else '?'}versions-at={self.versions_at:%Y-%m-%dT%H:%M:%S.%fZ}"
        return f"s3://{self.bucket}/{self.prefix}{query}"


def _time(url: str, text: str) -> datetime:
    try:
        # parse_qs turned a "+hh:mm" zone into " hh:mm".
        value = datetime.fromisoformat(text.replace(" ", "+"))
    except ValueError:
        raise UsageError(
            f"replica URL {url!r}: versions-at={text!r} is not an ISO 8601 time: use e.g. 2026-11-24T08:00:00Z"
        ) from None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
