"""Markdown artifacts and run names shared by the flows."""

from datetime import UTC, datetime
from pathlib import Path

from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from walship.units import human_bytes

__all__ = ["artifact_key", "human_bytes", "publish", "run_name"]


def artifact_key(kind: str, database: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    cleaned = "".join(c if c.isalnum() else "-" for c in database.lower()).strip("-")
    return f"walship-{kind}-{cleaned}"[:100]


def run_name(kind: str, subject_parameter: str) -> str:
    """A flow run name such as ``snapshot-app.db-20261124T0100``; a list parameter
    names its first entry and how many more (``snapshot-many-*.db+1-...``)."""
    value = flow_run.parameters.get(subject_parameter, "db")
    names = [Path(str(v)).name for v in value] if isinstance(value, list) else [Path(str(value)).name]
    subject = names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "") if names else "none"
    return f"{kind}-{subject}-{datetime.now(UTC):%Y%m%dT%H%M}"


def publish(kind: str, subject: str, title: str, rows: list[tuple[str, str]], details: str = "") -> None:
    """A summary table, then optional ``details`` markdown."""
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    markdown = f"# {title}\n\n| | |\n|---|---|\n{table}\n" + (f"\n{details}" if details else "")
    create_markdown_artifact(markdown=markdown, key=artifact_key(kind, subject), description=title)
