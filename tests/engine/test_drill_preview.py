"""``DrillScheduler.preview``: the announcements of a drill's next fire, compared with what the
scheduler then posts on an injected clock (no sleeping)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from runbooks.engine.background.supervisor import Supervisor
from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.config.schedules import SchedulesFile
from runbooks.engine.requesters import drills as drills_module
from runbooks.engine.requesters.drills import Announcement, DrillScheduler
from tests.conftest import ROOT, EngineFactory
from tests.engine import world
from tests.support.people import ALICE

FIRE = datetime(2027, 3, 1, 3, 0, tzinfo=UTC).timestamp()
DRILL = {
    "name": "monthly",
    "runbook": "test.set",
    "params": {"environment": "development", "keys": "a", "value": 1},
    "cron": "0 3 1 * *",
    "channel": "C0DRILLS",
}


def _config(*, approvals: int) -> Config:
    base = load_config(ROOT / "config")
    policy = base.policy.model_dump()
    policy["people"]["scheduler"] = {"name": "drill scheduler", "groups": ["drills"]}
    gate = {"approvals": approvals, "approvers": ["sre"]} if approvals else {}
    policy["rules"] = [
        {"runbooks": "test.*", "environments": ["*"], "requesters": ["drills", "sre"], **gate},
        *policy["rules"],
    ]
    return Config(
        base.directory,
        base.environments,
        PolicyFile.model_validate(policy),
        SchedulesFile.model_validate({"drills": [DRILL]}),
    )


@pytest.fixture(autouse=True)
def _fresh_world() -> None:
    world.reset()


def _pattern(expected: Announcement) -> re.Pattern[str]:
    """The preview's text with its placeholders as what a run fills in."""
    text = re.escape(expected.text)
    for placeholder, actual in (
        ("\n" + drills_module.PLACEHOLDER_MEASURED, r"(\n.*)*"),
        (drills_module.PLACEHOLDER_EXECUTION, r"rb-[0-9a-f]+"),
        (drills_module.PLACEHOLDER_OUTCOME, r"[a-z_]+"),
        (drills_module.PLACEHOLDER_DURATION, r"[0-9.hms]+"),
        (drills_module.PLACEHOLDER_VERDICT, r"(passed|passed with findings: .*|FAILED.*)"),
    ):
        text = text.replace(re.escape(placeholder), actual)
    return re.compile(text)


def _posted(engine: Any) -> list[tuple[float, str, str]]:
    """The outbox's drill announcements (what the Slack notifier posts): time, channel, text."""
    return [
        (e.at, str(e.payload["channel"]), str(e.payload["text"]))
        for e in engine.store.events_after(0, limit=10_000)
        if e.type == "drill.announce"
    ]


def test_the_preview_is_what_the_scheduler_then_posts(make_engine: EngineFactory) -> None:
    clock = FakeClock(FIRE - 3 * 86400)
    engine = make_engine(config=_config(approvals=0), clock=clock)
    scheduler = DrillScheduler(engine, engine.config.schedules, owner="bot-1")
    supervisor = Supervisor(engine, spawn=lambda _name, work: work())
    scheduler.tick()  # the cursor starts here

    drill, fire, expected = scheduler.preview("monthly")
    assert drill.name == "monthly" and fire == FIRE
    assert [(a.phase, a.post_at, a.channel) for a in expected] == [
        ("before", FIRE - 86400, "C0DRILLS"),
        ("before", FIRE - 3600, "C0DRILLS"),
        ("at", FIRE, "C0DRILLS"),
        ("after", None, "C0DRILLS"),
    ]
    assert expected[0].text == (f"upcoming: monthly runs test.set at {iso(FIRE)}, in 24h00m")
    assert _posted(engine) == []  # a preview posts nothing

    # Woken only when next_wake says something is due (or hourly): every announcement must
    # come from a wake it named, at the minute the preview promised.
    while clock.now() < FIRE + 600:
        clock.advance(max(0.0, scheduler.next_wake(cap=3600.0) - clock.now()))
        for _ in range(2):
            scheduler.tick()
            supervisor.sweep()
    posted = _posted(engine)
    assert len(posted) == len(expected), posted
    for want, (at, channel, text) in zip(expected, posted, strict=True):
        assert channel == want.channel
        assert _pattern(want).fullmatch(text), (want.text, text)
        if want.post_at is not None:
            assert at == want.post_at
    assert " succeeded in " in posted[-1][2]


def test_the_preview_follows_policy_and_a_pause(make_engine: EngineFactory) -> None:
    clock = FakeClock(FIRE - 30 * 60)  # past the 24 h and 1 h lead times of the next fire
    engine = make_engine(config=_config(approvals=1), clock=clock)
    scheduler = DrillScheduler(engine, engine.config.schedules, owner="bot-1")

    _, fire, expected = scheduler.preview("monthly")
    # The nearest lead time reached is posted at the next tick (now), with the approvers'
    # channel told too; the fire waits for one approval.
    approvals = engine.config.policy.slack.approvals_channel("development")
    assert [(a.phase, a.post_at) for a in expected][:1] == [("before", clock.now())]
    assert "in 30m; it needs 1 approval(s) from sre" in expected[0].text
    assert {a.channel for a in expected if a.phase == "before"} == {"C0DRILLS", approvals}
    (started,) = [a for a in expected if a.phase == "at"]
    assert started.text == (
        f"started: monthly ({iso(fire)}): test.set [execution id]; awaiting 1 approval(s) "
        "(the card is in the approvals channel)"
    )
    scheduler.tick()
    for want, (_, channel, text) in zip(
        [a for a in expected if a.phase == "before"], _posted(engine), strict=True
    ):
        assert (channel, text) == (want.channel, want.text)

    scheduler.pause("monthly", actor=ALICE, reason="region migration")
    _, _, paused = scheduler.preview("monthly")
    assert [a.phase for a in paused] == ["at"]  # announced already; no run, so no result
    assert paused[0].text == (
        f"paused: monthly was due at {iso(fire)}; not run (paused by Alice: region migration)"
    )
