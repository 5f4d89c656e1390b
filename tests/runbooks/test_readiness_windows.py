"""Readiness of the maintenance windows (runbooks/maintenance_windows.py) on a fake clock: each
window declared for an environment has a next opening, hand-computed from its crontab (the
oracle); one that does not open within the scheduler's horizon is a finding naming it, and
the same window becomes known once its opening comes within reach."""

from __future__ import annotations

from datetime import UTC, datetime

from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.schedules import MaintenanceWindow, SchedulesFile
from runbooks.engine.readiness import Finding
from runbooks.engine.registry import Registry
from runbooks.maintenance_windows import maintenance_windows
from tests.conftest import ROOT, EngineFactory
from tests.engine import world
from tests.support.people import ALICE


def at(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


def windows(*declared: MaintenanceWindow) -> Config:
    base = load_config(ROOT / "config")
    return Config(
        base.directory,
        base.environments,
        base.policy,
        SchedulesFile.model_construct(
            drills=[], maintenance_windows=list(declared), readiness=base.schedules.readiness
        ),
    )


def findings(make_engine: EngineFactory, cfg: Config, clock: FakeClock) -> dict[str, Finding]:
    engine = make_engine(
        config=cfg, clock=clock, registry=Registry(world.SPECS, checks=[maintenance_windows])
    )
    report = engine.readiness(actor=ALICE, environment="development", runbook="environment")
    return {f.subject: f for f in report.findings}


SUNDAYS = MaintenanceWindow(
    name="sunday-early", start="0 2 * * sun", duration=4 * 3600, environments=["development"]
)
LEAP_DAY = MaintenanceWindow(
    name="leap-day", start="0 2 29 feb *", duration=3600, environments=["development"]
)
ELSEWHERE = MaintenanceWindow(
    name="staging-only", start="0 2 29 feb *", duration=3600, environments=["staging"]
)


def test_a_window_that_does_not_open_within_the_horizon_is_a_finding_naming_it(
    make_engine: EngineFactory,
) -> None:
    cfg = windows(SUNDAYS, LEAP_DAY, ELSEWHERE)
    clock = FakeClock(at(2027, 1, 1))  # a Friday; the next 29 February is 424 days away
    found = findings(make_engine, cfg, clock)
    assert set(found) == {"window sunday-early", "window leap-day"}  # staging's: not here
    sunday = found["window sunday-early"]
    assert sunday.ok and sunday.detail == "next opens 2027-01-03T02:00:00.000Z, for 4h00m"
    leap = found["window leap-day"]
    assert not leap.ok
    assert leap.detail.startswith(
        "start '0 2 29 feb *' (UTC) does not open within 400 days of 2027-01-01T00:00:00.000Z"
    )

    clock.advance(at(2027, 3, 1) - clock.now())  # 365 days before 2028-02-29: within reach
    found = findings(make_engine, cfg, clock)
    assert found["window leap-day"].ok
    assert found["window leap-day"].detail == "next opens 2028-02-29T02:00:00.000Z, for 1h00m"
    clock.advance(at(2027, 3, 7, 3) - clock.now())  # a Sunday, 03:00: inside the window
    assert found["window sunday-early"].ok
    assert findings(make_engine, cfg, clock)["window sunday-early"].detail == (
        "open now until 2027-03-07T06:00:00.000Z; next opens 2027-03-14T02:00:00.000Z"
    )


def test_a_window_that_does_not_parse_is_a_finding_not_an_error(
    make_engine: EngineFactory,
) -> None:
    """Configuration loading refuses such a window; a schedules file built without that
    validation still gets a finding, never a pass or a failed evaluation."""
    broken = MaintenanceWindow.model_construct(
        name="bad-hour", start="0 25 * * *", duration=3600.0, environments=["development"]
    )
    found = findings(make_engine, windows(SUNDAYS, broken), FakeClock(at(2027, 1, 1)))
    assert found["window sunday-early"].ok
    bad = found["window bad-hour"]
    assert not bad.ok and bad.detail.startswith("start '0 25 * * *' does not parse: hour")
