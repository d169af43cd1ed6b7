"""Restore drills: prove a replica restores, and that its index tells the truth."""

from walship.verify._drill import restore_drill
from walship.verify._index import check_index
from walship.verify._report import RestoredPoint, VerifyCheck, VerifyReport
from walship.verify._run import StoreSteps, VerifySteps, check_lock, run_verify, verify_replica

__all__ = [
    "RestoredPoint",
    "StoreSteps",
    "VerifyCheck",
    "VerifyReport",
    "VerifySteps",
    "check_index",
    "check_lock",
    "restore_drill",
    "run_verify",
    "verify_replica",
]
