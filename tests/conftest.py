"""Shared fixtures: real S3 servers over HTTP, a Prefect test harness, live databases."""

import os
import secrets
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bench.workload import create_database, writer_command
from tests.s3servers import MotoS3, SeaweedS3, _S3Server
from tests.shipping import SEED, Ship, WriterGroup
from tests.tcpproxy import TcpProxy
from walship.storage import ObjectStore, open_store

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["local", "moto", pytest.param("seaweedfs", marks=pytest.mark.seaweedfs)]
# In-process only: for suites whose every step runs in the test's own process.
IN_PROCESS_BACKENDS = [*BACKENDS, "memory"]

# Prefect's server and clients read these at import and start-up: quiet,
# no telemetry, nothing written to the user's ~/.prefect.
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Tests read events back; the server writes them to its database every 5 s by default.
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.5")

# ``--dist loadfile`` hands a worker one whole file at a time, by default the files with the most tests first: the
# long scenario files, which have few tests, came last, and one worker went on for minutes after the other ran
# dry. These go first instead, longest first (as measured with --durations on two workers, roughly), then the rest
# as xdist would order them. Keep the list to files that take minutes; a file missing from it only runs later.
LONGEST_FILES = (
    "test_torture.py",
    "test_torture_more.py",
    "test_prefect_server.py",
    "test_replicas.py",
    "test_ship.py",
    "test_resync.py",
    "test_ship_faults.py",
    "test_handover.py",
    "test_alerts.py",
    "test_fleet_hosts.py",
    "test_fleet_replicas.py",
    "test_fleet_prefect.py",
    "test_fleet.py",
    "test_object_lock.py",
    "test_spool_full.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # xdist's own order by test count would undo the one below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    counts = Counter(item.path for item in items)
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -counts[item.path], str(item.path)))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoS3]:
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_server() -> Iterator[SeaweedS3]:
    with SeaweedS3() as server:
        yield server


@pytest.fixture
def proxied_moto(moto_server: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, TcpProxy]]:
    """A replica in a new bucket on moto, reached through a proxy (up at first) that a test takes down."""
    use_credentials(monkeypatch, moto_server)
    bucket = f"walship-proxied-{secrets.token_hex(4)}"
    moto_server.create_bucket(bucket)
    moto = urlsplit(moto_server.endpoint)
    assert moto.hostname is not None
    assert moto.port is not None
    with TcpProxy(moto.hostname, moto.port) as proxy:
        yield f"s3://{bucket}/backups/app?endpoint={proxy.endpoint}", proxy


def use_credentials(monkeypatch: pytest.MonkeyPatch, server: _S3Server) -> None:
    """Point boto3's standard credential chain (the environment) at ``server``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", server.region)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def s3_server(request: pytest.FixtureRequest, backend: str) -> _S3Server | None:
    if backend in ("local", "memory"):
        return None
    return request.getfixturevalue(f"{'moto' if backend == 'moto' else 'seaweed'}_server")  # type: ignore[no-any-return]


@pytest.fixture
def replica_url(backend: str, s3_server: _S3Server | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty replica on the backend under test."""
    if backend == "memory":
        return f"memory://walship-{secrets.token_hex(6)}/backups/app"
    if s3_server is None:
        return f"file://{tmp_path / 'replica'}"
    use_credentials(monkeypatch, s3_server)
    bucket = f"walship-{secrets.token_hex(6)}"
    s3_server.create_bucket(bucket)
    return f"s3://{bucket}/backups/app?endpoint={s3_server.endpoint}"


@pytest.fixture
def store(replica_url: str) -> ObjectStore:
    """The replica under test, opened."""
    return open_store(replica_url)


@pytest.fixture(scope="session")
def base_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4 MiB WAL-mode database of realistic rows, built once per session."""
    path = tmp_path_factory.mktemp("base") / "base.db"
    create_database(path, 4 << 20, seed=11)
    return path


@pytest.fixture(scope="session")
def small_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 KiB database: what the fleet tests copy many times (``bench.workload.database_copies``)."""
    path = tmp_path_factory.mktemp("small-base") / "base.db"
    create_database(path, 64 << 10, seed=SEED)
    return path


@pytest.fixture
def database(base_database: Path, tmp_path: Path) -> Path:
    """A private copy of the base database for one test."""
    path = tmp_path / "app.db"
    shutil.copyfile(base_database, path)
    return path


class Writers:
    """Writer processes committing to a database until stopped."""

    def __init__(self, database: Path, seed: int, count: int, rate: float) -> None:
        self.processes = [
            subprocess.Popen(writer_command(database, writer=w, seed=seed, seconds=120, rate=rate), cwd=ROOT)
            for w in range(1, count + 1)
        ]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


@pytest.fixture
def writers(database: Path) -> Iterator[Writers]:
    """Three writer processes (seed 11) committing about 300 transactions/s each."""
    running = Writers(database, seed=11, count=3, rate=300)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API (a temporary server) for the whole session; yields its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def spawned() -> Iterator[list[Ship | WriterGroup]]:
    """Whatever a test starts is stopped at its end, pass or fail."""
    running: list[Ship | WriterGroup] = []
    yield running
    for item in reversed(running):
        if isinstance(item, Ship):
            item.close()
        else:
            item.stop()


@pytest.fixture
def api_env(prefect_api: str) -> dict[str, str]:
    """Flows started by the CLI report to the session's Prefect API (no ephemeral server per call)."""
    return {"PREFECT_API_URL": prefect_api}
