"""``schedules.yaml``: maintenance windows and drills.

Cron expressions are standard crontab: five fields (minute hour day-of-month month
day-of-week), names or numbers, ranges, lists and steps. APScheduler's ``CronTrigger`` does
the calendar arithmetic (timezones and daylight saving time included); this module only reads
two crontab rules into it that APScheduler counts differently:

1. Day-of-week numbers mean what they mean to cron: 0 and 7 are Sunday, 1 Monday, 6 Saturday
   (APScheduler counts Monday as 0), so ``0 9 * * 1-5`` fires on weekdays as crontab(5) says.
2. When both day of month and day of week are restricted, either one matching fires
   (crontab(5); APScheduler alone wants both), e.g. ``0 2 1 * mon`` is the 1st and every Monday.

Maintenance windows are evaluated in UTC; a drill's cron in its ``timezone`` (default UTC).
Daylight saving time, as crontab(5) has it: a local time that occurs twice (the autumn hour)
fires once, at its first occurrence; a local time that does not exist (the spring hour) fires
at the first instant after the gap, so a monthly drill is never skipped (``fire_times``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runbooks.engine.config.yaml_files import Seconds, load_optional_file

if TYPE_CHECKING:
    from apscheduler.triggers.base import BaseTrigger  # type: ignore[import-untyped]

#: Longest window we look back over (minutes): 7 days.
MAX_WINDOW_MINUTES = 7 * 24 * 60
#: How far ahead the next window or fire is looked for before saying "none".
HORIZON = timedelta(days=400)
_FIELDS = (
    ("minute", "minute"),
    ("hour", "hour"),
    ("day of month", "day"),
    ("month", "month"),
)
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(text: str) -> BaseTrigger:
    """APScheduler's trigger for the crontab expression ``text`` on the wall clock (its times
    are wall-clock times: ``fire_times`` reads them in a zone); a ValueError naming the field
    says what is wrong with a bad expression."""
    # Imported here: APScheduler costs ~45 ms to import, and `invoke --list` stays fast.
    from apscheduler.triggers.combining import OrTrigger  # type: ignore[import-untyped]
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    parts = text.split()
    if len(parts) != 5:
        raise ValueError(
            f"cron {text!r} needs 5 fields (minute hour day month weekday), found {len(parts)}"
        )
    fields: dict[str, str] = {}
    for (label, key), value in zip(_FIELDS, parts, strict=False):
        try:
            CronTrigger(**{key: value}, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{label}: {value!r} is not allowed ({exc})") from None
        fields[key] = value
    weekdays = _weekday_names(parts[4])

    def trigger(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(**{**fields, "day": day}, day_of_week=day_of_week, timezone=UTC)

    if fields["day"] != "*" and weekdays != "*":
        return OrTrigger([trigger(fields["day"], "*"), trigger("*", weekdays)])
    return trigger(fields["day"], weekdays)


def _weekday_names(field: str) -> str:
    """A crontab day-of-week field as APScheduler reads it unambiguously: names (``*`` as is)."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        body, slash, step_text = item.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"day of week: step {step_text!r} must be a positive number")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        else:
            low, dash, high = body.partition("-")
            first = _weekday(low)
            last = _weekday(high) if dash else (6 if slash else first)
            if last < first:
                raise ValueError(
                    f"day of week: range {body!r} runs backwards (crontab ranges do not wrap)"
                )
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_CRON_DAYS[day] for day in sorted(days))


def _weekday(token: str) -> int:
    if token in _CRON_DAYS:
        return _CRON_DAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token)
    raise ValueError(
        f"day of week: {token!r} is not allowed; use 0-7 (0 and 7: Sunday, as in crontab) "
        "or sun, mon, tue, wed, thu, fri, sat"
    )


def fire_times(trigger: BaseTrigger, after: float, zone: tzinfo = UTC) -> Iterator[float]:
    """The instants (epoch seconds, ascending) after ``after`` at which ``trigger`` (a
    ``cron_trigger``: wall-clock times) fires as wall-clock time in ``zone``. Endless (or until
    the calendar has no more); take what you need.

    The trigger walks the wall clock, where every local time occurs once; ``_instant`` turns
    each into the instant it names. So, as in crontab(5): the hour that repeats when daylight
    saving time ends fires in its first pass only, and a time inside the spring gap fires
    when the gap ends (never skipped)."""
    wall = datetime.fromtimestamp(after, tz=zone).replace(tzinfo=UTC)
    previous = None
    now = wall + timedelta(microseconds=1)
    while (fire := trigger.get_next_fire_time(previous, now)) is not None:
        previous = now = fire
        instant = _instant(fire.replace(tzinfo=None), zone)
        if instant > after:
            after = instant
            yield instant


def _instant(wall: datetime, zone: tzinfo) -> float:
    """The first instant of a local wall-clock time; for one inside a DST gap, the gap's end."""
    local = wall.replace(tzinfo=zone)
    instant = local.replace(fold=0).timestamp()
    if datetime.fromtimestamp(instant, tz=zone).replace(tzinfo=None) == wall:
        return instant
    # A time that does not exist locally: fold=1 reads it with the offset after the change
    # (an instant before the change), fold=0 with the one before (an instant after it). The
    # change itself, between the two, is where the gap ends.
    moment = local.replace(fold=1).timestamp()
    offset = datetime.fromtimestamp(moment, tz=zone).utcoffset()
    while moment < instant and datetime.fromtimestamp(moment, tz=zone).utcoffset() == offset:
        moment += 60
    return moment


def _first_after(trigger: BaseTrigger, after: float, *, within: timedelta) -> float | None:
    fire = next(fire_times(trigger, after), None)
    return fire if fire is not None and fire <= after + within.total_seconds() else None


class MaintenanceWindow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    start: str = Field(description="a crontab expression (five fields), in UTC")
    duration: Seconds
    environments: list[str] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron_trigger(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if not 60 <= value <= MAX_WINDOW_MINUTES * 60:
            raise ValueError("duration must be between 1m and 7d")
        return value

    def open_at(self, now: float) -> tuple[float, float] | None:
        """(start, end) of the occurrence that contains ``now``, if any."""
        started = _first_after(
            cron_trigger(self.start), now - self.duration, within=timedelta(seconds=self.duration)
        )
        if started is None or started > now:
            return None
        return started, started + self.duration

    def next_start(self, now: float) -> float | None:
        """The next start after ``now`` (None if there is none within about a year)."""
        return _first_after(cron_trigger(self.start), now, within=HORIZON)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {name!r}; use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None


_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DEFAULT_LEAD_TIMES = (24 * 3600.0, 3600.0)


class Drill(BaseModel):
    """A recurring runbook run: a drill (restore test, partial failover, DR simulation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    runbook: str
    params: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(description="a crontab expression (five fields), read in ``timezone``")
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
        cron_trigger(value)
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
        return fire_times(cron_trigger(self.cron), after, self.zone)

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


def load_schedules(path: Path) -> SchedulesFile:
    """Read and validate ``schedules.yaml`` (a missing file means no schedules)."""
    return load_optional_file(path, SchedulesFile)
