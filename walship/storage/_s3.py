"""S3 backend over botocore (boto3's core): any S3-compatible server.

Credentials come from botocore's standard chain (environment, profile,
role), or from ``StorageCredentials`` a caller resolved (a Prefect block,
outside the core); they never pass through walship's parameters or logs. The
endpoint comes from ``?endpoint=`` on the replica URL, else the credentials'
endpoint, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (read by botocore
itself); with any explicit endpoint we use path-style addressing, which every
S3-compatible server understands.
"""

import base64
import contextlib
import copy
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import botocore.exceptions
import botocore.session
import urllib3.exceptions
from botocore.config import Config

from walship.errors import (
    ConflictError,
    CorruptObjectError,
    NotFoundError,
    PermanentStorageError,
    TransientStorageError,
    WalshipError,
)
from walship.models import ObjectInfo
from walship.storage._botodata import lean_loader
from walship.storage._credentials import StorageCredentials
from walship.storage._multipart import MIN_PART_SIZE, TRANSFER_THREADS, part_size_for, put_one, upload
from walship.storage._protocol import DELETE_BATCH_LIMIT, ReadStream
from walship.storage._s3_versions import bucket_protection, delete_versions, list_versions, version_lock
from walship.storage._versions import BucketProtection, LockMode, ObjectVersion, VersionRefusal

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3Store"]

_LOADER = lean_loader()

