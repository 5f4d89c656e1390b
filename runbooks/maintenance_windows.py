"""Readiness of the maintenance windows: each window declared for an environment parses and
has a next opening.

The windowed runbooks (``maintenance.resize``, ``maintenance.resources``) and policy's
``maintenance_window: true`` rules all work inside the windows of ``schedules.yaml``; a window
whose crontab never fires within the horizon the scheduler looks over (``HORIZON``, about 400
days: ``0 2 29 feb *`` in a year before a leap year, ``0 2 31 apr *`` never) leaves them
nothing to work in, found the night a change must go in. One check per environment, beside
credentials and reach (the pseudo-runbook ``environment``), not a copy per windowed runbook.
"""

from __future__ import annotations

from collections.abc import Iterator

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.schedules import HORIZON, cron_trigger
from runbooks.engine.plan import PlanContext
from runbooks.engine.readiness import ENVIRONMENT_WIDE, Observation, readiness_check


@readiness_check(ENVIRONMENT_WIDE, "maintenance windows")
def maintenance_windows(ctx: PlanContext) -> Iterator[Observation]:
    """Each maintenance window declared for the environment parses, and its next opening is
    known (within the scheduler's horizon)."""
    now = ctx.clock.now()
    for window in ctx.config.schedules.maintenance_windows:
        if ctx.environment not in window.environments:
            continue
        subject = f"window {window.name}"
        try:
            cron_trigger(window.start)
        except ValueError as exc:
            yield subject, False, f"start {window.start!r} does not parse: {exc}"
            continue
        upcoming = window.next_start(now)
        if upcoming is None:
            yield (
                subject,
                False,
                (
                    f"start {window.start!r} (UTC) does not open within "
                    f"{HORIZON.days} days of {iso(now)}: the windowed runbooks of "
                    f"{ctx.environment} have no window to work in (schedules.yaml)"
                ),
            )
            continue
        length = format_duration(window.duration)
        bounds = window.open_at(now)
        if bounds is not None:
            yield subject, True, f"open now until {iso(bounds[1])}; next opens {iso(upcoming)}"
        else:
            yield subject, True, f"next opens {iso(upcoming)}, for {length}"
