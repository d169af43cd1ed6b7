"""Retries outside Prefect: the same policy the tasks get, for the CLI's direct mode.

Only ``TransientStorageError`` is tried again; everything else says something
a retry cannot change (a missing object, a bad checksum, bad input).
"""

import random
import time
from collections.abc import Callable
from typing import TypeVar

from walship.errors import TransientStorageError
from walship.models import RetryPolicy

__all__ = ["retrying"]

R = TypeVar("R")


def retrying(policy: RetryPolicy, call: Callable[[], R], *, sleep: Callable[[float], None] = time.sleep) -> R:
    """``call()``, tried again after each delay of ``policy`` while storage is transiently unreachable."""
    for delay in policy.delays():
        try:
            return call()
        except TransientStorageError:
            # The same spread as Prefect's retry_jitter_factor: delay * (1 ± jitter).
            sleep(delay * (1 + policy.jitter * (2 * random.random() - 1)))
    return call()
