"""The flows' retry policy outside Prefect (walship.retry), as the CLI's direct mode uses it."""

import pytest

from walship.errors import NotFoundError, TransientStorageError
from walship.models import RetryPolicy
from walship.retry import retrying


class Flaky:
    """Fails with ``error`` the first ``failures`` calls, then returns the call count."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


class TestRetrying:
    """Transient storage errors are tried again after the policy's delays; nothing else is."""

    def test_transient_errors_are_retried_with_backoff(self) -> None:
        slept: list[float] = []
        call = Flaky(3, TransientStorageError("s3: put object k: connection refused"))
        policy = RetryPolicy(attempts=4, backoff_seconds=2.0, jitter=0.5)
        assert retrying(policy, call, sleep=slept.append) == 4
        assert len(slept) == 3
        for delay, base in zip(slept, [2.0, 4.0, 8.0], strict=True):
            assert base * 0.5 <= delay <= base * 1.5

    def test_gives_up_after_the_last_attempt(self) -> None:
        slept: list[float] = []
        call = Flaky(10, TransientStorageError("down"))
        with pytest.raises(TransientStorageError):
            retrying(RetryPolicy(attempts=2, jitter=0), call, sleep=slept.append)
        assert call.calls == 3
        assert slept == [2.0, 4.0]

    def test_other_errors_fail_at_once(self) -> None:
        slept: list[float] = []
        call = Flaky(1, NotFoundError("no such object"))
        with pytest.raises(NotFoundError):
            retrying(RetryPolicy(), call, sleep=slept.append)
        assert (call.calls, slept) == (1, [])

    def test_no_retries(self) -> None:
        call = Flaky(1, TransientStorageError("down"))
        with pytest.raises(TransientStorageError):
            retrying(RetryPolicy(attempts=0), call, sleep=lambda _: None)
        assert call.calls == 1