_NOT_FOUND = {"NoSuchKey", "NotFound", "404", "NoSuchBucket"}
_CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}
# The body S3 received does not hash to what the request claims. The claim is
# computed from the bytes in memory that were sent (walship.storage._multipart),
# so they changed on the way: sending them again is the cure.
_DAMAGED_ON_THE_WAY = {"BadDigest", "XAmzContentSHA256Mismatch"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError", "ServiceUnavailable"}


class S3Store:
    """An ``ObjectStore`` over one bucket and prefix, and the ``PartSink`` of its multipart uploads."""

    # A view of a past state (walship.storage._s3_view) is; the bucket itself is not.
    read_only = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint: str | None = None,
        credentials: StorageCredentials | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        endpoint = endpoint or (credentials.endpoint if credentials else None)
        self.endpoint = endpoint
        # What a refusal tells the operator to check.
        self._credentials_hint = f"the {credentials.source}" if credentials else "the AWS credentials"
        # Tests lower this to exercise paging; S3 itself caps pages at 1,000.
        self.list_page_size = 1000
        explicit_endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            s3={"addressing_style": "path"} if explicit_endpoint else {},
            # botocore retries quick blips itself; anything that outlasts these
            # attempts surfaces as TransientStorageError for the task to retry.
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
            max_pool_connections=TRANSFER_THREADS * 2,
        )
        # A fresh botocore session per store (credentials are resolved per
        # store, and sessions are not thread-safe), sharing one data loader:
        # parsing the S3 service model cost 50 ms per store otherwise.
        # botocore alone, not boto3: boto3 adds nothing walship uses (its
        # transfer manager is replaced by _multipart.py) and 0.15 s of imports
        # to every command. The credential chain is botocore's in both.
        core = botocore.session.Session()
        core.register_component("data_loader", _LOADER)
        keys = _client_arguments(credentials)
        self.client = cast(
            "S3Client",
            core.create_client(
                "s3",
                endpoint_url=endpoint,
                config=config,
                region_name=keys.get("region_name"),
                aws_access_key_id=keys.get("aws_access_key_id"),
                aws_secret_access_key=keys.get("aws_secret_access_key"),
                aws_session_token=keys.get("aws_session_token"),
            ),
        )

    def under(self, prefix: str) -> "S3Store":
        # The client is thread-safe; it holds about 0.5 MiB, which a thousand databases shipped by one
        # process must not each pay.
        other = copy.copy(self)
        other.prefix = f"{self.prefix}{prefix}"
        return other

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def put_stream(self, key: str, stream: BinaryIO, *, metadata: Mapping[str, str] | None = None) -> ObjectInfo:
        part = part_size_for(None)
        return upload(self, key, iter(lambda: stream.read(part), b""), metadata=dict(metadata or {}))

    def put_file(
        self, key: str, path: Path, *, metadata: Mapping[str, str] | None = None, sha256: str | None = None
    ) -> ObjectInfo:
        described = dict(metadata or {})
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise PermanentStorageError(f"s3: put object {self.location}{key}: cannot read {path}: {exc}") from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            if size < MIN_PART_SIZE:
                # Read once, sent from memory: a file body is read again by
                # each of botocore's attempts, and could differ from what was
                # hashed. A small segment needs no part buffer for it.
                return put_one(self, key, handle.read(), metadata=described, sha256=sha256)
            part = part_size_for(size)
            return upload(
                self, key, iter(lambda: handle.read(part), b""), metadata=described, size_hint=size, sha256=sha256
            )

    def put_chunks(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        metadata: Mapping[str, str],
        size_hint: int | None = None,
    ) -> ObjectInfo:
        return upload(self, key, chunks, metadata=metadata, size_hint=size_hint)

    def put_bytes(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.full(key), "Body": data}
        args["Metadata"] = dict(metadata or {})
        if if_match is not None:
            args["IfMatch"] = _quoted(if_match)
        if if_none_match:
            args["IfNoneMatch"] = "*"
        try:
            with self.errors("put object", key):
                response = self.client.put_object(**args)
        except NotFoundError as exc:
            if if_match is None:
                raise
            # Some servers answer If-Match on a deleted key with 404, others
            # with 412: either way the object is not the one we read.
            raise ConflictError(f"s3: put object {self.full(key)}: object vanished since it was read") from exc
        return ObjectInfo(key=key, size=len(data), etag=_unquoted(response["ETag"]), metadata=dict(metadata or {}))

    def get_bytes(self, key: str, *, max_size: int) -> tuple[bytes, ObjectInfo]:
        with self.errors("get object", key):
            response = self.client.get_object(Bucket=self.bucket, Key=self.full(key), **self.read_arguments(key))
            with contextlib.closing(response["Body"]) as body:
                data = body.read(max_size + 1)
        if len(data) > max_size:
            raise CorruptObjectError(f"s3: get object {self.full(key)}: larger than {max_size} bytes")
        info = ObjectInfo(
            key=key,
            size=len(data),
            etag=_unquoted(response["ETag"]),
            last_modified=response["LastModified"],
            metadata=response.get("Metadata", {}),
        )
        return data, info

    @contextlib.contextmanager
    def open(self, key: str, *, start: int = 0, length: int | None = None) -> Iterator[ReadStream]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.full(key), **self.read_arguments(key)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            args["Range"] = f"bytes={start}-{end}"
        with self.errors("get object", key):
            body = self.client.get_object(**args)["Body"]
        try:
            # Errors while reading the body (a reset mid-download) are
            # translated too, so callers only ever see walship errors.
            with self.errors("read object", key):
                yield body
        finally:
            body.close()

    def head(self, key: str) -> ObjectInfo:
        with self.errors("head object", key):
            response = self.client.head_object(Bucket=self.bucket, Key=self.full(key), **self.read_arguments(key))
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=_unquoted(response["ETag"]),
            last_modified=response["LastModified"],
            metadata=response.get("Metadata", {}),
        )

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with self.errors("list objects", prefix or "/"):
            for page in paginator.paginate(
                Bucket=self.bucket, Prefix=self.full(prefix), PaginationConfig={"PageSize": self.list_page_size}
            ):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"][len(self.prefix) :],
                        size=item["Size"],
                        etag=_unquoted(item.get("ETag", "")),
                        last_modified=item["LastModified"],
                    )

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH_LIMIT):
            batch = keys[start : start + DELETE_BATCH_LIMIT]
            with self.errors("delete objects", batch[0]):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": self.full(k)} for k in batch], "Quiet": True}
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                found = (
                    f"s3: delete objects: {len(errors)} of {len(batch)} not deleted "
                    f"(first {first.get('Key')}: {first.get('Code')} {first.get('Message')})"
                )
                if all(error.get("Code") == "AccessDenied" for error in errors):
                    # Retrying cannot help: the credential may not delete (a writer's, by design).
                    raise PermanentStorageError(
                        f"{found}: access denied: check {self._credentials_hint}; deleting needs s3:DeleteObject "
                        "(the retention policy of docs/OPERATIONS.md), which a writer's credential does not have"
                    )
                raise TransientStorageError(found)

    def read_arguments(self, key: str) -> dict[str, Any]:
        """What a read of ``key`` adds to its request: the current version, here (a view names another)."""
        return {}

    # VersionedStore (walship.storage._versions), in walship.storage._s3_versions.

    def protection(self) -> BucketProtection:
        return bucket_protection(self)

    def versions(self, prefix: str = "") -> Iterator[Sequence[ObjectVersion]]:
        return list_versions(self, prefix)

    def delete_versions(self, versions: Sequence[ObjectVersion]) -> Sequence[VersionRefusal]:
        return delete_versions(self, versions)

    def version_lock(self, key: str, version_id: str | None = None) -> tuple[LockMode | None, datetime | None]:
        return version_lock(self, key, version_id)

    # The PartSink of walship.storage._multipart: every request carries the SHA-256 of its body.

    def put_whole(self, key: str, data: bytes | bytearray, *, metadata: dict[str, str], sha256: bytes) -> ObjectInfo:
        with self.errors("put object", key):
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=self.full(key),
                Body=cast(bytes, data),  # botocore takes a bytearray as it is
                Metadata=metadata,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_base64(sha256),
            )
        return ObjectInfo(key=key, size=len(data), etag=_unquoted(response["ETag"]), metadata=metadata)

    def create_upload(self, key: str, *, metadata: dict[str, str]) -> str:
        with self.errors("put object", key):
            return self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.full(key), ChecksumAlgorithm="SHA256", Metadata=metadata
            )["UploadId"]

    def put_part(self, key: str, upload: str, number: int, data: bytearray, *, sha256: bytes) -> "CompletedPartTypeDef":
        checksum = _base64(sha256)
        with self.errors("put object", key):
            response = self.client.upload_part(
                Bucket=self.bucket,
                Key=self.full(key),
                UploadId=upload,
                PartNumber=number,
                Body=cast(bytes, data),  # botocore takes a bytearray as it is
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
        return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def complete_upload(self, key: str, upload: str, parts: "Sequence[CompletedPartTypeDef]") -> None:
        with self.errors("put object", key):
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.full(key), UploadId=upload, MultipartUpload={"Parts": parts}
            )

    def abort_upload(self, key: str, upload: str) -> None:
        # NoSuchUpload: already gone.
        with contextlib.suppress(NotFoundError), self.errors("abort multipart upload", key):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.full(key), UploadId=upload)

    def full(self, key: str) -> str:
        return f"{self.prefix}{key}"

    @contextlib.contextmanager
    def errors(self, operation: str, key: str) -> Iterator[None]:
        """Translate botocore's exceptions into walship's typed errors."""
        where = f"s3: {operation} s3://{self.bucket}/{self.full(key)}"
        try:
            yield
        except WalshipError:
            raise
        except botocore.exceptions.ClientError as exc:
            raise _classify(where, exc, self.bucket, self._credentials_hint) from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise PermanentStorageError(
                f"{where}: no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            ) from exc
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError) as exc:
            raise TransientStorageError(f"{where}: {exc}") from exc
        except botocore.exceptions.ResponseStreamingError as exc:
            raise TransientStorageError(f"{where}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, ConnectionError) as exc:
            # A connection reset while a response is read can surface from urllib3 itself, unwrapped.
            raise TransientStorageError(f"{where}: {exc}") from exc
        except Exception as exc:
            # Errors of the upload threads may arrive wrapped.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, botocore.exceptions.ClientError):
                raise _classify(where, cause, self.bucket, self._credentials_hint) from exc
            if isinstance(exc, botocore.exceptions.BotoCoreError):
                raise TransientStorageError(f"{where}: {exc}") from exc
            raise


def _client_arguments(credentials: StorageCredentials | None) -> dict[str, str]:
    """botocore client arguments for what ``credentials`` sets; the rest stays botocore's chain."""
    if credentials is None:
        return {}
    arguments = {
        "aws_access_key_id": credentials.access_key_id,
        "aws_secret_access_key": credentials.secret_access_key.get_secret_value()
        if credentials.secret_access_key
        else None,
        "aws_session_token": credentials.session_token.get_secret_value() if credentials.session_token else None,
        "region_name": credentials.region,
    }
    return {name: value for name, value in arguments.items() if value}


def _classify(
    where: str, exc: botocore.exceptions.ClientError, bucket: str, credentials: str = "the AWS credentials"
) -> WalshipError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    message = error.get("Message") or code
    if code in _DAMAGED_ON_THE_WAY:
        message = "the bytes storage received are not those sent: damaged on the way"
    if code == "NoSuchBucket":
        return NotFoundError(f"{where}: bucket {bucket!r} does not exist: create it or fix the replica URL")
    if code in _NOT_FOUND or status == 404:
        return NotFoundError(f"{where}: no such object")
    if code in _CONFLICT or status in (409, 412):
        return ConflictError(f"{where}: precondition failed ({code})")
    if code in _DENIED or status in (401, 403):
        return PermanentStorageError(f"{where}: access denied ({code}): check {credentials} and the bucket policy")
    if code in _TRANSIENT or code in _DAMAGED_ON_THE_WAY or status >= 500 or status == 429:
        return TransientStorageError(f"{where}: {message} ({code or status})")
    return PermanentStorageError(f"{where}: {message} ({code or status})")


def _base64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _quoted(etag: str) -> str:
    return etag if etag.startswith('"') else f'"{etag}"'


def _unquoted(etag: str) -> str:
    return etag.strip('"')
