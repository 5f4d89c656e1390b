"""Drills in schedules.yaml: validated against the catalog at load time, fire times in a
stated timezone (croniter as the independent cron evaluation), DST."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from runbooks.catalog import load_catalog
from runbooks.engine.config.loader import load_config
from runbooks.engine.config.schedules import Drill, SchedulesFile, load_schedules
from runbooks.engine.errors import ConfigError
from runbooks.engine.requesters.drills import drill_problems
from tests.conftest import ROOT, run_cli
from tests.support.cron_oracle import croniter_fires

SHIPPED = load_schedules(ROOT / "schedules.yaml")
YEAR = (datetime(2027, 1, 1, tzinfo=UTC).timestamp(), datetime(2028, 1, 1, tzinfo=UTC).timestamp())


def fires(drill: Drill, start: float, end: float) -> list[float]:
    found: list[float] = []
    for instant in drill.fires_after(start - 1):
        if instant >= end:
            return found
        found.append(instant)
    return found


def oracle(drill: Drill, start: float, end: float) -> list[float]:
    """croniter's evaluation of the same expression in the same zone."""
    return croniter_fires(drill.cron, drill.timezone, start, end)


def test_the_spec_cadence_ships() -> None:
    by_runbook = {d.name: d.runbook for d in SHIPPED.drills}
    assert by_runbook == {
        "monthly-restore-test": "restore.test",
        "quarterly-partial-failover": "dr.failover",
        "annual-dr-simulation": "dr.simulate",
        "annual-region-failure": "dr.simulate",
    }
    config = load_config(ROOT / "config", schedules=ROOT / "schedules.yaml")
    assert drill_problems(config.schedules, load_catalog(), config) == []


@pytest.mark.parametrize("drill", SHIPPED.drills, ids=[d.name for d in SHIPPED.drills])
def test_a_year_of_fires_matches_an_independent_cron_evaluation(drill: Drill) -> None:
    ours = fires(drill, *YEAR)
    assert ours == oracle(drill, *YEAR)
    expected = {"monthly-restore-test": 12, "quarterly-partial-failover": 4}
    assert len(ours) == expected.get(drill.name, 1)


def test_a_new_york_drill_keeps_its_local_time_across_dst() -> None:
    drill = Drill(name="q", runbook="dr.failover", cron="0 10 15 * *", timezone="America/New_York")
    local = [drill.local(t) for t in fires(drill, *YEAR)]
    assert local[:4] == [
        "2027-01-15 10:00 EST",
        "2027-02-15 10:00 EST",
        "2027-03-15 10:00 EDT",
        "2027-04-15 10:00 EDT",
    ]
    utc = [datetime.fromtimestamp(t, UTC).hour for t in fires(drill, *YEAR)]
    assert utc[:4] == [15, 15, 14, 14]


@pytest.mark.parametrize(
    ("cron", "zone"),
    [
        ("0 9 * * 1-5", "America/New_York"),  # numbers mean crontab's days: Monday to Friday
        ("*/20 2 * * 0,7", "Europe/Berlin"),  # 0 and 7 are Sunday; 02:xx repeats in October
        ("15 10 * * */2", "UTC"),  # every other day from Sunday: Sun, Tue, Thu, Sat
        ("30 2 * * *", "America/New_York"),  # 02:30 does not exist on the spring night
        ("30 1 * * *", "America/New_York"),  # 01:30 happens twice on the autumn night
        ("0 2 1 * mon", "Europe/Berlin"),  # day and weekday both given: either one fires
        ("0 0 29 2 *", "UTC"),  # 2027 has no 29 February
    ],
)
def test_crontab_expressions_fire_as_an_independent_crontab_says(cron: str, zone: str) -> None:
    drill = Drill(name="c", runbook="r", cron=cron, timezone=zone)
    assert fires(drill, *YEAR) == croniter_fires(cron, zone, *YEAR)


def test_a_time_in_the_spring_gap_fires_at_its_end_and_an_autumn_time_fires_once() -> None:
    spring = Drill(name="s", runbook="r", cron="30 2 * * *", timezone="America/New_York")
    start = datetime(2027, 3, 13, 12, tzinfo=UTC).timestamp()
    got = [spring.local(next(spring.fires_after(start)))]
    assert got == ["2027-03-14 03:00 EDT"]  # 02:30 does not exist that day: never skipped
    autumn = Drill(name="a", runbook="r", cron="30 1 * * *", timezone="America/New_York")
    start = datetime(2027, 11, 6, 12, tzinfo=UTC).timestamp()
    iterator = autumn.fires_after(start)
    two = [autumn.local(next(iterator)) for _ in range(2)]
    assert two == ["2027-11-07 01:30 EDT", "2027-11-08 01:30 EST"]  # 01:30 happened twice


