"""Who may act on other people's work, drills and incidents, from Slack (the bot's Slack app
in this process against the Slack emulator, one shared state): the engine decides as for the
terminal, the refusal answers privately and is audited, and nothing changes."""

from __future__ import annotations

import json

import pytest

from runbooks.engine.models import State
from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.held import start_held_selftest
from tests.support.state import drill_paused, everything_stored, stored
from tests.support.waiting import wait_for


@pytest.fixture
def slack_env_extra(pagerduty_emulator: PagerDutyEmulator) -> dict[str, str]:
    return {
        "PAGERDUTY_API_URL": pagerduty_emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(pagerduty_emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
    }


def answer(world: SlackWorld, user: str, text: str) -> str:
    """Type ``text`` as ``user``; the private answer it gets."""
    seen = len(ephemeral_to(world, user))
    delivery = world.user(user).command(text, channel="C0OPS")
    assert delivery.status == 200
    if delivery.body.strip():  # answered in the ack (a usage error)
        return delivery.body
    wait_for(lambda: len(ephemeral_to(world, user)) > seen, what=f"the answer to {text}")
    return str(ephemeral_to(world, user)[seen]["text"])


@pytest.mark.slow  # the held run is a CLI process
def test_a_developer_cannot_cancel_someone_elses_production_run(app_world: SlackWorld) -> None:
    run = start_held_selftest(app_world.env, environment="production", user="alice")
    try:
        said = answer(app_world, "carol", f"/runbook cancel {run.execution_id}")
        assert f"Carol may not cancel {run.execution_id}" in said, said
        assert "only the requester or sre may" in said
        assert run.execution().state == State.RUNNING
        (refusal,) = [a for a in app_world.audit_actions() if a["action"] == "cancel.refused"]
        assert refusal["actor"] == {"id": "carol", "name": "Carol", "origin": "slack"}
    finally:
        code, _out, err = run.release()
    assert code == 0, err
    assert run.execution().state == State.SUCCEEDED


DRILL = "quarterly-partial-failover"


def test_only_drill_operators_may_pause_resume_or_run_a_drill(app_world: SlackWorld) -> None:
    said = answer(app_world, "carol", f"/drills pause {DRILL} --reason 'my release week'")
    assert f"Carol may not pause the drill {DRILL}; only sre may" in said, said
    assert drill_paused(app_world.env, DRILL) is None

    said = answer(app_world, "alice", f"/drills pause {DRILL} --reason 'region migration week'")
    assert said == f":double_vertical_bar: {DRILL} paused: region migration week", said
    assert drill_paused(app_world.env, DRILL)["by"] == "Alice"
    said = answer(app_world, "carol", f"/drills resume {DRILL}")
    assert f"Carol may not resume the drill {DRILL}" in said, said
    assert drill_paused(app_world.env, DRILL)["reason"] == "region migration week"

    said = answer(app_world, "carol", "/drills run monthly-restore-test")
    assert "Carol may not run the drill monthly-restore-test" in said, said
    assert app_world.executions() == []

    refusals = [a for a in app_world.audit_actions() if a["action"] == "drill.refused"]
    assert [(r["actor"]["id"], r["actor"]["origin"], r["detail"]["verb"]) for r in refusals] == [
        ("carol", "slack", "pause"),
        ("carol", "slack", "resume"),
        ("carol", "slack", "run"),
    ]
    said = answer(app_world, "bob", f"/drills resume {DRILL}")
    assert said == f":arrow_forward: {DRILL} resumed", said
    assert drill_paused(app_world.env, DRILL) is None


def test_drill_pause_needs_a_name_and_a_reason(app_world: SlackWorld) -> None:
    assert "pausing a drill needs --reason TEXT" in answer(
        app_world, "alice", f"/drills pause {DRILL}"
    )
    assert "/drills resume needs one drill name" in answer(app_world, "alice", "/drills resume")
    assert "unknown flag --force" in answer(app_world, "alice", f"/drills resume {DRILL} --force")
    assert drill_paused(app_world.env, DRILL) is None


def test_a_pause_reason_is_masked_where_it_is_stored(app_world: SlackWorld) -> None:
    planted = ("xoxb-123456789012-plantedtoken", "hunter2planted")
    reason = f"rotating {planted[0]} and password={planted[1]} this week"
    said = answer(app_world, "alice", f"/drills pause {DRILL} --reason '{reason}'")
    assert said.endswith("paused: rotating xox?-*** and password=*** this week"), said
    texts = everything_stored(app_world.env)
    assert any(
        "rotating xox?-***" in text for text in stored(app_world.env, "SELECT payload FROM events")
    )
    for secret in planted:
        assert not [text for text in texts if secret in text], secret


def test_only_incident_responders_may_act_on_an_incident(
    app_world: SlackWorld, pagerduty_emulator: PagerDutyEmulator
) -> None:
    emulator = pagerduty_emulator
    incident = emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    for text, verb in (
        (f"/incident ack {incident}", "acknowledge"),
        (f"/incident resolve {incident}", "resolve"),
        (f"/incident note {incident} taking this one", "note"),
    ):
        said = answer(app_world, "carol", text)
        assert f"Carol may not {verb} PagerDuty incident {incident}; only sre" in said, said
    assert emulator.state.incidents[incident]["status"] == "triggered"
    assert [c for c in emulator.calls(f"/incidents/{incident}") if c["method"] != "GET"] == []
    assert emulator.notes(incident) == []
    refusals = [a for a in app_world.audit_actions() if a["action"] == "incident.refused"]
    assert [(r["actor"]["id"], r["actor"]["origin"], r["detail"]["verb"]) for r in refusals] == [
        ("carol", "slack", "acknowledge"),
        ("carol", "slack", "resolve"),
        ("carol", "slack", "note"),
    ]
    assert f"*{incident}*" in answer(app_world, "carol", "/incident list")  # looking is for anyone


def test_a_note_from_slack_reaches_pagerduty_with_its_secrets_masked(
    app_world: SlackWorld, pagerduty_emulator: PagerDutyEmulator
) -> None:
    incident = pagerduty_emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    said = answer(
        app_world,
        "alice",
        f"/incident note {incident} rotating xoxb-123456789012-plantedtoken "
        "and password=hunter2planted this week",
    )
    assert said == f":memo: noted on {incident}", said
    (note,) = pagerduty_emulator.notes(incident)
    assert note["content"] == "rotating xox?-*** and password=*** this week"
    sent = json.dumps(pagerduty_emulator.calls(f"/incidents/{incident}"))
    assert "plantedtoken" not in sent and "hunter2planted" not in sent


def test_readiness_from_slack_is_the_engines_check_audited_as_the_person(
    app_world: SlackWorld,
) -> None:
    """``/runbook readiness ENV`` runs the engine's checks as the person who typed it (audited
    ``readiness.checked`` with their id and origin, like ``invoke readiness.check``); bad
    input is answered in words and checks nothing."""
    said = answer(app_world, "carol", "/runbook readiness development")
    verdict = said.splitlines()[-1]
    assert verdict.startswith("*readiness*: ") and " check(s), " in verdict, said
    records = [
        json.loads(row)
        for row in stored(app_world.env, "SELECT CAST(body AS TEXT) FROM audit ORDER BY seq")
        if '"readiness.' in row
    ]
    assert [(r["action"], r["actor"]["id"], r["actor"]["origin"]) for r in records] == [
        ("readiness.checked", "carol", "slack")
    ]
    assert records[0]["target"] == {"environment": "development", "runbook": "*"}
    assert "unknown environment 'prod'" in answer(app_world, "alice", "/runbook readiness prod")
    assert "unexpected `staging`" in answer(app_world, "alice", "/runbook readiness dev staging")
