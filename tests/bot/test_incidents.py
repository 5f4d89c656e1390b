"""PagerDuty from the outbox, against the TLS PagerDuty emulator with the official client:
notes on a linked incident at request, approval, start and finish, each once (across a
replayed outbox and an interrupted send); 429 answers retried; a failed production run pages
once and the next success resolves; Alertmanager's escalation pages through the same client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.incidents import SENDING_KEY, IncidentFeed, dedup_key, page_callback
from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings, RateLimited
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput
from runbooks.engine.models import State
from sandbox.pagerduty import SANDBOX_API_TOKEN, SANDBOX_ROUTING_KEY, PagerDutyEmulator
from tests.conftest import ROOT, EngineFactory
from tests.engine import world
from tests.support.people import ALICE, BOB


@pytest.fixture(autouse=True)
def _fresh_world() -> None:
    world.reset()


@pytest.fixture
def emulator(pagerduty_emulator: PagerDutyEmulator) -> PagerDutyEmulator:
    return pagerduty_emulator


@pytest.fixture
def pagerduty(emulator: PagerDutyEmulator) -> Iterator[PagerDuty]:
    client = PagerDuty(
        PagerDutySettings(
            api_token=SANDBOX_API_TOKEN,
            routing_key=SANDBOX_ROUTING_KEY,
            api_url=emulator.url,
            events_url=emulator.url,
            ca_bundle=str(emulator.ca_path),
        )
    )
    yield client
    client.close()


def config() -> Config:
    base = load_config(ROOT / "config")
    policy = base.policy.model_dump()
    policy["rules"].insert(
        0,
        {
            "runbooks": "test.*",
            "environments": ["production"],
            "requesters": ["sre"],
            "approvers": ["sre"],
            "approvals": 1,
        },
    )
    return Config(base.directory, base.environments, PolicyFile.model_validate(policy))


class Feed:
    def __init__(
        self, engine: Engine, runtime_like: Any, pagerduty: PagerDuty, owner: str = "bot-1"
    ) -> None:
        self.engine = engine
        self.feed = IncidentFeed(runtime_like, pagerduty)
        self.follower = OutboxFollower(
            engine.store, engine.clock, self.feed, name="pagerduty", owner=owner
        )

    def deliver(self) -> None:
        assert self.follower.lead()
        self.follower.pass_once()


class _Runtime:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine


@pytest.fixture
def feed(make_engine: EngineFactory, pagerduty: PagerDuty) -> Feed:
    engine = make_engine(config=config())
    return Feed(engine, _Runtime(engine), pagerduty)


def request(engine: Engine, incident: str | None, **params: Any) -> str:
    prepared = engine.prepare(
        "test.set", {"environment": "production", "keys": "a", **params}, actor=ALICE
    )
    return engine.submit(prepared, actor=ALICE, incident=incident).id


def test_a_linked_run_leaves_its_timeline_on_the_incident_once(
    feed: Feed, emulator: PagerDutyEmulator
) -> None:
    incident = emulator.open_incident("api 5xx above 5 %")["id"]
    execution_id = request(feed.engine, incident)
    feed.deliver()
    feed.engine.approve(execution_id, actor=BOB)
    feed.deliver()
    done = feed.engine.start(execution_id, actor=ALICE)
    assert done.state == State.SUCCEEDED
    feed.deliver()
    notes = emulator.notes(incident)
    texts = [n["content"] for n in notes]
    assert texts[0].startswith(f"Requested by Alice: test.set production ({execution_id});")
    assert "awaiting 1 approval(s)" in texts[0] and "Plan: set a to 1" in texts[0]
    assert texts[1].startswith(f"Approved by Bob: test.set production ({execution_id})")
    assert texts[2].startswith("Started: ")
    assert texts[3].startswith(f"Finished: test.set production ({execution_id}): succeeded")
    assert len(texts) == 4
    # From: the acting person's PagerDuty email (policy.yaml): Bob for his approval.
    senders = [n["user"]["summary"] for n in notes]
    assert senders == [
        "alice@example.com",
        "bob@example.com",
        "alice@example.com",
        "alice@example.com",
    ]
    # Each note carries its marker; a new leader replaying the outbox notes nothing again.
    assert all(f"[runbook-bot {execution_id} #" in t for t in texts)
    feed.engine.store.kv_set("outbox.pagerduty.cursor", 0)
    again = Feed(feed.engine, _Runtime(feed.engine), feed.feed.pagerduty, owner="bot-2")
    feed.follower.leader.release()
    again.deliver()
    assert len(emulator.notes(incident)) == 4


def test_an_interrupted_send_is_looked_for_before_it_is_sent_again(
    feed: Feed, emulator: PagerDutyEmulator
) -> None:
    incident = emulator.open_incident("latency")["id"]
    request(feed.engine, incident)
    feed.deliver()
    (note,) = emulator.notes(incident)
    # As if the process died after PagerDuty took the note and before it was marked done.
    created = next(e for e in feed.engine.store.events_after(0) if e.type == "execution.created")
    feed.engine.store.kv_set(f"pagerduty.noted.{created.id}", None)
    assert feed.engine.store.kv_get(SENDING_KEY.format(created.id))
    feed.engine.store.kv_set("outbox.pagerduty.cursor", 0)
    fresh = Feed(feed.engine, _Runtime(feed.engine), feed.feed.pagerduty, owner="bot-2")
    feed.follower.leader.release()
    fresh.deliver()
    assert [n["id"] for n in emulator.notes(incident)] == [note["id"]]
    assert any(c["method"] == "GET" and c["path"].endswith("/notes") for c in emulator.calls())


def test_a_429_makes_the_follower_wait_the_reset_then_the_note_lands_once(
    feed: Feed, emulator: PagerDutyEmulator
) -> None:
    incident = emulator.open_incident("errors")["id"]
    emulator.rate_limit(f"/incidents/{incident}/notes", count=2, reset=7)

    def posts() -> int:
        calls = emulator.calls(f"/incidents/{incident}/notes")
        return len([c for c in calls if c["method"] == "POST"])

    request(feed.engine, incident)
    feed.deliver()  # 429, one immediate retry, 429: nothing slept in the package
    assert emulator.notes(incident) == [] and posts() == 2
    follower = feed.follower
    assert follower.behind
    follower.failures += 1  # as ``run`` counts a pass that left work behind
    assert follower.backoff() == 7.0  # PagerDuty's ratelimit-reset, above the 0.5 s doubling
    feed.deliver()
    assert len(emulator.notes(incident)) == 1 and posts() == 3
    assert not follower.behind and feed.feed.retry_after is None
    feed.deliver()  # nothing more: the cursor moved past the note
    assert len(emulator.notes(incident)) == 1 and posts() == 3


def test_a_429_at_the_cli_says_when_to_try_again(
    pagerduty: PagerDuty, emulator: PagerDutyEmulator
) -> None:
    incident = emulator.open_incident("errors")["id"]
    emulator.rate_limit(f"/incidents/{incident}/notes", count=2, reset=12)
    with pytest.raises(
        RateLimited, match=re.escape("rate limited (HTTP 429); try again in 12 s")
    ) as caught:
        pagerduty.add_note(incident, "hello", from_email="alice@example.com")
    assert caught.value.retry_after == 12.0


def test_an_unlinked_run_notes_nothing(feed: Feed, emulator: PagerDutyEmulator) -> None:
    request(feed.engine, None)
    feed.deliver()
    assert emulator.calls("/incidents") == []


def test_a_failed_production_run_pages_once_and_the_next_success_resolves(
    feed: Feed, emulator: PagerDutyEmulator
) -> None:
    world.FAILING_VERIFY.add("a")
    for _ in range(2):  # fails twice: one incident, two events on one dedup key
        execution_id = request(feed.engine, None)
        feed.engine.approve(execution_id, actor=BOB)
        failed = feed.engine.start(execution_id, actor=ALICE)
        assert failed.state in (State.COMPENSATED, State.FAILED)
        feed.deliver()
    key = dedup_key(failed)
    assert key == "runbook-bot:test.set:production"
    incidents = [i for i in emulator.state.incidents.values() if i["incident_key"] == key]
    assert len(incidents) == 1 and incidents[0]["status"] == "triggered"
    assert [e["event_action"] for e in emulator.state.events] == ["trigger", "trigger"]
    world.FAILING_VERIFY.clear()
    world.STATE.clear()
    execution_id = request(feed.engine, None)
    feed.engine.approve(execution_id, actor=BOB)
    assert feed.engine.start(execution_id, actor=ALICE).state == State.SUCCEEDED
    feed.deliver()
    assert incidents[0]["status"] == "resolved"
    assert [e["event_action"] for e in emulator.state.events][-1] == "resolve"
    assert all(e["routing_key"] == SANDBOX_ROUTING_KEY for e in emulator.state.events)


def test_alertmanager_escalation_pages_through_the_events_api(
    pagerduty: PagerDuty, emulator: PagerDutyEmulator
) -> None:
    page = page_callback(pagerduty)
    assert page is not None
    page("stopped automatic rollback", "runbook-bot:auto:rollback:production:api", {"n": 2})
    (event,) = emulator.state.events
    assert event["payload"]["severity"] == "critical"
    assert event["dedup_key"] == "runbook-bot:auto:rollback:production:api"
    assert page_callback(None) is None


def test_settings_refuse_plain_http_and_say_what_is_off() -> None:
    with pytest.raises(InvalidInput, match="must be an https:// URL"):
        PagerDutySettings.from_env({"PAGERDUTY_API_URL": "http://127.0.0.1:1"})
    off = PagerDutySettings.from_env({})
    assert not off.configured
    assert off.describe() == "REST off (no token); Events off (no key)"


@pytest.mark.slow  # a bot process and the CLI
def test_the_bot_notes_a_terminal_run_linked_to_an_incident(
    cli_env: dict[str, str], emulator: PagerDutyEmulator, tmp_path: Path
) -> None:
    """Processes: the CLI runs with --incident; the bot (its own process) writes the notes."""
    from tests.conftest import run_cli
    from tests.support.bots import Bot, free_port
    from tests.support.waiting import wait_for

    incident = emulator.open_incident("selftest incident")["id"]
    env = {
        **cli_env,
        "RUNBOOK_BOT_LOG": "-",
        "PAGERDUTY_API_URL": emulator.url,
        "PAGERDUTY_EVENTS_URL": emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
        "PAGERDUTY_ROUTING_KEY": SANDBOX_ROUTING_KEY,
    }
    bot = Bot(env, free_port())
    try:
        bot.wait_ready()
        ran = run_cli(
            ["selftest", "development", "--yes", "--json", "--incident", incident, "--steps", "1"],
            env,
        )
        assert ran.returncode == 0, ran.stderr
        wait_for(
            lambda: any("Finished: selftest" in n["content"] for n in emulator.notes(incident)),
            what="the finish note",
        )
        texts = [n["content"] for n in emulator.notes(incident)]
        assert texts[0].startswith("Requested by Alice: selftest development")
        assert any(t.startswith("Started: selftest development") for t in texts)
        assert SANDBOX_API_TOKEN not in " ".join(texts)
    finally:
        output = bot.stop()
    assert "REST https://127.0.0.1" in output  # the bot says PagerDuty is on


def test_a_failed_drill_pages_once_under_its_own_key_and_the_next_success_resolves(
    feed: Feed, emulator: PagerDutyEmulator
) -> None:
    """A drill pages in any environment (development here), keyed by the drill's name."""

    def drill_run() -> State:
        prepared = feed.engine.prepare(
            "test.set", {"environment": "development", "keys": "d"}, actor=ALICE
        )
        # The drill is a typed fact on the execution; the reason is free text for people.
        execution = feed.engine.submit(
            prepared, actor=ALICE, reason="nightly check", drill="monthly-restore-test"
        )
        done = feed.engine.start(execution.id, actor=ALICE)
        feed.deliver()
        return done.state

    world.FAILING_VERIFY.add("d")
    assert drill_run() in (State.COMPENSATED, State.FAILED)
    assert drill_run() in (State.COMPENSATED, State.FAILED)
    key = "runbook-bot:drill:monthly-restore-test:development"
    assert [(e["event_action"], e["dedup_key"]) for e in emulator.state.events] == [
        ("trigger", key),
        ("trigger", key),
    ]
    (incident,) = emulator.state.incidents.values()  # paged once: one incident
    summary = emulator.state.events[0]["payload"]["summary"]
    assert summary.startswith("runbook-bot: drill monthly-restore-test (test.set) in development")
    assert emulator.state.events[0]["payload"]["custom_details"]["drill"] == (
        "monthly-restore-test"
    )
    world.FAILING_VERIFY.clear()
    world.STATE.clear()
    assert drill_run() == State.SUCCEEDED
    assert incident["status"] == "resolved"
