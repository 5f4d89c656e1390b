"""Signed button clicks whose ``value`` is not what our buttons carry (an old card, an altered
payload): the clicker is answered privately, the bot logs one line, nothing happens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sandbox.slack import buttons_of
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.waiting import wait_for

MALFORMED: list[tuple[str, str]] = [
    ("rb_confirm", "not json {"),
    ("rb_confirm", "[1, 2]"),
    ("rb_confirm", '{"r": "selftest", "p": "development", "h": "x", "u": "U0ALICE"}'),
    ("rb_incident_run", '["rollback"]'),
    ("rb_incident_run", '{"runbook": "rollback"}'),
    ("rb_approve", "../../etc:passwd"),
    ("rb_cancel_run", ""),
    ("rb_answer_0", "rb-zzz:key:healthy"),
    ("rb_deny", "nope"),
]


@pytest.fixture
def slack_env_extra(tmp_path: Path) -> dict[str, str]:
    return {"RUNBOOK_BOT_LOG": str(tmp_path / "bot.jsonl")}


def test_a_malformed_button_value_is_answered_privately_with_one_log_line(
    world: SlackWorld,
) -> None:
    alice = world.user("alice")
    alice.command("/selftest development", channel="C0OPS")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="alice's plan")
    found = alice.find_button("Confirm")
    assert found is not None
    message, confirm = found
    before = len(ephemeral_to(world, "alice"))
    for number, (action_id, value) in enumerate(MALFORMED, start=1):
        button: dict[str, Any] = {**confirm, "action_id": action_id, "value": value}
        delivery = alice.interaction(alice.click_payload(message, button))
        assert delivery.status == 200, (action_id, value, delivery)
        wait_for(
            lambda n=number: len(ephemeral_to(world, "alice")) >= before + n,  # type: ignore[misc]
            what=f"the answer to {action_id} {value!r}",
        )
        answer = ephemeral_to(world, "alice")[-1]
        assert "did not understand that button" in answer["text"], answer
        assert not buttons_of(answer)
    assert world.executions() == []
    log = Path(world.env["RUNBOOK_BOT_LOG"]).read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    understood = [e for e in lines if e.get("event") == "slack button not understood"]
    assert [(e["action_id"], e["user"]) for e in understood] == [
        (action_id, "U0ALICE") for action_id, _ in MALFORMED
    ]
    assert "Traceback" not in log and "slack work failed" not in log