def _schedules(tmp_path: Path, drill: str) -> Path:
    path = tmp_path / "schedules.yaml"
    path.write_text(f"drills:\n  - {drill}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("drill", "message"),
    [
        (
            "{name: d, runbook: restore.test, cron: '0 3 * * 8'}",
            "day of week: '8' is not allowed; use 0-7",
        ),
        (
            "{name: d, runbook: restore.test, cron: '0 3 * * *', timezone: Mars/Olympus}",
            "unknown timezone 'Mars/Olympus'",
        ),
        ("{name: D!, runbook: restore.test, cron: '0 3 * * *'}", "must be lower-case letters"),
        (
            "{name: d, runbook: restore.test, cron: '0 3 * * *', overlap: always}",
            r"drills\[0\]\.overlap: must be 'skip' or 'queue-one'",
        ),
    ],
)
def test_a_bad_drill_is_refused_naming_the_file_and_key(
    tmp_path: Path, drill: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_schedules(_schedules(tmp_path, drill))
    assert str(tmp_path / "schedules.yaml") in caught.value.message


def test_two_drills_with_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "drills:\n"
        "  - {name: d, runbook: restore.test, cron: '0 3 * * *'}\n"
        "  - {name: d, runbook: restore.test, cron: '0 4 * * *'}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="the name 'd' is used twice"):
        load_schedules(path)


@pytest.mark.slow  # the CLI (or the bot) as a process
@pytest.mark.parametrize(
    ("drill", "message"),
    [
        (
            "{name: d, runbook: restore.tset, cron: '0 3 * * *'}",
            "runbook 'restore.tset' is not in the catalog",
        ),
        (
            "{name: d, runbook: dr.failover, cron: '0 3 * * *', "
            "params: {region: us-west-2, partial: 90}}",
            "params: --partial: must be at most 50",
        ),
    ],
)
def test_a_drill_is_checked_against_the_catalog_when_the_bot_or_cli_starts(
    tmp_path: Path, cli_env: dict[str, str], drill: str, message: str
) -> None:
    path = _schedules(tmp_path, drill)
    result = run_cli(["drills.list"], {**cli_env, "RUNBOOK_BOT_SCHEDULES": str(path)})
    assert result.returncode == 2, result.stdout
    assert f"schedules.yaml: drills[0] (d): {message}" in result.stderr, result.stderr


@pytest.mark.slow  # the CLI (or the bot) as a process
def test_drills_list_shows_next_fire_in_utc_and_local(cli_env: dict[str, str]) -> None:
    import json

    result = run_cli(["drills.list", "--json"], cli_env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    quarterly = rows["quarterly-partial-failover"]
    assert quarterly["timezone"] == "America/New_York"
    assert quarterly["next_fire_local"].endswith(("EST", "EDT"))
    assert " 10:00 " in quarterly["next_fire_local"]
    assert rows["monthly-restore-test"]["next_fire"].endswith("T03:00:00.000Z")


@pytest.mark.slow  # the CLI (or the bot) as a process
def test_config_check_validates_the_drills_too(tmp_path: Path, cli_env: dict[str, str]) -> None:
    fine = run_cli(["config.check"], cli_env)
    assert fine.returncode == 0, fine.stderr
    assert (
        "drills: monthly-restore-test, quarterly-partial-failover, annual-dr-simulation, "
        "annual-region-failure"
    ) in fine.stdout
    path = _schedules(tmp_path, "{name: d, runbook: restore.tset, cron: '0 3 * * *'}")
    bad = run_cli(["config.check"], {**cli_env, "RUNBOOK_BOT_SCHEDULES": str(path)})
    assert bad.returncode == 2
    assert "drills[0] (d): runbook 'restore.tset' is not in the catalog" in bad.stderr


def test_pre_approved_must_be_what_policy_says_schedules_cannot_approve_themselves() -> None:
    config = load_config(ROOT / "config", schedules=ROOT / "schedules.yaml")
    quarterly = next(d for d in config.schedules.drills if d.name == "quarterly-partial-failover")
    assert not quarterly.pre_approved
    forged = SchedulesFile.model_validate(
        {"drills": [{**quarterly.model_dump(), "pre_approved": True}]}
    )
    (problem,) = drill_problems(forged, load_catalog(), config)
    assert problem.startswith(
        "schedules.yaml: drills[0] (quarterly-partial-failover): pre_approved: true, but "
        "policy.yaml (rules["
    )
    assert "requires 2 approval(s) for dr.failover in production" in problem
    assert "cannot approve itself" in problem
