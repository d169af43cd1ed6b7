"""A database's first generation is routine (INFO); a generation that means continuity was lost stays a WARNING.

The lines a new generation logs, the core's "starting generation" (shown in
direct mode) and the observer's "new generation" (the CLI's, or the wal-ship
flow run's), are read from a real `walship --verbose ship` in each mode.
"""

import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import walship
from walship.spool import default_spool_dir

DIRECT = {"PREFECT_API_URL": ""}


@pytest.fixture(params=["direct", "flow"])
def mode_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return DIRECT if request.param == "direct" else dict(request.getfixturevalue("api_env"))


def _ship(database: Path, replica: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return walship("--verbose", "ship", str(database), "--replica", replica, "--once", env=env)


def _levels(output: str, what: str) -> list[str]:
    """The level of each line that says ``what`` (e.g. "new generation")."""
    return [m[1] for m in re.finditer(rf"\b(DEBUG|INFO|WARNING|ERROR)\b.*{what} ", output)]


def test_the_first_generation_is_info_a_lost_cursor_is_a_warning(
    database: Path, tmp_path: Path, mode_env: dict[str, str]
) -> None:
    replica = f"file://{tmp_path / 'replica'}"
    first = _ship(database, replica, mode_env)
    assert first.returncode == 0, first.stdout + first.stderr
    output = first.stdout + first.stderr
    assert "no earlier capture of this database" in output, output
    # The core's "starting generation" shows in direct mode; the flow run's logs have the observer's line.
    assert set(_levels(output, "starting generation")) <= {"INFO"}, output
    assert _levels(output, "new generation") == ["INFO"], output

    (default_spool_dir(database) / "cursor.json").write_bytes(b"")
    damaged = _ship(database, replica, mode_env)
    assert damaged.returncode == 0, damaged.stdout + damaged.stderr
    output = damaged.stdout + damaged.stderr
    assert "the spool's cursor was damaged" in output, output
    assert set(_levels(output, "starting generation")) <= {"WARNING"}, output
    assert _levels(output, "new generation") == ["WARNING"], output
