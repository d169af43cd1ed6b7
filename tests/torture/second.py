"""The fault "one of two replicas unreachable" (schedule version 6): a second replica that comes and goes.

The second replica is a bucket on moto behind a proxy of its own; the
shipper ships to both (``--replica R1 --replica R2 --spool-cap MIB``). Its
outages (connections refused and reset, or hanging) follow a clock of their
own, in a thread beside the plan's other events, so a shipper may start,
end or hand over while it is down. Now and then it goes down for good near
the end: the run ends exiting 1, naming it, after finishing the first
replica; then it comes back and one ``walship ship --once`` with both
replicas must catch it up, as an operator's next run would.

A replica down past the spool cap while the other keeps up falls behind
(walship.acks) and resumes at a snapshot of its own: the checks allow it a
gap before that snapshot, and nothing more.
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tests.s3servers import MotoS3, s3_client
from tests.tcpproxy import TcpProxy
from tests.torture.schedule import Plan
from tests.torture.shipper import Shipper

if TYPE_CHECKING:
    from tests.torture.run import TortureRun

__all__ = ["BEHIND", "SecondReplica", "behind_in"]

# What a shipper logs when one of its replicas stops holding the spool back (walship.ship._steps).
BEHIND = "is behind"
# How long the writers commit again, with a shipper running, when ``ship --once`` did not bring a replica back:
# the checks go on with every replica, whatever the failure already found.
_RECOVERY_SECONDS = 3.0
_BAD = ("unexpected error", "Traceback")


def behind_in(output: str, location: str) -> bool:
    """Whether a shipper's output says replica ``location`` fell behind (or ended behind)."""
    return any(location in line and BEHIND in line for line in output.splitlines())


