"""Retention: plan (pure) what old snapshots and WAL go, then apply it (or only show it), composed once per run."""

from walship.retention._apply import (
    RetentionReport,
    RetentionResult,
    apply_retention,
    list_history,
    newest_data,
    plan_replica,
)
from walship.retention._locks import hold_locked
from walship.retention._plan import GenerationDecision, RetentionPlan, SnapshotDecision, plan_retention
from walship.retention._policy import LEFTOVER_AGE, RetentionPolicy, format_duration, parse_duration
from walship.retention._run import RetentionSteps, StoreRetentionSteps, run_retention

__all__ = [
    "LEFTOVER_AGE",
    "GenerationDecision",
    "RetentionPlan",
    "RetentionPolicy",
    "RetentionReport",
    "RetentionResult",
    "RetentionSteps",
    "SnapshotDecision",
    "StoreRetentionSteps",
    "apply_retention",
    "format_duration",
    "hold_locked",
    "list_history",
    "newest_data",
    "parse_duration",
    "plan_replica",
    "plan_retention",
    "run_retention",
]
