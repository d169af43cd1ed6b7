"""Read prefect.yaml: deployments/ never repeats what it declares.

Site values (database, replica, restore output, shipping window) live under
``definitions.site`` as YAML anchors that every deployment refers to.
``with_site`` rewrites those anchored values in the YAML node graph, so one
override reaches every alias, and the result is still a prefect.yaml (anchors
kept) that ``prefect deploy`` can read.
"""

import contextlib
import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"

__all__ = [
    "MIN_WINDOW",
    "PREFECT_YAML",
    "ROOT",
    "SERVE_SPREAD",
    "WORKER_SPREAD",
    "SiteError",
    "check_progress",
    "check_shipping",
    "load_deployments",
    "load_flow",
    "progress_every",
    "site_values",
    "with_derived",
    "with_site",
]

# How much a shipping run's start (schedule to first line) varies: on a process work pool's worker, as
# measured (docs/OPERATIONS.md, "Shipping windows"); under serve, whose runs are its own child processes.
WORKER_SPREAD = 40.0
SERVE_SPREAD = 10.0
# Shorter windows are refused: each run's fixed costs (start-up, lease, final drain) would be most of it.
MIN_WINDOW = 30.0
# A shipping run's progress line comes this often at most, and at least three times a run.
MAX_PROGRESS = 60


class SiteError(ValueError):
    """An override names a site value prefect.yaml does not define."""


def _site_node(document: yaml.MappingNode) -> yaml.MappingNode:
    for key, value in document.value:
        if key.value == "definitions":
            for inner_key, inner_value in value.value:
                if inner_key.value == "site" and isinstance(inner_value, yaml.MappingNode):
                    return inner_value
    raise SiteError("prefect.yaml has no definitions.site mapping; restore it from git before overriding site values")


def check_shipping(window: float, duration: float, handover_wait: float, spread: float = WORKER_SPREAD) -> None:
    """Refuse, in one line, shipping windows that could leave the WAL unwatched or keep three runs alive.

    Each run must still ship when the next one starts however late it starts
    (``duration - window > spread``), must be gone before the one after next
    starts however early (``duration + spread < 2 * window``), and the next
    run must wait for it that long (``handover_wait``).
    """
    if window < MIN_WINDOW:
        raise SiteError(f"ship_window {window:g} s is under {MIN_WINDOW:g} s: use a window of {MIN_WINDOW:g} s or more")
    if window <= 2 * spread:
        raise SiteError(
            f"ship_window {window:g} s is too short for runs whose start varies by {spread:g} s: no ship_duration "
            f"overlaps the next run without a third alive; use a window over {2 * spread:g} s"
        )
    fits = f"keep ship_duration between {window + spread:g} and {2 * window - spread:g} s (exclusive)"
    if duration - window <= spread:
        raise SiteError(
            f"ship_duration {duration:g} s must exceed ship_window {window:g} s by more than {spread:g} s "
            f"(how much runs' start varies), or the WAL goes unwatched between runs: {fits}"
        )
    if duration + spread >= 2 * window:
        raise SiteError(f"ship_duration {duration:g} s keeps three runs alive with ship_window {window:g} s: {fits}")
    if handover_wait < duration - window + spread:
        raise SiteError(
            f"ship_handover_wait {handover_wait:g} s is shorter than the overlap plus how much start-up varies "
            f"({duration - window + spread:g} s): the next run would give up before this one ends"
        )


def progress_every(duration: float) -> int:
    """Seconds between a shipping run's progress lines: a third of its duration, at most a minute."""
    return max(1, min(MAX_PROGRESS, int(duration // 3)))


def check_progress(progress: float, duration: float) -> None:
    """Refuse, in one line, a progress interval with which a run would end before its first progress line."""
    if not 0 < progress < duration:
        raise SiteError(
            f"ship_progress_interval {progress:g} s must be positive and shorter than ship_duration {duration:g} s, "
            f"or a run logs no progress line; leave it out to get {progress_every(duration)} s (a third of the run, "
            f"at most {MAX_PROGRESS} s)"
        )


def with_derived(overrides: Mapping[str, object], defined: Iterable[str]) -> dict[str, object]:
    """``overrides`` and the site values that follow them unless named too: another database is another id
    (its file name), another run duration another progress interval (``progress_every``)."""
    derived = dict(overrides)
    defined = set(defined)
    if "database" in overrides and "database_id" in defined and "database_id" not in overrides:
        derived["database_id"] = Path(str(overrides["database"])).name
    if (
        "ship_duration" in overrides
        and "ship_progress_interval" in defined
        and "ship_progress_interval" not in overrides
    ):
        with contextlib.suppress(ValueError):  # not seconds: check_shipping says so
            derived["ship_progress_interval"] = progress_every(float(str(overrides["ship_duration"])))
    return derived


def site_values(text: str) -> dict[str, Any]:
    """The site values prefect.yaml declares, e.g. ``{"database": "/var/lib/app/app.db", ...}``."""
    return dict(yaml.safe_load(text)["definitions"]["site"])


def with_site(text: str, overrides: Mapping[str, object]) -> str:
    """prefect.yaml's text with the named site values replaced, every alias following them."""
    document = yaml.compose(text, Loader=yaml.SafeLoader)
    if not isinstance(document, yaml.MappingNode):
        raise SiteError("prefect.yaml is not a mapping")
    site = {key.value: value for key, value in _site_node(document).value}
    resolver = yaml.SafeLoader("")
    for name, value in with_derived(overrides, site).items():
        node = site.get(name)
        if not isinstance(node, yaml.ScalarNode):
            raise SiteError(f"unknown site value {name!r}; prefect.yaml defines {', '.join(sorted(site))}")
        node.value = str(value)
        # Re-resolve the tag so "5" becomes an int and a path stays a string;
        # an empty value stays an empty string (plain, YAML would read a null).
        node.tag = (
            resolver.resolve(yaml.ScalarNode, node.value, (True, False)) if node.value else "tag:yaml.org,2002:str"
        )
        node.style = None if node.value else '"'
    return str(yaml.serialize(document, Dumper=yaml.SafeDumper))


def load_deployments(path: Path = PREFECT_YAML, site: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
    """The deployments section of prefect.yaml, with YAML aliases resolved and ``site`` overrides applied."""
    text = path.read_text()
    if site:
        text = with_site(text, site)
    document = yaml.safe_load(text)
    return list(document["deployments"])


def load_flow(entrypoint: str) -> Flow[Any, Any]:
    """Import ``flows/snapshot.py:snapshot_flow`` style entrypoints."""
    file, _, name = entrypoint.partition(":")
    module = ".".join(Path(file).with_suffix("").parts)
    flow = getattr(importlib.import_module(module), name)
    if not isinstance(flow, Flow):
        raise TypeError(f"{entrypoint} is not a Prefect flow")
    return flow
