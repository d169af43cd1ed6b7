"""Typed errors: one root, a storage parent and an integrity parent; only transient storage errors are retried."""

import ast
import importlib
import pickle
from pathlib import Path

import pytest

from walship import errors
from walship.errors import (
    FleetFailedError,
    IncompleteError,
    IntegrityError,
    StorageError,
    TransientStorageError,
    VerificationFailedError,
    WalshipError,
)
from walship.fleet import FleetReport, FleetRow, RowState
from walship.models import RetryPolicy
from walship.retry import retrying
from walship.verify import VerifyCheck, VerifyReport

STORAGE = ["NotFoundError", "ConflictError", "PermanentStorageError", "TransientStorageError"]
INTEGRITY = ["ChecksumMismatchError", "CorruptObjectError", "SpoolEntryDamagedError", "NewerIndexError"]
CORE = Path(errors.__file__).parent


def _core_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(CORE.parent).with_suffix("").parts).removesuffix(".__init__") for p in CORE.rglob("*.py")
    )


def _subclasses(cls: type) -> set[type]:
    return {sub for direct in cls.__subclasses__() for sub in {direct, *_subclasses(direct)}}


def test_every_error_class_of_the_core_lives_in_errors() -> None:
    """Outside errors.py the core defines no exception class, but private control flow that never leaves its
    module (``envelope._age._StoppedError``)."""
    defined_elsewhere = []
    for name in _core_modules():
        module = importlib.import_module(name)
        defined_elsewhere += [
            f"{name}.{attr}"
            for attr, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, BaseException)
            and value.__module__ == name != "walship.errors"
            and (issubclass(value, WalshipError) or not attr.startswith("_"))
        ]
    assert defined_elsewhere == []
    public = {cls.__name__ for cls in _subclasses(WalshipError) if not cls.__name__.startswith("_")}
    assert {cls.__module__ for cls in _subclasses(WalshipError)} == {"walship.errors"}
    assert public <= set(errors.__all__)


def test_errors_import_nothing_of_walship() -> None:
    """So that every module may import errors.py without an import circle."""
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names
    ]
    assert [m for m in imported if m and m.split(".")[0] == "walship"] == []


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_has_one_root(name: str) -> None:
    assert issubclass(getattr(errors, name), WalshipError)


@pytest.mark.parametrize(
    ("name", "parent"), [(n, StorageError) for n in STORAGE] + [(n, IntegrityError) for n in INTEGRITY]
)
def test_parents(name: str, parent: type[WalshipError]) -> None:
    assert issubclass(getattr(errors, name), parent)


@pytest.mark.parametrize(
    "name", ["MapUnusableError", "LeaseHeldError", "HandoverTimedOutError", "VerificationFailedError"]
)
def test_neither_storage_nor_integrity(name: str) -> None:
    """Local state, another shipper, or a drill's verdict over many checks: they hang from the root."""
    assert not issubclass(getattr(errors, name), StorageError | IntegrityError)


def test_a_failed_drill_says_its_first_failed_check_and_survives_pickling() -> None:
    """Prefect pickles the error with the failed state: the report comes back whole."""
    report = VerifyReport(
        replica="file:///r",
        checks=[
            VerifyCheck(name="index", ok=True, detail="fine"),
            VerifyCheck(name="restore-newest", ok=False, detail="segment 7 is missing"),
        ],
    )
    error = VerificationFailedError(report)
    assert str(error).splitlines() == [
        "verify file:///r: restore-newest failed: segment 7 is missing",
        "1 of 2 checks failed; each says what to do",
    ]
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(again) is VerificationFailedError
    assert again.report == report
    assert str(again) == str(error)


def test_a_failed_fleet_names_its_failed_databases_and_is_incomplete() -> None:
    rows = [FleetRow(database=f"db{i}", replica="r", state=RowState.FAILED) for i in range(6)]
    error = FleetFailedError(FleetReport(rows=[FleetRow(database="ok", replica="r", state=RowState.DONE), *rows]))
    assert str(error) == "6 of 7 databases failed (db0, db1, db2, db3, db4, ...): each one's row says why"
    assert isinstance(error, IncompleteError)
    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert again.report == error.report


@pytest.mark.parametrize("name", [n for n in STORAGE + INTEGRITY if n != "TransientStorageError"])
def test_only_transient_storage_errors_are_retried(name: str) -> None:
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise getattr(errors, name)("no")

    with pytest.raises(getattr(errors, name)):
        retrying(RetryPolicy(attempts=3), fails, sleep=lambda _: None)
    assert len(calls) == 1


def test_a_transient_storage_error_is_retried() -> None:
    calls: list[int] = []

    def fails_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientStorageError("a reset")
        return "done"

    assert retrying(RetryPolicy(attempts=3), fails_twice, sleep=lambda _: None) == "done"
    assert len(calls) == 3
