"""moto's S3 server behind a WSGI middleware that logs every request for bench.ship_lag.

Each request is logged with its method, bucket, key, query and the wall time
(``time.time_ns()``) when the server had written the whole response. The payload
of every PUT (aws-chunked framing removed) is spilled to a file, so that shipped
objects can be searched afterwards; a multipart object is its parts, complete at
CompleteMultipartUpload.
"""

import io
import itertools
import logging
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import boto3
from botocore.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

_CHUNK_HEADER = re.compile(rb"([0-9a-fA-F]+)(;[^\r\n]*)?\r\n")


@dataclass
class Request:
    method: str
    bucket: str
    key: str
    query: dict[str, list[str]]
    status: int
    done_ns: int
    body: Path | None = None

    @property
    def kind(self) -> str:
        """PUT, LIST, GET, HEAD, DELETE or POST (multipart create/complete); multi-delete is DELETE."""
        if self.method == "GET" and not self.key:
            return "LIST"
        if self.method == "POST" and "delete" in self.query:
            return "DELETE"
        return self.method


@dataclass
class StoredObject:
    bucket: str
    key: str
    done_ns: int
    parts: list[Path] = field(default_factory=list)

    def read(self) -> bytes:
        return b"".join(part.read_bytes() for part in self.parts)


def decode_aws_chunked(raw: bytes) -> bytes:
    """The payload of an aws-chunked body: ``size[;ext]\\r\\n data \\r\\n ... 0\\r\\n trailers``."""
    out, pos = bytearray(), 0
    while (match := _CHUNK_HEADER.match(raw, pos)) is not None:
        size = int(match.group(1), 16)
        if size == 0:
            break
        out += raw[match.end() : match.end() + size]
        pos = match.end() + size + 2
    return bytes(out)


class RecordingS3:
    """A moto S3 server on 127.0.0.1 (kernel-chosen port) that logs into ``self.log``."""

    access_key = secret_key = "testing"  # noqa: S105 - moto checks no credentials
    region = "us-east-1"

    def __init__(self, spill: Path) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self.log: list[Request] = []
        self._spill, self._numbers = spill, itertools.count()
        spill.mkdir(parents=True, exist_ok=True)
        app = DomainDispatcherApplication(create_backend_app)
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, self._middleware(app), threaded=True, request_handler=MotoRequestHandler
        )
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        # moto keeps its buckets in the process, not the server: a second server
        # (another round or step) would find the first one's objects and lease.
        reset = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - http://127.0.0.1
        urllib.request.urlopen(reset).close()  # noqa: S310

    def create_bucket(self, name: str) -> None:
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}),
        )
        client.create_bucket(Bucket=name)

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def objects(self, bucket: str) -> list[StoredObject]:
        """Every object completely written to ``bucket``, in completion order (overwrites included)."""
        parts: dict[str, list[tuple[int, Path]]] = {}
        found: list[StoredObject] = []
        for r in self.log:
            if r.bucket != bucket or r.status >= 300:
                continue
            if r.method == "PUT" and r.key and "uploadId" in r.query and r.body is not None:
                parts.setdefault(r.query["uploadId"][0], []).append((int(r.query["partNumber"][0]), r.body))
            elif r.method == "PUT" and r.key and r.body is not None and not r.query.keys() & {"tagging", "acl"}:
                found.append(StoredObject(r.bucket, r.key, r.done_ns, [r.body]))
            elif r.method == "POST" and "uploadId" in r.query:
                chunks = sorted(parts.pop(r.query["uploadId"][0], []))
                found.append(StoredObject(r.bucket, r.key, r.done_ns, [path for _, path in chunks]))
        return sorted(found, key=lambda o: o.done_ns)

    def _middleware(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
            method = environ["REQUEST_METHOD"]
            bucket, _, key = unquote(environ.get("PATH_INFO", "")).lstrip("/").partition("/")
            query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            body: Path | None = None
            if method in ("PUT", "POST"):
                stream = environ["wsgi.input"]
                length = int(environ.get("CONTENT_LENGTH") or 0)
                raw = stream.read() if environ.get("wsgi.input_terminated") else stream.read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(raw)
                if method == "PUT" and key:
                    chunked = "aws-chunked" in environ.get("HTTP_CONTENT_ENCODING", "") or environ.get(
                        "HTTP_X_AMZ_CONTENT_SHA256", ""
                    ).startswith("STREAMING-")
                    body = self._spill / f"{next(self._numbers):08d}"
                    body.write_bytes(decode_aws_chunked(raw) if chunked else raw)
            status: list[int] = []

            def start(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                status.append(int(line.split(maxsplit=1)[0]))
                return start_response(line, headers, exc_info)

            result = app(environ, start)
            try:
                yield from result
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                code = status[0] if status else 0
                self.log.append(Request(method, bucket, key, query, code, time.time_ns(), body))

        return recorded
