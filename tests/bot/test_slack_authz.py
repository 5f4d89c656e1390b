"""Who may act on other people's work, drills and incidents, from Slack (a real bot process
against the Slack emulator, one shared state): the engine decides as for the terminal, the
refusal answers privately and is audited, and nothing changes."""

from __future__ import annotations

import pytest

from runbooks.engine.models import State
from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.held import start_held_selftest
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


def test_a_developer_cannot_cancel_someone_elses_production_run(world: SlackWorld) -> None:
    run = start_held_selftest(world.env, environment="production", user="alice")
    try:
        said = answer(world, "carol", f"/runbook cancel {run.execution_id}")
        assert f"Carol may not cancel {run.execution_id}" in said, said
        assert "only the requester or sre may" in said
        assert run.execution().state == State.RUNNING
        (refusal,) = [a for a in world.audit_actions() if a["action"] == "cancel.refused"]
        assert refusal["actor"] == {"id": "carol", "name": "Carol", "origin": "slack"}
    finally:
        code, _out, err = run.release()
    assert code == 0, err
    assert run.execution().state == State.SUCCEEDED
