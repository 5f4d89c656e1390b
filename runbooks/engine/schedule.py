"""``schedules.yaml``: maintenance windows and drills.

Cron expressions have five fields (minute hour day-of-month month day-of-week). Maintenance
windows are evaluated in UTC; a drill's cron in its ``timezone`` (default UTC). Day-of-week
must use names (``mon``, ``sat-sun``): cron counts Sunday as 0 and APScheduler counts Monday as
0, so a number would mean different days to different readers.

Daylight saving time, for a drill in a zone that has it: a local time that occurs twice (the
autumn hour) fires once, at its first occurrence; a local time that does not exist (the spring
hour) fires at the first instant after the gap, so a monthly drill is never skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runbooks.engine.config import Seconds, load_optional_file
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


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}; use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None


def fire_times(cron: Cron, zone: ZoneInfo, after: float) -> Iterator[float]:
    """The instants (epoch seconds, ascending) after ``after`` at which ``cron``, read as
    wall-clock time in ``zone``, fires. Endless; take what you need."""
    start = datetime.fromtimestamp(after, tz=UTC).astimezone(zone)
    day = start.date() - timedelta(days=1)  # a fire late on the previous local day may be next
    hours, minutes = sorted(cron.hours), sorted(cron.minutes)
    last = after
    while True:
        if _day_matches(cron, day):
            for hour in hours:
                for minute in minutes:
                    instant = _instant(day, hour, minute, zone)
                    if instant > last:
                        last = instant
                        yield instant
        day += timedelta(days=1)


def _day_matches(cron: Cron, day: date) -> bool:
    if day.month not in cron.months:
        return False
    day_ok, weekday_ok = day.day in cron.days, day.weekday() in cron.weekdays
    if cron.any_day or cron.any_weekday:
        return day_ok and weekday_ok
    return day_ok or weekday_ok


def _instant(day: date, hour: int, minute: int, zone: ZoneInfo) -> float:
    """The first instant of a local wall-clock time; for one inside a DST gap, the gap's end."""
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    instant = local.replace(fold=0).timestamp()
    back = datetime.fromtimestamp(instant, tz=UTC).astimezone(zone)
    if (back.hour, back.minute) == (hour, minute):
        return instant
    # A time that does not exist locally: fold=1 reads it with the offset after the change
    # (an instant before the change), fold=0 with the one before (an instant after it). The
    # change itself, between the two, is where the gap ends.
    earlier = local.replace(fold=1).timestamp()
    offset = datetime.fromtimestamp(earlier, tz=zone).utcoffset()
    moment = earlier
    while moment < instant and datetime.fromtimestamp(moment, tz=zone).utcoffset() == offset:
        moment += 60
    return moment


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DEFAULT_LEAD_TIMES = (24 * 3600.0, 3600.0)


class Drill(BaseModel):
    """A recurring runbook run: a drill (restore test, partial failover, DR simulation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(description="five fields, weekdays by name, read in ``timezone``")
    timezone: str = "UTC"
    #: Slack channel id for the announcements (before, at start, the result).
    channel: str | None = None
    #: How long before each fire it is announced (default 24 h and 1 h).
    notify_before: list[Seconds] = Field(default_factory=lambda: list(DEFAULT_LEAD_TIMES))
    #: How late a missed fire may still run (the bot was down); older ones are recorded as
    #: missed and announced.
    catch_up: Seconds = 86400.0
    #: A fire while the previous run of the drill is still going: skip it, or queue one.
    overlap: Literal["skip", "queue-one"] = "skip"
    #: Whether policy may treat the drill's request as approved in advance.
    pre_approved: bool = False

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"drill name {value!r} must be lower-case letters, digits and dashes "
                "(e.g. monthly-restore-test)"
            )
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        Cron.parse(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("notify_before")
    @classmethod
    def _leads(cls, value: list[float]) -> list[float]:
        if any(lead <= 0 for lead in value):
            raise ValueError("notify_before times must be positive (e.g. [24h, 1h])")
        return sorted(set(value), reverse=True)

    @field_validator("catch_up")
    @classmethod
    def _catch_up(cls, value: float) -> float:
        if value < 0:
            raise ValueError("catch_up must not be negative (0: never run a missed fire)")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    def fires_after(self, after: float) -> Iterator[float]:
        return fire_times(Cron.parse(self.cron), self.zone, after)

    def next_fire(self, after: float) -> float:
        return next(self.fires_after(after))

    def local(self, instant: float) -> str:
        """``2026-12-01 10:00 EST``: a fire time as people in the drill's zone read it."""
        return datetime.fromtimestamp(instant, tz=self.zone).strftime("%Y-%m-%d %H:%M %Z")


