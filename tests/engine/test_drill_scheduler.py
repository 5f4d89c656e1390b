"""The drill scheduler on an injected clock, no sleeping: a year of fires, announcements in
order, missed fires, overlap, a change freeze, pause, two schedulers on one store."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.models import State, Trigger, TriggerKind
from runbooks.engine.requesters.drills import SCHEDULER, DrillScheduler
from tests.conftest import EngineFactory
from tests.engine import world
from tests.support.cron_oracle import croniter_fires
from tests.support.drill_world import END, START, World, config
from tests.support.people import ALICE

ANNOUNCE = {"keys": "a", "value": 1, "announce": True}
MONTHLY = {
    "name": "monthly",
    "runbook": "test.set",
    "params": {"environment": "development", **ANNOUNCE},
    "cron": "0 3 1 * *",
    "channel": "C0OPS",
}
WEEKLY_NY = {
    "name": "weekly-ny",
    "runbook": "test.status",
    "params": {"environment": "development"},
    "cron": "0 9 * * mon",
    "timezone": "America/New_York",
    "channel": "C0OPS",
}


@pytest.fixture(autouse=True)
def _fresh_world() -> None:
    world.reset()


def oracle(cron: str, zone: str, start: float, end: float) -> list[float]:
    return croniter_fires(cron, zone, start, end)


def test_a_year_fires_each_drill_on_time_once_with_its_announcements_in_order(
    make_engine: EngineFactory,
) -> None:
    clock = FakeClock(START - 3600)
    w = World(make_engine, config(MONTHLY, WEEKLY_NY), clock)
    w.step()  # the bot starts an hour before the year: cursors begin here
    w.run_until(END)
    executions = w.engine.list(limit=1000)
    by_drill: dict[str, list[float]] = {"monthly": [], "weekly-ny": []}
    for execution in executions:
        name = (execution.reason or "").split()[1]
        by_drill[name].append(execution.created_at)
        assert execution.requester == SCHEDULER
        assert execution.state == State.SUCCEEDED, execution.error
    assert sorted(by_drill["monthly"]) == oracle("0 3 1 * *", "UTC", START, END)
    assert sorted(by_drill["weekly-ny"]) == oracle("0 9 * * mon", "America/New_York", START, END)
    assert len(by_drill["monthly"]) == 12 and len(by_drill["weekly-ny"]) == 52
    # Each monthly fire: announced 24 h and 1 h before, at the start, and its result.
    march = [
        (iso(at), text.split(":")[0])
        for at, text in w.announced
        if "monthly" in text and "2027-03-01" in text
    ]
    assert march == [
        ("2027-02-28T03:00:00.000Z", "upcoming"),
        ("2027-03-01T02:00:00.000Z", "upcoming"),
        ("2027-03-01T03:00:00.000Z", "started"),
        ("2027-03-01T03:00:00.000Z", "result"),
    ]
    events = [e for e in w.engine.store.events_after(0, limit=10_000) if e.type == "drill.announce"]
    # Four per fire, plus the 24 h notice of 1 January 2028's monthly fire (on 31 December).
    assert len(events) == len(w.announced) == (12 + 52) * 4 + 1
    assert all(e.payload["channel"] == "C0OPS" for e in events)


def test_missed_fires_run_once_within_catch_up_and_are_announced_outside_it(
    make_engine: EngineFactory,
) -> None:
    daily = {**MONTHLY, "name": "daily", "cron": "0 3 * * *", "catch_up": "40h"}
    clock = FakeClock(datetime(2027, 5, 1, 12, tzinfo=UTC).timestamp())
    w = World(make_engine, config(daily), clock)
    w.step()
    # The bot is down for four days; it comes back on 5 May at 12:00.
    clock.advance(4 * 86400)
    w.step()
    history = {e["at"]: e["state"] for e in w.scheduler.history("daily")}
    states = {iso(at)[:10]: state for at, state in history.items()}
    assert states == {
        "2027-05-02": "missed",
        "2027-05-03": "missed",
        "2027-05-04": "coalesced",
        "2027-05-05": "succeeded",
    }
    assert len(w.engine.list()) == 1  # run once however many were missed
    missed = [t for _, t in w.announced if t.startswith("missed")]
    assert len(missed) == 2 and "past its catch-up window of 40h00m" in missed[0]
    w.step()  # nothing fires twice
    assert len(w.engine.list()) == 1


def test_a_fire_while_the_last_run_is_going_is_skipped_or_queued(
    make_engine: EngineFactory,
) -> None:
    # Separate keys: test.set re-plans at start, and a shared key set by the other drill's
    # run would change this one's plan (back to awaiting approval).
    hourly = {
        **MONTHLY,
        "name": "hourly",
        "cron": "0 * * * *",
        "notify_before": [],
        "params": {"environment": "development", **ANNOUNCE, "keys": "h"},
    }
    queued = {
        **hourly,
        "name": "queued",
        "overlap": "queue-one",
        "params": {"environment": "staging", **ANNOUNCE, "keys": "q"},
    }
    clock = FakeClock(datetime(2027, 5, 1, 0, 30, tzinfo=UTC).timestamp())
    w = World(make_engine, config(hourly, queued), clock)
    w.scheduler.tick()
    clock.advance(1800)
    w.scheduler.tick()  # both fire; nobody starts the runs (no supervisor)
    clock.advance(3600)
    w.scheduler.tick()
    assert [e["state"] for e in w.scheduler.history("hourly")] == ["skipped", "requested"]
    assert [e["state"] for e in w.scheduler.history("queued")] == ["queued", "requested"]
    w.supervisor.sweep()  # the first runs end ...
    w.scheduler.tick()  # ... so the queued fire is requested now
    w.supervisor.sweep()
    w.scheduler.tick()
    assert [e["state"] for e in w.scheduler.history("queued")] == ["succeeded", "succeeded"]


def test_a_fire_in_a_change_freeze_is_held_and_announced(make_engine: EngineFactory) -> None:
    drill = {**MONTHLY, "params": {"environment": "production", **ANNOUNCE}}
    at = datetime(2027, 12, 1, 3, tzinfo=UTC).timestamp()
    freeze = {
        "environments": ["production"],
        "start": iso(at - 86400),
        "end": iso(at + 86400),
        "reason": "year-end freeze",
    }
    clock = FakeClock(at - 60)
    w = World(make_engine, config(drill, freezes=[freeze]), clock)
    w.step()
    clock.advance(60)
    w.step()
    assert [e["state"] for e in w.scheduler.history("monthly")] == ["held"]
    [held] = [t for _, t in w.announced if t.startswith("held")]
    assert "change freeze" in held and "year-end freeze" in held
    assert w.engine.list() == []
    [refused] = [r for r in w.engine.audit.tail(50) if r["action"] == "request.refused"]
    assert refused["detail"]["kind"] == "freeze"


def test_a_refusal_that_only_mentions_a_freeze_is_a_refusal_and_a_fire_is_typed(
    make_engine: EngineFactory,
) -> None:
    # The words of a refusal are for people: an invalid parameter whose value says "freeze"
    # is not a change freeze (the refusal's kind says which it is).
    drill = {**MONTHLY, "params": {"environment": "development", "keys": "a", "value": "freeze"}}
    at = datetime(2027, 12, 1, 3, tzinfo=UTC).timestamp()
    clock = FakeClock(at - 60)
    w = World(make_engine, config(drill), clock)
    w.step()
    clock.advance(60)
    w.step()
    [fire] = w.scheduler.history("monthly")
    assert fire["state"] == "refused" and "'freeze'" in fire["note"]
    assert any(t.startswith("refused: monthly") for _, t in w.announced)


def test_a_drills_execution_carries_its_trigger_and_the_audit_record_too(
    make_engine: EngineFactory,
) -> None:
    drill = {**MONTHLY, "params": {"environment": "development", "keys": "t", "value": 1}}
    at = datetime(2027, 12, 1, 3, tzinfo=UTC).timestamp()
    clock = FakeClock(at - 60)
    w = World(make_engine, config(drill), clock)
    w.step()
    clock.advance(60)
    w.step()
    [execution] = w.engine.list()
    assert execution.trigger == Trigger(TriggerKind.DRILL, "monthly", f"due {iso(at)}", at)
    [request] = [r for r in w.engine.audit.tail(50) if r["action"] == "request"]
    assert request["detail"]["trigger"] == {
        "kind": "drill",
        "name": "monthly",
        "reference": f"due {iso(at)}",
        "at": at,
    }


def test_approvers_hear_of_a_gated_drill_before_it_fires_and_approve_its_card_at_fire_time(
    make_engine: EngineFactory,
) -> None:
    drill = {**MONTHLY, "params": {"environment": "production", "keys": "a", "value": 1}}
    at = datetime(2027, 6, 1, 3, tzinfo=UTC).timestamp()
    clock = FakeClock(at - 25 * 3600)
    w = World(make_engine, config(drill, approvals=1), clock)
    w.step()
    w.run_until(at - 3600 + 1)
    notices = [
        (e.payload["channel"], e.payload["text"])
        for e in w.engine.store.events_after(0)
        if e.type == "drill.announce"
    ]
    heads_up = "it needs 1 approval(s) from sre: the approval card is posted in C0APPROVALS"
    assert sorted(c for c, t in notices if heads_up in t) == [
        "C0APPROVALS",
        "C0APPROVALS",
        "C0OPS",
        "C0OPS",
    ]  # 24 h and 1 h before, to the drill's channel and the approvers'
    assert w.engine.list() == []  # no request (and no lock) before the fire time
    clock.advance(at - clock.now())
    w.step()
    (execution,) = w.engine.list()
    assert execution.state == State.AWAITING_APPROVAL and execution.required_approvals == 1
    w.engine.approve(execution.id, actor=ALICE)
    w.step()
    assert w.engine.get(execution.id).state == State.SUCCEEDED
    assert [e["state"] for e in w.scheduler.history("monthly")] == ["succeeded"]


def test_a_paused_drill_does_not_run_and_says_so(make_engine: EngineFactory) -> None:
    at = datetime(2027, 6, 1, 3, tzinfo=UTC).timestamp()
    clock = FakeClock(at - 7200)
    w = World(make_engine, config(MONTHLY), clock)
    w.step()
    w.scheduler.pause("monthly", actor=ALICE, reason="migration week")
    w.run_until(at + 60)
    assert [e["state"] for e in w.scheduler.history("monthly")] == ["paused"]
    texts = [
        e.payload["text"] for e in w.engine.store.events_after(0) if e.type == "drill.announce"
    ]
    assert any(t.startswith("paused by Alice: monthly (migration week)") for t in texts)
    assert any("PAUSED: it will not run unless resumed" in t for t in texts)
    assert w.engine.list() == []
    w.scheduler.resume("monthly", actor=ALICE)
    assert w.scheduler.paused("monthly") is None


def test_two_schedulers_on_one_store_fire_once_and_the_second_takes_over(
    make_engine: EngineFactory,
) -> None:
    hourly = {**WEEKLY_NY, "name": "hourly", "cron": "0 * * * *", "notify_before": []}
    clock = FakeClock(datetime(2027, 5, 1, 0, 30, tzinfo=UTC).timestamp())
    cfg = config(hourly)
    one = World(make_engine, cfg, clock)
    two = DrillScheduler(one.engine, cfg.schedules, owner="bot-2")
    assert one.scheduler.tick().leader and not two.tick().leader
    clock.advance(1800)
    assert len(one.scheduler.tick().requested) == 1
    assert two.tick().requested == []
    # bot-1 dies; after its lease (15 s) bot-2 leads and fires the next one, once.
    clock.advance(3600)
    taken = two.tick()
    assert taken.leader and len(taken.requested) == 1
    assert len(one.engine.list()) == 2
    assert one.scheduler.tick().leader is False
