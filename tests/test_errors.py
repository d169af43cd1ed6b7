"""Typed errors: one root, a storage parent and an integrity parent; only transient storage errors are retried."""

import pytest

from walship import errors
from walship.errors import IntegrityError, StorageError, TransientStorageError, WalshipError
from walship.models import RetryPolicy
from walship.retry import retrying

STORAGE = ["NotFoundError", "ConflictError", "PermanentStorageError", "TransientStorageError"]
INTEGRITY = ["ChecksumMismatchError", "CorruptObjectError", "SpoolEntryDamagedError"]


@pytest.mark.parametrize("name", errors.__all__)
def test_every_error_has_one_root(name: str) -> None:
    assert issubclass(getattr(errors, name), WalshipError)


@pytest.mark.parametrize(
    ("name", "parent"), [(n, StorageError) for n in STORAGE] + [(n, IntegrityError) for n in INTEGRITY]
)
def test_parents(name: str, parent: type[WalshipError]) -> None:
    assert issubclass(getattr(errors, name), parent)


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
