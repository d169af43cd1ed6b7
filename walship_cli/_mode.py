"""Which way a command runs: the core directly, or as a Prefect flow run.

A flow run is worth its start-up only when a Prefect API keeps its history:
without one, Prefect would start a throw-away server for every command
(15-25 s) whose runs nobody ever sees. So the CLI runs flows only when an
API is configured, the way Prefect itself finds it (the environment, then
the active profile), and reads that without importing Prefect (over a second).
"""

import os
import tomllib
from pathlib import Path

__all__ = ["prefect_api_configured"]


def prefect_api_configured() -> bool:
    """True when ``PREFECT_API_URL`` is set in the environment or in the active Prefect profile."""
    if "PREFECT_API_URL" in os.environ:
        return bool(os.environ["PREFECT_API_URL"].strip())
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    profiles_path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(profiles_path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False  # no profile (a fresh machine) or one Prefect itself would refuse
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    settings = profiles.get("profiles", {}).get(active, {})
    return isinstance(settings, dict) and bool(str(settings.get("PREFECT_API_URL", "")).strip())
