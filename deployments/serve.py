"""Serve every deployment in prefect.yaml from this host, with no worker.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python -m deployments.serve

Schedules, concurrency limits and parameters come from prefect.yaml, so the
file stays the one place they are declared.
"""

from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.client.schemas.schedules import construct_schedule

from deployments.config import load_deployments, load_flow


def build() -> list[Any]:
    built = []
    for spec in load_deployments():
        flow = load_flow(spec["entrypoint"])
        schedules = [
            construct_schedule(**{k: v for k, v in s.items() if k in ("cron", "interval", "timezone", "rrule")})
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
            )
        )
    return built


def _concurrency(value: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    return ConcurrencyLimitConfig(**value) if isinstance(value, dict) else value


if __name__ == "__main__":
    serve(*build())
