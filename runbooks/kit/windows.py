"""Maintenance windows: the one a runbook works inside, and what its plan says about it."""

from __future__ import annotations

from typing import Protocol

from runbooks.engine.clock import iso, parse_duration, parse_iso
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.plan import PlanContext


class _Windowed(Protocol):
    @property
    def environment(self) -> str: ...

    @property
    def window(self) -> str | None: ...


def _window(ctx: PlanContext, params: _Windowed) -> tuple[str, float, float] | None:
    """(name, start, end) of the window to work in; None when none is needed or open."""
    now = ctx.clock.now()
    schedules = ctx.config.schedules
    if params.window is None:
        window = schedules.open_window(params.environment, now)
        if window is None:
            return None
        bounds = window.open_at(now)
        assert bounds is not None
        return window.name, bounds[0], bounds[1]
    if "/" in params.window:
        start_text, _, duration_text = params.window.partition("/")
        try:
            start, duration = parse_iso(start_text), parse_duration(duration_text)
        except ValueError:
            raise InvalidInput(
                f"--window {params.window!r}: expected START/DURATION like "
                "2026-11-29T02:00Z/4h, or a window name from schedules.yaml"
            ) from None
        return f"ad hoc {start_text}/{duration_text}", start, start + duration
    for window in schedules.maintenance_windows:
        if window.name == params.window:
            if params.environment not in window.environments:
                raise InvalidInput(
                    f"--window {params.window!r} is not declared for {params.environment} "
                    f"(it covers {', '.join(window.environments)})"
                )
            bounds = window.open_at(now)
            if bounds is None:
                upcoming = window.next_start(now)
                if ctx.preview and upcoming is not None:
                    return window.name, upcoming, upcoming + window.duration
                raise Refused(
                    f"maintenance window {window.name!r} is not open now"
                    + (f"; it opens at {iso(upcoming)}" if upcoming else "")
                )
            return window.name, bounds[0], bounds[1]
    names = [w.name for w in schedules.maintenance_windows] or ["none declared"]
    raise InvalidInput(f"--window {params.window!r}: no such window; known: {', '.join(names)}")


def window_notes(ctx: PlanContext, params: _Windowed) -> tuple[float | None, list[str]]:
    """The end of the window to work in (None: none) and the plan's notes about it; refused
    when a named or ad hoc window is not open now."""
    window = _window(ctx, params)
    now = ctx.clock.now()
    if window is not None:
        name, start, end = window
        if not start <= now < end:
            message = f"maintenance window {name} is not open now ({iso(start)} to {iso(end)})"
            if ctx.preview and now < start:
                # A dry run of a window to come: plan it, and say the real request must wait.
                ctx.refuse_now(f"{message}; it opens at {iso(start)}")
                return end, [
                    f"window {name}: {iso(start)} to {iso(end)}; NOT OPEN NOW: the real request "
                    "is refused until it opens"
                ]
            raise Refused(message)
        # No "time left" here: the plan is hashed, and it must not change by the second.
        return end, [f"window {name}: until {iso(end)}"]
    if ctx.break_glass:
        return None, ["BREAK-GLASS: no maintenance window open"]
    return None, [f"no maintenance window is declared open for {params.environment} now"]
