"""Restore drills: prove a replica restores, and that its index tells the truth."""

from walship.verify._drill import restore_drill, verify_replica
from walship.verify._index import check_index
from walship.verify._report import RestoredPoint, VerificationFailedError, VerifyCheck, VerifyReport

__all__ = [
    "RestoredPoint",
    "VerificationFailedError",
    "VerifyCheck",
    "VerifyReport",
    "check_index",
    "restore_drill",
    "verify_replica",
]
