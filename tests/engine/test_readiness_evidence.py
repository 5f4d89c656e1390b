"""Evidence freshness (runbooks/freshness.py) on a fake clock: a monthly drill's pass counts
until its next fire + catch-up + a day to run; a failed fire makes it stale on that day, to
the second; a change of the environment's configuration makes it stale at once; no pass on
record is a finding. Dates are hand-computed from the cron (the oracle)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from runbooks.engine.clock import FakeClock
from runbooks.engine.config.environments import EnvironmentsFile
from runbooks.engine.config.loader import Config
from runbooks.engine.readiness import Finding
from runbooks.engine.registry import Registry
from runbooks.freshness import drill_evidence
from tests.conftest import EngineFactory
from tests.engine import world
from tests.support.drill_world import START, World, config
from tests.support.people import ALICE

DRILL = {
    "name": "monthly-measure",
    "runbook": "test.measure",
    "params": {"environment": "development"},
    "cron": "0 3 1 * *",  # 03:00 UTC on the 1st; catch_up: the default day
}


def at(month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(2027, month, day, hour, minute, tzinfo=UTC).timestamp()


def evidence(w: World) -> Finding:
    report = w.engine.readiness(actor=ALICE, environment="development", runbook="drills")
    (found,) = report.findings
    assert found.subject == "drill monthly-measure"
    return found


def registry() -> Registry:
    return Registry(world.SPECS, checks=[drill_evidence])


def test_a_pass_counts_until_the_next_fire_plus_catch_up_plus_a_day(
    make_engine: EngineFactory,
) -> None:
    clock = FakeClock(START)  # 2027-01-01 00:00 UTC
    w = World(make_engine, config(DRILL), clock, registry=registry())
    # A new installation: nothing is missing before its first fire could have passed.
    assert evidence(w).detail == "no passing run yet; the first is due by 2027-01-03T03:00:00.000Z"

    w.run_until(at(1, 1, 4))  # the 1 January fire passes
    passed = evidence(w)
    assert passed.ok, passed.detail
    assert "due again by 2027-02-03T03:00:00.000Z" in passed.detail  # 1 Feb 03:00 + 1 d + 1 d

    world.MEASURED.append((-1.0, 0.0))  # the 1 February fire fails
    w.run_until(at(2, 3, 2, 59))
    clock.advance(at(2, 3, 2, 59) - clock.now())
    assert evidence(w).ok  # still within the cadence: 3 February 02:59
    clock.advance(at(2, 3, 3, 1) - clock.now())
    stale = evidence(w)
    assert not stale.ok
    assert "the fire of 2027-02-01T03:00:00.000Z brought no pass" in stale.detail
    assert stale.detail.endswith("stale since 2027-02-03T03:00:00.000Z")


def test_a_change_of_the_environments_configuration_makes_the_evidence_stale(
    make_engine: EngineFactory,
) -> None:
    clock = FakeClock(START)
    cfg = config(DRILL)
    w = World(make_engine, cfg, clock, registry=registry())
    w.run_until(at(1, 1, 4))
    assert evidence(w).ok

    # Another engine on the same store, with development's scaling limits changed.
    doc: dict[str, Any] = cfg.environments.model_dump(mode="json")
    doc["environments"]["development"]["scaling"]["max_replicas"] = 9
    changed = Config(cfg.directory, EnvironmentsFile.model_validate(doc), cfg.policy, cfg.schedules)
    after = World(make_engine, changed, clock, registry=registry())
    found = evidence(after)
    assert not found.ok
    assert found.detail.startswith(
        "stale after a material change: development's configuration changed since the last "
        "pass (2027-01-01T03:01:00.000Z"
    )
    # Under the configuration the drill passed on, it still counts.
    assert evidence(w).ok


def test_a_drill_that_never_passed_is_missing_evidence_after_its_first_fire(
    make_engine: EngineFactory,
) -> None:
    clock = FakeClock(START)
    w = World(make_engine, config(DRILL), clock, registry=registry())
    assert evidence(w).ok  # audits this first evaluation: the installation's start
    world.MEASURED.append((-1.0, 0.0))  # the 1 January fire fails
    w.run_until(at(1, 1, 4))
    clock.advance(at(1, 3, 3, 1) - clock.now())
    missing = evidence(w)
    assert not missing.ok
    assert missing.detail.startswith(
        "no passing run of test.measure since this installation started "
        "(2027-01-01T00:00:00.000Z): the fire of 2027-01-01T03:00:00.000Z brought none"
    )
