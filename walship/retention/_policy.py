"""What a retention policy promises, and how its durations are written."""

import re
from datetime import timedelta
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["LEFTOVER_AGE", "RetentionPolicy", "format_duration", "parse_duration"]

# A leftover of an interrupted upload goes once untouched this long (and only when no live upload holds it):
# a live upload writes its file every few seconds at the slowest.
LEFTOVER_AGE = timedelta(hours=1)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``7d``, ``36h``, ``1d12h``, ``2w``: a positive number of weeks, days, hours, minutes, seconds."""
    cleaned = text.strip().lower()
    if not _DURATION.match(cleaned):
        raise ValueError(
            f"duration {text!r} is not understood: write a number and a unit (s, m, h, d, w), e.g. 7d, 36h or 1d12h"
        )
    seconds = sum(int(count) * _UNITS[unit] for count, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"duration {text!r} keeps nothing: give a positive duration such as 7d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds has a unit")


class RetentionPolicy(BaseModel):
    """Which snapshots to keep; every kept snapshot keeps the WAL after it.

    Rules add up: a snapshot is kept if any rule keeps it, and the newest
    snapshot is always kept. Calendar rules count back from now in UTC:
    ``keep_daily=7`` keeps the newest snapshot of each of the last 7 days
    (today included), weekly uses ISO weeks, monthly calendar months.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    keep_last: int | None = Field(default=None, ge=0, description="the newest N snapshots")
    keep_within: str | None = Field(default=None, description="everything newer than this, e.g. 7d or 36h")
    keep_daily: int = Field(default=0, ge=0, description="newest snapshot of each of the last N days")
    keep_weekly: int = Field(default=0, ge=0, description="newest snapshot of each of the last N ISO weeks")
    keep_monthly: int = Field(default=0, ge=0, description="newest snapshot of each of the last N months")

    @field_validator("keep_within")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _keeps_something(self) -> Self:
        if not (self.keep_last or self.keep_within or self.keep_daily or self.keep_weekly or self.keep_monthly):
            raise ValueError(
                "this policy keeps nothing: give at least one of keep-last, keep-within, "
                "keep-daily, keep-weekly or keep-monthly (a positive value)"
            )
        return self

    @property
    def window(self) -> timedelta | None:
        return parse_duration(self.keep_within) if self.keep_within else None

    @property
    def calendar(self) -> dict[str, int]:
        """The calendar rules in use, e.g. ``{"daily": 7, "monthly": 12}``."""
        counts = {"daily": self.keep_daily, "weekly": self.keep_weekly, "monthly": self.keep_monthly}
        return {period: count for period, count in counts.items() if count}

    def describe(self) -> str:
        rules = []
        if self.keep_last:
            rules.append(f"last {self.keep_last}")
        if self.keep_within:
            rules.append(f"within {format_duration(parse_duration(self.keep_within))}")
        rules += [f"{period} x{count}" for period, count in self.calendar.items()]
        return ", ".join(rules)
