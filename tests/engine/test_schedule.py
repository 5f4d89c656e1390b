"""schedules.yaml: cron parsing (weekday names only), maintenance windows, the policy rule."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.clock import iso, parse_iso
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.schedules import (
    MaintenanceWindow,
    SchedulesFile,
    cron_trigger,
    load_schedules,
)
from runbooks.engine.errors import ConfigError
from runbooks.engine.policy import ConfigPolicy
from tests.conftest import ROOT
from tests.support.cron_oracle import croniter_fires
from tests.support.people import ALICE

SUNDAY_2AM = MaintenanceWindow(
    name="sun", start="0 2 * * sun", duration=4 * 3600, environments=["production"]
)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2026-11-29T01:59Z", False),
        ("2026-11-29T02:00Z", True),
        ("2026-11-29T05:59Z", True),
        ("2026-11-29T06:00Z", False),
        ("2026-11-30T03:00Z", False),
    ],
)
def test_window_open_at(moment: str, expected: bool) -> None:
    assert (SUNDAY_2AM.open_at(parse_iso(moment)) is not None) == expected


def test_next_start_and_cron_fields() -> None:
    assert (
        iso(SUNDAY_2AM.next_start(parse_iso("2026-11-26T11:00Z")) or 0)
        == "2026-11-29T02:00:00.000Z"
    )
    # cron semantics: day-of-month and day-of-week both restricted means either matches
    window = MaintenanceWindow(
        name="w", start="*/15 2-4 1 jan-mar mon,fri", duration=600, environments=["production"]
    )
    start = datetime(2027, 1, 1, tzinfo=UTC).timestamp()
    assert window.open_at(datetime(2027, 1, 1, 2, 20, tzinfo=UTC).timestamp())  # the 1st, a Fri
    assert window.open_at(datetime(2027, 1, 4, 4, 50, tzinfo=UTC).timestamp())  # a Monday
    assert not window.open_at(datetime(2027, 1, 5, 2, 5, tzinfo=UTC).timestamp())  # Tue the 5th
    starts, at = [], start - 1
    while (nxt := window.next_start(at)) is not None and nxt < start + 90 * 86400:
        starts.append(nxt)
        at = nxt
    assert starts == croniter_fires(window.start, "UTC", start, start + 90 * 86400)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * * 8", "day of week: '8' is not allowed; use 0-7"),
        ("0 2 * *", "needs 5 fields"),
        ("61 2 * * sun", "minute: '61' is not allowed"),
        ("0 2 * * fri-mon", "runs backwards"),
        ("0 2 * smarch *", "month: 'smarch'"),
    ],
)
def test_bad_cron_is_refused_with_the_reason(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron_trigger(expression)


def test_schedules_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "maintenance_windows:\n  - {name: x, start: '0 2 * * 9', duration: 1h, "
        "environments: [production]}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"schedules.yaml: maintenance_windows\[0\].start: "
        r"day of week: '9' is not allowed; use 0-7",
    ):
        load_schedules(path)
    path.write_text("maintenance_window: []\n")
    with pytest.raises(ConfigError, match="maintenance_window: unknown key"):
        load_schedules(path)


def test_unknown_environment_in_a_window_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "maintenance_windows:\n  - {name: x, start: '0 2 * * sun', duration: 1h, "
        "environments: [prod]}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"maintenance_windows\[0\].environments: unknown "
        r"environment 'prod'",
    ):
        load_config(ROOT / "config", schedules=path)


def _policy(now_iso: str) -> tuple[ConfigPolicy, Any, float]:
    base = load_config(ROOT / "config", schedules=ROOT / "schedules.yaml")
    config = Config(
        base.directory,
        base.environments,
        base.policy,
        SchedulesFile(maintenance_windows=[SUNDAY_2AM]),
    )
    policy = ConfigPolicy(config)
    return (
        policy,
        policy.gate("maintenance.resize", "production", read_only=False),
        parse_iso(now_iso),
    )


def test_rule_requiring_a_window_refuses_outside_it_and_names_the_next() -> None:
    policy, gate, now = _policy("2026-11-26T11:00Z")
    assert gate.maintenance_window
    why = policy.request_refusal(
        ALICE,
        gate,
        runbook="maintenance.resize",
        environment="production",
        channel=None,
        break_glass=False,
        now=now,
    )
    assert why is not None and "runs only inside a maintenance window" in why
    assert "next is 'sun' at 2026-11-29T02:00:00.000Z" in why
    assert (
        policy.request_refusal(
            ALICE,
            gate,
            runbook="maintenance.resize",
            environment="production",
            channel=None,
            break_glass=True,
            now=now,
        )
        is None
    )


def test_rule_requiring_a_window_allows_inside_it() -> None:
    policy, gate, now = _policy("2026-11-29T03:30Z")
    assert (
        policy.request_refusal(
            ALICE,
            gate,
            runbook="maintenance.resize",
            environment="production",
            channel=None,
            break_glass=False,
            now=now,
        )
        is None
    )
    text = "\n".join(
        policy.explain("maintenance.resize", "production", "alice", read_only=False, now=now)
    )
    assert "window 'sun' is open now" in text


def test_shipped_schedules_are_valid() -> None:
    config = load_config(ROOT / "config", schedules=ROOT / "schedules.yaml")
    assert {w.name for w in config.schedules.maintenance_windows} == {
        "production-sunday-early",
        "staging-weeknights",
    }
    load_config(
        ROOT / "config" / "example", schedules=ROOT / "config" / "example" / "schedules.yaml"
    )
