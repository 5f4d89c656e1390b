"""``schedules.yaml``: maintenance windows (and, with the scheduler issue, drills).

Cron expressions have five fields (minute hour day-of-month month day-of-week), evaluated in
UTC. Day-of-week must use names (``mon``, ``sat-sun``): cron counts Sunday as 0 and APScheduler
counts Monday as 0, so a number would mean different days to different readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runbooks.engine import yamlfile
from runbooks.engine.config import Seconds, format_validation_error
from runbooks.engine.errors import ConfigError

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {d: i for i, d in enumerate(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])}
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
#: Longest window we look back over (minutes): 7 days.
MAX_WINDOW_MINUTES = 7 * 24 * 60


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression (UTC); day of week 0 = Monday internally."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @staticmethod
    def parse(text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise ValueError(
                f"cron {text!r} needs 5 fields (minute hour day month weekday), found {len(parts)}"
            )
        minutes, hours, days, months, weekdays = (
            frozenset(_parse_field(part, name, low, high, names))
            for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True)
        )
        return Cron(text, minutes, hours, days, months, weekdays, parts[2] == "*", parts[4] == "*")

    def matches(self, moment: datetime) -> bool:
        if moment.minute not in self.minutes or moment.hour not in self.hours:
            return False
        if moment.month not in self.months:
            return False
        day_ok, weekday_ok = moment.day in self.days, moment.weekday() in self.weekdays
        if self.any_day or self.any_weekday:  # cron: both restricted means either may match
            return day_ok and weekday_ok
        return day_ok or weekday_ok


def _parse_field(
    part: str, name: str, low: int, high: int, names: dict[str, int] | None
) -> set[int]:
    values: set[int] = set()
    for item in part.lower().split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"{name}: step {step_text!r} must be a positive number")
        if body == "*":
            start, end = low, high
        else:
            first, _, last = body.partition("-")
            start = _value(first, name, low, high, names)
            end = _value(last, name, low, high, names) if last else (high if step else start)
        if end < start:
            raise ValueError(f"{name}: range {body!r} runs backwards")
        values.update(range(start, end + 1, step or 1))
    return values


def _value(token: str, name: str, low: int, high: int, names: dict[str, int] | None) -> int:
    if name == "day of week" and token.isdigit():
        raise ValueError(
            "day of week must be a name (mon, tue, wed, thu, fri, sat, sun), not "
            f"{token!r}: cron and APScheduler number weekdays differently"
        )
    if names and token in names:
        return names[token]
    if not token.isdigit() or not low <= int(token) <= high:
        allowed = f"{low}-{high}" + (f" or {', '.join(names)}" if names else "")
        raise ValueError(f"{name}: {token!r} is not allowed; use {allowed}")
    return int(token)


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    start: str = Field(description="cron expression in UTC, weekdays by name")
    duration: Seconds
    environments: list[str] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _cron(cls, value: str) -> str:
        Cron.parse(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if not 60 <= value <= MAX_WINDOW_MINUTES * 60:
            raise ValueError("duration must be between 1m and 7d")
        return value

    def open_at(self, now: float) -> tuple[float, float] | None:
        """(start, end) of the occurrence that contains ``now``, if any."""
        cron = Cron.parse(self.start)
        moment = datetime.fromtimestamp(now, tz=UTC).replace(second=0, microsecond=0)
        for back in range(int(self.duration // 60) + 1):
            candidate = moment - timedelta(minutes=back)
            start = candidate.timestamp()
            if start + self.duration > now and cron.matches(candidate):
                return start, start + self.duration
        return None

    def next_start(self, now: float, *, horizon_days: int = 62) -> float | None:
        cron = Cron.parse(self.start)
        moment = datetime.fromtimestamp(now, tz=UTC).replace(second=0, microsecond=0)
        for ahead in range(1, horizon_days * 24 * 60):
            candidate = moment + timedelta(minutes=ahead)
            if cron.matches(candidate):
                return candidate.timestamp()
        return None


class SchedulesFile(BaseModel):
    """``schedules.yaml``; ``drills`` gain their schema with the scheduler issue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drills: list[dict[str, Any]] = Field(default_factory=list)
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)

    def open_window(self, environment: str, now: float) -> MaintenanceWindow | None:
        for window in self.maintenance_windows:
            if environment in window.environments and window.open_at(now):
                return window
        return None

    def next_window(self, environment: str, now: float) -> tuple[MaintenanceWindow, float] | None:
        upcoming = [
            (window, start)
            for window in self.maintenance_windows
            if environment in window.environments and (start := window.next_start(now)) is not None
        ]
        return min(upcoming, key=lambda pair: pair[1]) if upcoming else None


def load_schedules(path: Path) -> SchedulesFile:
    """Read and validate ``schedules.yaml`` (a missing file means no schedules)."""
    if not path.exists():
        return SchedulesFile()
    try:
        data = yamlfile.load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(
            f"{path}:{where} malformed YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    try:
        return SchedulesFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None
