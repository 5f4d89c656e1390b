"""The Slack notifier as an outbox follower: durable cursor, leader lease, at-least-once.

Two notifiers stand for two bot replicas on one store (one state file, one fake clock); the
Slack Web API is the local emulator, which can answer 429 as often as a test asks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bot.slack.app import SlackSettings, web_client
from bot.slack.notify import CURSOR_KEY, Notifier
from runbooks.engine.clock import FakeClock
from runbooks.engine.registry import Registry
from runbooks.engine.settings import load_settings
from runbooks.engine.wiring import Runtime, open_runtime
from sandbox.slack import SANDBOX_BOT_TOKEN, SlackEmulator
from tests.engine import world
from tests.support.people import ALICE, BOB


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    emulator = SlackEmulator().start()
    yield emulator
    emulator.stop()


def replica(owner: str, clock: FakeClock, slack: SlackEmulator) -> tuple[Runtime, Notifier]:
    runtime = open_runtime(load_settings(), registry=Registry(world.SPECS), clock=clock)
    runtime.engine.owner = owner  # one process per replica: each has its own owner id
    client = web_client(
        SlackSettings(bot_token=SANDBOX_BOT_TOKEN, signing_secret="s", api_url=slack.api_url)
    )
    return runtime, Notifier(runtime, client, min_interval=0)


Replica = tuple[Runtime, Notifier]


@pytest.fixture
def replicas(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, slack: SlackEmulator
) -> Iterator[tuple[FakeClock, Replica, Replica]]:
    """Two bot replicas' notifiers on one store and one fake clock, the cursor at 0."""
    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    clock = FakeClock()
    first, second = replica("replica-1", clock, slack), replica("replica-2", clock, slack)
    first[0].store.kv_set(CURSOR_KEY, 0)
    yield clock, first, second
    first[0].close()
    second[0].close()


def cards(slack: SlackEmulator) -> list[str]:
    return [m.text for m in slack.state.messages if m.channel == "C0APPROVALS" and not m.thread_ts]


def test_a_card_slack_refused_is_posted_by_the_next_leader(
    replicas: tuple[FakeClock, Replica, Replica], slack: SlackEmulator
) -> None:
    clock, (first_rt, first), (second_rt, second) = replicas
    assert first._has_lease() and not second._has_lease()
    prepared = first_rt.engine.prepare("test.set", {"environment": "staging"}, actor=ALICE)
    execution = first_rt.engine.submit(prepared, actor=ALICE)
    # Slack refuses every attempt (1 + 5 retries) of this pass: the card is not posted.
    slack.state.rate_limits["chat.postMessage"] = [0.0] * 6
    assert first.pass_once() >= 1
    assert cards(slack) == []
    assert int(first_rt.store.kv_get(CURSOR_KEY)) == 0  # not past what was not delivered
    # replica-1 dies here, its pending work in memory only.
    clock.advance(16)
    assert second._has_lease()
    second.pass_once()
    assert len(cards(slack)) == 1 and execution.id in cards(slack)[0]
    second.pass_once()
    assert len(cards(slack)) == 1  # replayed events do not post twice
    assert not first._has_lease()  # the stale leader stays out
    last = second_rt.store.events_after(0, limit=1000)[-1].id
    assert int(second_rt.store.kv_get(CURSOR_KEY)) == last


def test_thread_lines_and_direct_messages_are_delivered_once_across_a_takeover(
    replicas: tuple[FakeClock, Replica, Replica], slack: SlackEmulator
) -> None:
    clock, (first_rt, first), (_second_rt, second) = replicas
    assert first._has_lease()
    engine = first_rt.engine
    execution = engine.submit(
        engine.prepare("test.set", {"environment": "staging", "keys": "a"}, actor=ALICE),
        actor=ALICE,
    )
    first.pass_once()
    engine.approve(execution.id, actor=BOB)
    engine.start(execution.id, actor=ALICE)
    first.pass_once()
    threads = [m for m in slack.state.messages if m.thread_ts]
    dms = [m for m in slack.state.messages if m.channel == "U0ALICE"]
    assert len(threads) == 1 and len(dms) == 1
    # A takeover that replays everything (a cursor written before the deliveries, as
    # when a leader dies between posting and recording) posts nothing twice.
    first_rt.store.kv_set(CURSOR_KEY, 0)
    clock.advance(16)
    assert second._has_lease()
    second.pass_once()
    assert len([m for m in slack.state.messages if m.thread_ts]) == 1
    assert len([m for m in slack.state.messages if m.channel == "U0ALICE"]) == 1
    assert len(cards(slack)) == 1


def test_pacing_waits_on_the_engines_clock(slack: SlackEmulator) -> None:
    from bot.slack.notify import Courier

    clock = FakeClock()
    client = web_client(
        SlackSettings(bot_token=SANDBOX_BOT_TOKEN, signing_secret="s", api_url=slack.api_url)
    )
    courier = Courier(client, min_interval=1.0, clock=clock)
    start = clock.now()
    for i in range(4):
        courier.post("C1", f"m{i}")
    courier.post("C2", "another channel: not held back")
    assert clock.now() - start == 3.0  # three waits of a second, slept on the fake clock
    assert [m.text for m in slack.state.messages][-1] == "another channel: not held back"


def test_drill_announcements_reach_the_drills_channel_once(
    replicas: tuple[FakeClock, Replica, Replica], slack: SlackEmulator
) -> None:
    from runbooks.engine.config.schedules import SchedulesFile
    from runbooks.engine.requesters.drills import DrillScheduler

    clock, (runtime, notifier), (_second_rt, second) = replicas
    schedules = SchedulesFile.model_validate(
        {
            "drills": [
                {
                    "name": "look",
                    "runbook": "test.status",
                    "params": {"environment": "staging"},
                    "cron": "0 9 * * mon",
                    "channel": "C0DRILLS",
                }
            ]
        }
    )
    scheduler = DrillScheduler(runtime.engine, schedules, owner="replica-1")
    scheduler.tick()  # first sight: the cursor starts now
    clock.advance(scheduler.next_wake(cap=float("inf")) - clock.now())
    done = scheduler.tick()
    assert [t.split(":")[0] for t in done.announced] == ["upcoming"]
    scheduler.pause("look", actor=ALICE, reason="maintenance")
    notifier.pass_once()
    second.pass_once()  # the other replica does not lead: it posts nothing
    posted = [m.text for m in slack.state.messages if m.channel == "C0DRILLS"]
    assert len(posted) == 2, posted
    assert posted[0].startswith(":calendar: *drill* upcoming: look runs test.status at ")
    assert posted[1] == (
        ":calendar: *drill* paused by Alice: look (maintenance); its fires will not run"
    )
