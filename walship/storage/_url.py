"""Replica URLs: ``file:///absolute/dir`` or ``s3://bucket/prefix[?endpoint=URL]``."""

import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict

from walship.errors import UsageError

__all__ = ["ReplicaURL", "parse_replica_url"]

# Bucket naming rules from the S3 user guide ("General purpose bucket naming
# rules"): 3-63 characters, lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_EXAMPLES = "use file:///absolute/dir or s3://bucket/prefix"


class ReplicaURL(BaseModel):
    """A parsed replica location."""

    model_config = ConfigDict(frozen=True)

    scheme: Literal["file", "s3"]
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint: str | None = None

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        query = f"?endpoint={self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{query}"


def parse_replica_url(url: str) -> ReplicaURL:
    """Parse ``url`` or raise ``UsageError`` saying what is wrong and the fix."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return _parse_file(url, parts.netloc, parts.path, parts.query)
    if parts.scheme == "s3":
        return _parse_s3(url, parts.netloc, parts.path, parts.query)
    raise UsageError(f"replica URL {url!r} has no supported scheme: {_EXAMPLES}")


def _parse_file(url: str, netloc: str, path: str, query: str) -> ReplicaURL:
    if netloc not in ("", "localhost") or not path.startswith("/"):
        raise UsageError(f"replica URL {url!r} is not an absolute directory: use file:///absolute/dir (three slashes)")
    if query:
        raise UsageError(f"replica URL {url!r}: file:// URLs take no query parameters")
    return ReplicaURL(scheme="file", path=Path(path))


def _parse_s3(url: str, netloc: str, path: str, query: str) -> ReplicaURL:
    if not _BUCKET.match(netloc):
        raise UsageError(
            f"replica URL {url!r} has an invalid bucket name {netloc!r}: "
            "use 3-63 lowercase letters, digits, dots or hyphens, as in s3://bucket/prefix"
        )
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {"endpoint"})
    if unknown:
        raise UsageError(f"replica URL {url!r} has unknown parameter(s) {', '.join(unknown)}: only ?endpoint= is known")
    endpoint = params.get("endpoint", [None])[-1]
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise UsageError(f"replica URL {url!r}: endpoint must be an http:// or https:// URL")
    prefix = path.strip("/")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise UsageError(f"replica URL {url!r} has an invalid prefix {prefix!r}: use plain path segments")
    return ReplicaURL(scheme="s3", bucket=netloc, prefix=f"{prefix}/" if prefix else "", endpoint=endpoint)
