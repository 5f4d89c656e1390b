"""``/incident`` in Slack against the TLS PagerDuty emulator: list, ack, note and show as the
person; ``/incident P1ABC23 rollback production`` is the rollback request linked to the
incident, plan first, and its request note lands on the incident (a bot process); bad forms
are refused and PagerDuty's text is shown inert (the bot's Slack app in this process)."""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.engine.models import State
from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from sandbox.slack import text_of
from tests.bot.conftest import SlackWorld, ephemeral_to, labels
from tests.conftest import run_cli
from tests.support.kube_runs import image
from tests.support.waiting import wait_for


@pytest.fixture
def emulator(pagerduty_emulator: PagerDutyEmulator) -> PagerDutyEmulator:
    return pagerduty_emulator


@pytest.fixture
def slack_env_extra(emulator: PagerDutyEmulator) -> dict[str, str]:
    return {
        "PAGERDUTY_API_URL": emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
    }


def answer(world: SlackWorld, user: str, text: str, n: int) -> str:
    world.user(user).command(text, channel="C0OPS")
    wait_for(lambda: len(ephemeral_to(world, user)) >= n, what=f"the answer to {text}")
    return str(ephemeral_to(world, user)[n - 1]["text"])


def test_incident_verbs_and_a_linked_rollback(
    world: SlackWorld, emulator: PagerDutyEmulator
) -> None:
    incident = emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    listed = answer(world, "alice", "/incident list", 1)
    assert f"*{incident}*" in listed and "production" in listed
    assert answer(world, "alice", f"/incident ack {incident}", 2) == f"{incident} acknowledged"
    assert "noted on" in answer(world, "alice", f"/incident note {incident} looking at api", 3)
    shown = answer(world, "alice", f"/incident show {incident}", 4)
    assert "acknowledged" in shown and "looking at api" in shown
    assert emulator.state.incidents[incident]["status"] == "acknowledged"
    assert {
        c["from"] for c in emulator.calls(f"/incidents/{incident}") if c["method"] != "GET"
    } == {"alice@example.com"}

    alice = world.user("alice")
    alice.command(f"/incident {incident} rollback production", channel="C0OPS")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the linked plan")
    assert world.executions() == []
    assert alice.click("Confirm").status == 200
    wait_for(lambda: len(world.executions()) == 1, what="the request")
    (execution,) = world.executions()
    assert execution.runbook == "rollback" and execution.incident == incident
    wait_for(
        lambda: any(
            n["content"].startswith(f"Requested by Alice: rollback production ({execution.id})")
            for n in emulator.notes(incident)
        ),
        what="the request note on the incident",
    )


def test_bad_forms_are_refused_at_once(app_world: SlackWorld) -> None:
    bad = app_world.user("alice").command("/incident ack nope", channel="C0OPS")
    assert "is not a PagerDuty incident id" in bad.body
    bad = app_world.user("alice").command("/incident P1ABC23", channel="C0OPS")
    assert "needs a command to run" in bad.body
    bad = app_world.user("alice").command("/incident P1ABC23 runbook list", channel="C0OPS")
    assert "runs a runbook command" in bad.body
    assert app_world.executions() == []


def test_an_unverified_gate_asks_on_the_card_and_the_incident(
    world: SlackWorld, emulator: PagerDutyEmulator, health: Any
) -> None:
    """Production's gate (config/environments.yaml: ``unverified: ask``) cannot read p95 in
    us-west-2: the card shows Healthy/Failed, its thread and the incident say what is asked;
    a developer's click is refused privately; Bob's Healthy ends the run on his word."""
    incident = emulator.open_incident("api p95 above 1 s", "PSVCPROD")["id"]
    health.set_signal("latency_p95", "us-west-2", None)
    alice, bob, carol = world.user("alice"), world.user("bob"), world.user("carol")
    alice.command(f"/incident {incident} rollback production", channel="C0OPS")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the linked plan")
    alice.click("Confirm")
    world.wait_card(lambda t: "awaiting_approval" in t, what="the approval card")
    bob.click("Approve")
    card = world.wait_card(lambda t: "waiting up to 10m" in t, what="the question on the card")
    assert labels(card) == ["Healthy", "Failed", "Cancel"]
    assert "unverified: no data for p95 response time in us-west-2" in text_of(card)
    (execution,) = world.executions()
    world.wait_for_message(
        lambda m: m["thread_ts"] == card["ts"] and "step 3 asks: unverified" in m["text"],
        what="the question in the card's thread",
    )
    wait_for(
        lambda: any(
            n["content"].startswith(f"Step 3 of rollback production ({execution.id}) asks")
            for n in emulator.notes(incident)
        ),
        what="the question on the incident",
    )

    carol.click("Healthy")
    world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0CAROL" and "Carol may not answer" in m["text"],
        what="carol's refusal",
    )
    assert world.executions()[0].state == State.RUNNING
    # From a terminal too (another process, the same store): a wrong choice says the right ones.
    wrong = run_cli(["runs.answer", execution.id, "maybe"], {**world.env, "RUNBOOK_USER": "bob"})
    assert wrong.returncode == 2
    assert "answer one of: healthy, failed" in wrong.stdout + wrong.stderr

    bob.click("Healthy")
    final = world.wait_card(lambda t: "— succeeded" in t, what="success on Bob's word")
    assert labels(final) == []
    assert "Bob answered healthy" in text_of(final)
    wait_for(
        lambda: any(
            n["content"].startswith("Answered healthy by Bob: step 3 of rollback production")
            and n["user"]["summary"] == "bob@example.com"
            for n in emulator.notes(incident)
        ),
        what="the answer on the incident, from Bob",
    )
    late = run_cli(["runs.answer", execution.id, "failed"], {**world.env, "RUNBOOK_USER": "dave"})
    assert late.returncode == 2
    assert "is not waiting for an answer (succeeded)" in late.stdout + late.stderr
    answered = [a for a in world.audit_actions() if a["action"] == "execution.answered"]
    assert [(a["actor"]["id"], a["outcome"]) for a in answered] == [("bob", "healthy")]
    for region in ("us-east-1", "us-west-2"):
        assert image(world.kube, region) == "app-api:1.4.1"


def test_incident_titles_and_notes_from_pagerduty_reach_slack_inert(
    app_world: SlackWorld, emulator: PagerDutyEmulator
) -> None:
    hostile = "<!channel> see <https://evil.example/login|the runbook> & go"
    incident = emulator.open_incident(hostile, "PSVCPROD")["id"]
    listed = answer(app_world, "alice", "/incident list", 1)
    shown = answer(app_world, "alice", f"/incident show {incident}", 2)
    for text in (listed, shown):
        assert "<!channel>" not in text and "<https://evil.example" not in text
        assert (
            "&lt;!channel&gt; see &lt;https://evil.example/login|the runbook&gt; &amp; go" in text
        )
