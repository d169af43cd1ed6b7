"""Read prefect.yaml: deployments/ never repeats what it declares."""

import importlib
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"

__all__ = ["PREFECT_YAML", "load_deployments", "load_flow"]


def load_deployments(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The deployments section of prefect.yaml, with YAML aliases resolved."""
    document = yaml.safe_load(path.read_text())
    return list(document["deployments"])


def load_flow(entrypoint: str) -> Flow[Any, Any]:
    """Import ``flows/snapshot.py:snapshot_flow`` style entrypoints."""
    file, _, name = entrypoint.partition(":")
    module = ".".join(Path(file).with_suffix("").parts)
    flow = getattr(importlib.import_module(module), name)
    if not isinstance(flow, Flow):
        raise TypeError(f"{entrypoint} is not a Prefect flow")
    return flow
