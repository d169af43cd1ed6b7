"""Real S3 servers on 127.0.0.1 for the test-suite (plain helpers, no pytest).

Why two servers: moto is fast and in-process, good for the bulk of tests;
SeaweedFS is a real, separately implemented S3 server with authentication
turned on, so it catches what moto forgives (signature checks, wrong keys,
differences in conditional-write and multipart behaviour).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from collections.abc import Sequence

import boto3
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"


class _S3Server:
    """Shared shape of both servers: what a fixture and `s3_client` need."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def create_bucket(self, name: str) -> None:
        """Create a bucket; us-east-1 needs no LocationConstraint."""
        s3_client(self).create_bucket(Bucket=name)

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def s3_client(server: _S3Server, **overrides: Any) -> Any:
    """A boto3 S3 client for `server`, path-style (no bucket DNS on 127.0.0.1).

    A private Session keeps AWS_PROFILE / ~/.aws of the machine out of the
    tests; `overrides` win, e.g. ``aws_secret_access_key="wrong"``.
    """
    kwargs: dict[str, Any] = {
        "endpoint_url": server.endpoint,
        "aws_access_key_id": server.access_key,
        "aws_secret_access_key": server.secret_key,
        "region_name": server.region,
        "config": Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    }
    kwargs.update(overrides)
    return boto3.session.Session().client("s3", **kwargs)


class MotoS3(_S3Server):
    """moto's ThreadedMotoServer on a kernel-chosen port (port=0: no race).

    Any credentials are accepted; moto does not verify signatures.
    """

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.access_key = "testing"
        self.secret_key = "testing"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        """Reset moto's process-global backends, so buckets don't leak into
        the next server instance, then shut the HTTP server down."""
        try:
            req = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
            urllib.request.urlopen(req, timeout=5).close()
        except OSError:
            pass
        self._server.stop()


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports; sockets stay open until all are chosen."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class SeaweedS3(_S3Server):
    """`weed server` (master+volume+filer+s3) in one process group.

    Authentication is on (``-s3.config`` identities file), so a wrong secret
    is rejected like on a real provider.  TMPDIR points into the data dir
    because weed puts its unix sockets in the temp dir; everything is thus
    removed by `stop()`.
    """

    def __init__(self, timeout: float = 60.0, extra_args: Sequence[str] = ()) -> None:
        self.access_key = "walshipadmin"
        self.secret_key = secrets.token_urlsafe(24)
        self.data_dir = Path(tempfile.mkdtemp(prefix="weed-"))
        self.log_path = self.data_dir / "weed.log"
        config = self.data_dir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        (self.data_dir / "tmp").mkdir()
        m, mg, v, vg, f, fg, s, sg = _free_ports(8)
        self.endpoint = f"http://127.0.0.1:{s}"
        self.command = [
            str(WEED), "-logtostderr", "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data_dir}",
            f"-master.port={m}", f"-master.port.grpc={mg}",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=8",
            "-filer", f"-filer.port={f}", f"-filer.port.grpc={fg}",
            "-s3", f"-s3.port={s}", f"-s3.port.grpc={sg}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            *extra_args,
        ]  # fmt: skip
        env = {**os.environ, "TMPDIR": str(self.data_dir / "tmp")}
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        """Poll until an authenticated write round-trip works.

        The S3 port opens before the filer/volume are wired up, so a TCP or
        ListBuckets check alone is not enough; a put/delete in a scratch
        bucket proves the data path, and the bucket is removed afterwards.
        """
        client = s3_client(self, config=Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1},
            connect_timeout=1, read_timeout=5,
        ))  # fmt: skip
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if not client.list_buckets().get("Buckets"):
                    client.create_bucket(Bucket="weed-ready-probe")
                client.put_object(Bucket="weed-ready-probe", Key="probe", Body=b"x")
                client.delete_object(Bucket="weed-ready-probe", Key="probe")
                client.delete_bucket(Bucket="weed-ready-probe")
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
                time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint} not ready "
            f"(exit code {self._proc.poll()}, last error {last!r}); "
            f"command: {' '.join(self.command)}\nlog tail:\n" + "\n".join(tail)
        )

    def stop(self) -> None:
        """SIGKILL the whole group (no graceful 10 s preStop), drop the data."""
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
