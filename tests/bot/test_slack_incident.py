"""``/incident`` in Slack against the TLS PagerDuty emulator: list, ack, note and show as the
person; ``/incident P1ABC23 rollback production`` is the rollback request linked to the
incident, plan first, and its request note lands on the incident; bad forms are refused."""

from __future__ import annotations

import pytest

from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.cli.test_cli import wait_for


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


def test_bad_forms_are_refused_at_once(world: SlackWorld) -> None:
    bad = world.user("alice").command("/incident ack nope", channel="C0OPS")
    assert "is not a PagerDuty incident id" in bad.body
    bad = world.user("alice").command("/incident P1ABC23", channel="C0OPS")
    assert "needs a command to run" in bad.body
    bad = world.user("alice").command("/incident P1ABC23 runbook list", channel="C0OPS")
    assert "runs a runbook command" in bad.body
    assert world.executions() == []