class SecondReplica:
    """The plan's second replica: its bucket, its proxy, its outages as they really happened."""

    def __init__(self, plan: Plan, moto: MotoS3 | None) -> None:
        self.plan = plan
        self._moto = moto
        self._proxy: TcpProxy | None = None
        self._bucket: tuple[MotoS3, str] | None = None
        self.url = ""  # for the CLI, with the proxy's endpoint
        self.location = ""  # as walship names it in what it prints (s3://bucket/app/)
        self.down: list[tuple[float, float | None]] = []  # (from, until) unix times; until None: still down
        self._stalled = False
        self.once: Shipper | None = None  # the ``ship --once`` after a run that ended failing for a replica
        self.failures: list[str] = []
        self._stopping = threading.Event()
        self._clock: threading.Thread | None = None

    # Setting up ---------------------------------------------------------------------

    @contextlib.contextmanager
    def storage(self, env: dict[str, str]) -> Iterator[None]:
        server = self._moto or MotoS3()
        bucket = f"second-{self.plan.seed}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
        server.create_bucket(bucket)
        self._bucket = (server, bucket)
        moto = urlsplit(server.endpoint)
        assert moto.hostname is not None
        assert moto.port is not None
        env.update(
            AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_DEFAULT_REGION="us-east-1"
        )
        try:
            with TcpProxy(moto.hostname, moto.port) as proxy:
                self._proxy = proxy
                self.url, self.location = f"s3://{bucket}/app?endpoint={proxy.endpoint}", f"s3://{bucket}/app/"
                try:
                    yield
                finally:
                    self.stop_outages()
        finally:
            if self._moto is None:
                server.stop()

    def options(self) -> list[str]:
        """A shipper's options for it."""
        cap = ["--spool-cap", f"{self.plan.spool_cap:g}"] if self.plan.spool_cap else []
        return ["--replica", self.url, *cap]

    def keep(self, workdir: Path) -> None:
        """After a failed check: its objects into ``replica2-kept/``."""
        if self._bucket is None:
            return
        server, bucket = self._bucket
        client = s3_client(server)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                target = workdir / "replica2-kept" / obj["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(target))

    # Its outages --------------------------------------------------------------------

    def start_outages(self, started: float, note: Callable[[str], None]) -> None:
        """The plan's outages, each at its moment after ``started``, in a thread of their own."""
        self._clock = threading.Thread(target=self._outages, args=(started, note), daemon=True)
        self._clock.start()

    def _outages(self, started: float, note: Callable[[str], None]) -> None:
        for outage in self.plan.second_outages:
            if self._stopping.wait(max(0.0, started + outage.at - time.time())):
                return
            note(f"second replica down ({outage.how}) for {outage.seconds} s")
            self._go_down(outage.how)
            self._stopping.wait(outage.seconds)
            self.bring_back()
            note("second replica back")
        if self.plan.second_down_at and not self._stopping.wait(
            max(0.0, started + self.plan.second_down_at - time.time())
        ):
            note("second replica down until the end")
            self._go_down("stop")

    def stop_outages(self, *, at_once: bool = True) -> None:
        """The outage thread ended: now and the replica back (``at_once``), or once its clock ran out (the
        replica maybe down for good)."""
        if at_once:
            self._stopping.set()
        if self._clock is not None:
            self._clock.join()
        if at_once:
            self.bring_back()

    def _go_down(self, how: str) -> None:
        assert self._proxy is not None
        self.down.append((time.time(), None))
        self._stalled = how == "stall"
        if self._stalled:
            self._proxy.stall()  # what is under way hangs, and goes on when it comes back
        else:
            self._proxy.stop()

    def bring_back(self) -> None:
        if not self.is_down:
            return
        assert self._proxy is not None
        if self._stalled:
            self._proxy.resume()
        else:
            self._proxy.start()
        began, _ = self.down[-1]
        self.down[-1] = (began, time.time())

    @property
    def is_down(self) -> bool:
        return bool(self.down) and self.down[-1][1] is None

    def down_while(self, shipper: Shipper) -> bool:
        """Whether it was down at some moment between ``shipper``'s signal and its exit."""
        start, end = shipper.signalled_at or shipper.started, shipper.ended_at or time.time()
        return any(began <= end and (back is None or back >= start) for began, back in self.down)

    # The run's end --------------------------------------------------------------------

    def after_the_end(self, run: "TortureRun") -> None:
        """The run ended, the second replica maybe down. A run that ended failing (for a replica, or for another
        reason the checks allow) is followed by the operator's next: the replica brought back, ``ship --once``
        with both replicas, which must exit 0."""
        self._follow_up(run)
        outputs = [s.output for s in run.shippers] + ([self.once.output] if self.once else [])
        for name, location in (("first", run.first_location), ("second", self.location)):
            lines = [line for output in outputs for line in output.splitlines() if location in line]
            behind = sum(f"{location} {BEHIND}:" in line for line in lines)
            resumed = sum("caught up: resumed at" in line for line in lines)
            if behind or resumed:
                run.note(f"{name} replica fell behind {behind} times, resumed at {resumed} snapshots")

    def _follow_up(self, run: "TortureRun") -> None:
        last = run.shipper
        if self.is_down and last.process.returncode == 0:
            self.failures.append(f"shipper {last.number} exited 0 with the second replica unreachable at its end")
        if last.process.returncode != 1:
            return
        if self.is_down:
            self.bring_back()
            run.note("second replica back")
        once = self.once = Shipper(0, run.ship_command("--once"), run.logs / "once.log", run.env)
        code = once.wait()
        run.note(f"ship --once with both replicas: exit {code}")
        self.failures += [f"ship --once printed {bad!r} (see {once.log})" for bad in _BAD if bad in once.output]
        if code == 0:
            return
        self.failures.append(f"ship --once with both replicas after the run's end exited {code}: {once.failure}")
        # The failure is found; a run with commits to ship gives the replica a chance to come back, so that
        # the checks go on with every replica.
        run.note("recovery: the writers commit again for a while, a shipper running")
        run.wait_until_holding(run.start_shipper())
        run.start_writers()
        time.sleep(_RECOVERY_SECONDS)
        run.stop_writers()
        run.last_window()
