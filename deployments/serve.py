"""Serve every deployment in prefect.yaml from this host, with no worker.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve \
        [--set database=/srv/app.db --set replica=s3://bucket/app] [--only wal-ship]

Schedules, concurrency limits and parameters come from prefect.yaml, so the
file stays the one place they are declared; ``--set`` overrides one of its
site values (``definitions.site``) everywhere it is used, as ``make serve``
does to point the deployments at ``make demo``'s database.
"""

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.schedules import construct_schedule

from deployments.config import PREFECT_YAML, SiteError, load_deployments, load_flow

SCHEDULE_FIELDS = ("cron", "interval", "anchor_date", "timezone", "rrule")


def build(path: Path = PREFECT_YAML, site: Mapping[str, object] | None = None, only: Sequence[str] = ()) -> list[Any]:
    """RunnerDeployments for prefect.yaml's deployments (those named in ``only``, if given)."""
    specs = load_deployments(path, site)
    unknown = set(only) - {spec["name"] for spec in specs}
    if unknown:
        raise SiteError(f"no deployment named {', '.join(sorted(unknown))} in {path}")
    built = []
    for spec in specs:
        if only and spec["name"] not in only:
            continue
        try:
            flow = load_flow(spec["entrypoint"])
        except (ImportError, AttributeError) as exc:
            raise SiteError(f"deployment {spec['name']}: {spec['entrypoint']} does not import ({exc})") from exc
        schedules = [
            construct_schedule(**{k: v for k, v in s.items() if k in SCHEDULE_FIELDS})
            for s in spec.get("schedules") or []
        ]
        built.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters"),
                schedules=schedules or None,
                concurrency_limit=_concurrency(spec.get("concurrency_limit")),
                enforce_parameter_schema=spec.get("enforce_parameter_schema", True),
            )
        )
    return built


def _concurrency(value: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    return ConcurrencyLimitConfig(**value) if isinstance(value, dict) else value


def parse_site_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. database=/srv/app.db)")
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=PREFECT_YAML, help="the prefect.yaml to read")
    parser.add_argument(
        "--set",
        dest="site",
        type=parse_site_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a site value of prefect.yaml (database, replica, restore_output, ship_window)",
    )
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="serve only this deployment")
    args = parser.parse_args(argv)
    try:
        deployments = build(args.file, dict(args.site), args.only)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(*deployments)


if __name__ == "__main__":
    main()
