"""Fire times from croniter: an implementation of crontab independent of the one the code uses
(APScheduler's CronTrigger), to judge fire times against."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]


def croniter_fires(cron: str, zone: str, start: float, end: float) -> list[float]:
    """Fires in [start, end) of ``cron`` read in ``zone``. croniter fires the hour that repeats
    when daylight saving time ends twice; crontab(5) fires it once, in its first pass: a fire
    whose local wall-clock time is not later than the one before it is dropped."""
    tz = ZoneInfo(zone)
    times = croniter(cron, datetime.fromtimestamp(start - 1, tz=tz))
    found: list[float] = []
    last_wall = None
    while (instant := times.get_next(float)) < end:
        wall = datetime.fromtimestamp(instant, tz=tz).replace(tzinfo=None)
        if last_wall is not None and wall <= last_wall:
            continue
        last_wall = wall
        found.append(instant)
    return found
