"""The other half of the torture spread (a file of its own so ``--dist loadfile`` runs it beside the first)."""

from pathlib import Path

import pytest

from tests.s3servers import MotoS3
from tests.test_torture import run_seed
from tests.torture.seeds import FAILED, SPREAD, SPREAD_VERSION, TWO_REPLICAS


@pytest.mark.parametrize("seed", SPREAD[1::2])
def test_torture_seed(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    run_seed(seed, tmp_path, moto_server, version=SPREAD_VERSION)


@pytest.mark.parametrize("seed", sorted(TWO_REPLICAS)[1::2])
def test_two_replicas(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    run_seed(seed, tmp_path, moto_server, TWO_REPLICAS[seed].seconds, TWO_REPLICAS[seed].version)


@pytest.mark.parametrize("seed", sorted(FAILED)[1::2])
def test_seed_that_failed(seed: int, tmp_path: Path, moto_server: MotoS3) -> None:
    run_seed(seed, tmp_path, moto_server, FAILED[seed].seconds, FAILED[seed].version)
