"""Prefect progress artifacts moved by the core's progress callbacks.

The core reports (bytes done, bytes in all) after every chunk, hundreds of
times a second; the artifact is a request to the API, so it moves at most
once a second. A run's progress artifact is created by its flow, and its id
(a small value) is what the tasks receive.
"""

import logging
import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

__all__ = ["ArtifactProgress", "finish_progress", "start_progress"]

# Seconds between two updates of one artifact.
_EVERY = 1.0

log = logging.getLogger(__name__)


def start_progress(key: str | None, description: str) -> UUID:
    """Create a run's progress artifact at 0 %; the flows give none a key, so a failed run never leaves
    a stale 0 % as the newest artifact of a key (its FAILED artifact is under the run's own key)."""
    artifact_id = create_progress_artifact(progress=0.0, key=key, description=description)
    assert isinstance(artifact_id, UUID)  # the sync variant: flows and tasks here are sync
    return artifact_id


def finish_progress(artifact_id: UUID) -> None:
    update_progress_artifact(artifact_id=artifact_id, progress=100.0)


class ArtifactProgress:
    """A core ``Progress`` callback mapping bytes onto ``start``..``end`` % of an artifact."""

    def __init__(self, artifact_id: UUID, start: float = 0.0, end: float = 100.0, every: float = _EVERY) -> None:
        self._artifact_id = artifact_id
        self._every = every
        self._start = start
        self._span = end - start
        self._last_update = time.monotonic()
        self._last_percent = start

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        percent = self._start + self._span * min(done / total, 1.0) if total else self._start + self._span
        # At most once a second, and only when the bar moved a whole percent.
        if now - self._last_update < self._every or percent - self._last_percent < 1.0:
            return
        self._last_update, self._last_percent = now, percent
        try:
            update_progress_artifact(artifact_id=self._artifact_id, progress=round(percent, 1))
        except Exception as exc:  # a progress bar is never worth failing a backup for
            log.warning("progress artifact %s not updated: %s", self._artifact_id, exc)
