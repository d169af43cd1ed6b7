"""Seeded torture runs in ``make test``: half of the spread here, half in test_torture_more.py (two workers).

Each seed runs writers, a shipper (or a fleet) and its schedule of faults, then checks
every acknowledged commit, every point-in-time restore, the newest restore
and verify (tests/torture/checks.py). A failure prints the schedule, what
happened and the replay command.
"""

from pathlib import Path

import pytest

from tests.s3servers import MotoS3
from tests.torture.__main__ import torture
from tests.torture.schedule import VERSION
from tests.torture.seeds import FAILED, SECONDS, SPREAD, SPREAD_VERSION, TWO_REPLICAS


def run_seed(seed: int, tmp_path: Path, moto: MotoS3, seconds: float = SECONDS, version: int = VERSION) -> None:
    run, failures = torture(seed, seconds, tmp_path / f"seed-{seed}", moto, version)
    replay = f"replay: make torture SEED={seed} LENGTH={seconds:g} VERSION={version}"
    assert not failures, "\n".join([str(run.plan), *run.happened, *failures, replay])


@pytest.mark.parametrize("seed", SPREAD[::2])
def test_torture_seed(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    run_seed(seed, tmp_path, moto_server, version=SPREAD_VERSION)


@pytest.mark.parametrize("seed", sorted(TWO_REPLICAS)[::2])
def test_two_replicas(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    """One of two replicas unreachable now and then (what each covers: tests/torture/seeds.py)."""
    run_seed(seed, tmp_path, moto_server, TWO_REPLICAS[seed].seconds, TWO_REPLICAS[seed].version)


@pytest.mark.parametrize("seed", sorted(FAILED)[::2])
def test_seed_that_failed(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    """A seed that once failed, replayed at its own length (what it found: tests/torture/seeds.py)."""
    run_seed(seed, tmp_path, moto_server, FAILED[seed].seconds, FAILED[seed].version)