class ReadinessSchedule(BaseModel):
    """How often the leader checks every runbook's readiness, and how often a finding that
    stays open is announced again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: Seconds = Field(1800.0, description="between evaluations (default 30m)")
    reannounce: Seconds = Field(86400.0, description="an open finding again (default 24h)")
    first_after: Seconds = Field(
        300.0, description="the first evaluation after a leader first starts (default 5m)"
    )
    enabled: bool = True

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 60:
            raise ValueError("interval must be at least 1m")
        return value


class SchedulesFile(BaseModel):
    """``schedules.yaml``: maintenance windows, drills and the readiness evaluation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drills: list[Drill] = Field(default_factory=list)
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    readiness: ReadinessSchedule = ReadinessSchedule()

    @model_validator(mode="after")
    def _unique_names(self) -> SchedulesFile:
        for kind, names in (
            ("drills", [d.name for d in self.drills]),
            ("maintenance_windows", [w.name for w in self.maintenance_windows]),
        ):
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{kind}: the name {name!r} is used twice")
                seen.add(name)
        return self

    def drill(self, name: str) -> Drill | None:
        return next((d for d in self.drills if d.name == name), None)

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


def drill_problems(schedules: SchedulesFile, registry: Any, config: Any) -> list[str]:
    """Every drill checked against the runbooks it names: the runbook exists and its
    parameters validate (as a request would validate them), and a drill that says
    ``pre_approved`` is one policy lets run without approvals. Problems, in words."""
    from runbooks.engine.params import validate_params

    problems = []
    known = sorted(spec.name for spec in registry)
    for index, drill in enumerate(schedules.drills):
        where = f"schedules.yaml: drills[{index}] ({drill.name})"
        try:
            spec = registry.get(drill.runbook)
        except Exception:
            problems.append(
                f"{where}: runbook {drill.runbook!r} is not in the catalog; known: "
                f"{', '.join(known)}"
            )
            continue
        try:
            params = validate_params(spec.params, dict(drill.params), config)
        except Exception as exc:
            problems.append(f"{where}: params: {getattr(exc, 'message', exc)}")
            continue
        if drill.pre_approved:
            from runbooks.engine.approvals import ConfigPolicy

            environment = str(getattr(params, "environment", ""))
            gate = ConfigPolicy(config).gate(spec.name, environment, read_only=spec.read_only)
            if gate.required:
                problems.append(
                    f"{where}: pre_approved: true, but policy.yaml ({gate.rule}) requires "
                    f"{gate.required} approval(s) for {spec.name} in {environment}: "
                    "schedules.yaml cannot approve itself; remove pre_approved, or give the "
                    "group `drills` a rule with approvals: 0 in policy.yaml"
                )
    return problems


def require_valid_drills(config: Any, registry: Any) -> None:
    """Raise ConfigError naming every drill that names an unknown runbook or bad parameters
    (the bot calls it at start, the ``drills.*`` and ``config.check`` tasks too)."""
    problems = drill_problems(config.schedules, registry, config)
    if problems:
        raise ConfigError("\n".join(problems))


def load_schedules(path: Path) -> SchedulesFile:
    """Read and validate ``schedules.yaml`` (a missing file means no schedules)."""
    return load_optional_file(path, SchedulesFile)
