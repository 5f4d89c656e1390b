"""One error mapper (issue #31): what a Slack listener raises reaches the person as one mapped
answer, privately, whether it was raised on Bolt's listener thread before the ack (Bolt's
error handler: the answer is the HTTP response, never a 500) or on the bot's work pool after
it (the pool's wrapper calls the same mapper). The bot's Slack app in this process."""

from __future__ import annotations

import io
import json
from typing import Any

from sandbox.slack import SlackUser
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.waiting import wait_for

#: A message in #ops with one of our buttons on it (a card someone could click).
CARD = {"channel": "C0OPS", "ts": "1700000000.000100", "text": "a card", "blocks": []}
NOBODY = "rb-000000"  # an execution id of the right shape that no execution has
NOT_FOUND = f"no execution '{NOBODY}'; list them with `runs.list`"  # the engine's NotFound


def _button(action_id: str, value: str) -> dict[str, Any]:
    return {
        "action_id": action_id,
        "block_id": "actions",
        "text": {"type": "plain_text", "text": action_id},
        "value": value,
    }


def _deny_dialog(user: SlackUser, execution_id: str) -> dict[str, Any]:
    """A submission of the Deny dialog for ``execution_id``, its reason field filled."""
    return {
        "type": "view_submission",
        "user": {"id": user.user_id, "username": user.user_name},
        "view": {
            "type": "modal",
            "callback_id": "rb_deny_modal",
            "private_metadata": json.dumps({"id": execution_id, "channel": "C0OPS"}),
            "blocks": [
                {
                    "type": "input",
                    "block_id": "reason",
                    "element": {"type": "plain_text_input", "action_id": "value"},
                }
            ],
            "state": {"values": {"reason": {"value": {"value": "not needed"}}}},
        },
    }


def _next_private(world: SlackWorld, user: str, before: int, what: str) -> dict[str, Any]:
    wait_for(lambda: len(ephemeral_to(world, user)) > before, what=what)
    return ephemeral_to(world, user)[-1]


def test_a_runbook_error_raised_in_a_listener_reaches_the_person_as_the_mapped_text(
    app_world: SlackWorld,
) -> None:
    alice = app_world.user("alice")

    # On Bolt's thread, before the ack (the command's UsageError, re-raised after its audit
    # record): the mapped text is the HTTP answer itself, private.
    answer = alice.command("/rollback production --to-revison 1")
    assert answer.status == 200
    reply = json.loads(answer.body)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"].startswith(
        ":warning: unknown flag --to-revison; did you mean --to-revision?\n`/rollback ENVIRONMENT "
    ), reply
    rejected = [a for a in app_world.audit_actions() if a["action"] == "request.rejected"]
    assert [a["outcome"] for a in rejected] == ["usage_error"]

    # On the work pool, after the ack: NotFound from the engine, by the command's response_url.
    before = len(ephemeral_to(app_world, "alice"))
    assert alice.command(f"/runbook show {NOBODY}").body == ""  # acked; the answer follows
    shown = _next_private(app_world, "alice", before, "the answer to /runbook show")
    assert shown["text"] == f":no_entry: {NOT_FOUND}", shown

    # A button, on the work pool: the refusal privately to the clicker, nothing in the channel.
    before = len(ephemeral_to(app_world, "alice"))
    cancel = alice.click_payload(CARD, _button("rb_cancel_run", NOBODY))
    assert alice.interaction(cancel).status == 200
    refused = _next_private(app_world, "alice", before, "the answer to Cancel")
    assert refused["text"] == f":no_entry: {NOT_FOUND}", refused
    assert all(m["ephemeral_to"] for m in app_world.messages())

    # The Deny dialog, on Bolt's thread before its ack: the refusal under the reason field.
    submitted = alice.interaction(_deny_dialog(alice, NOBODY))
    assert submitted.status == 200
    errors = json.loads(submitted.body)
    assert errors == {"response_action": "errors", "errors": {"reason": NOT_FOUND}}
    assert app_world.executions() == []


def test_an_unexpected_error_gets_a_generic_private_answer_and_a_logged_traceback(
    app_world: SlackWorld, log_stream: io.StringIO
) -> None:
    alice = app_world.user("alice")

    # On Bolt's thread: a dialog submission without its state (Bolt's default answer: 500).
    dialog = _deny_dialog(alice, NOBODY)
    del dialog["view"]["state"]
    submitted = alice.interaction(dialog)
    assert submitted.status == 200, submitted
    field = json.loads(submitted.body)["errors"]["reason"]
    assert field.startswith(":warning: Something went wrong in the bot"), field

    # On the work pool: a Deny click that carries no trigger id (the dialog cannot open).
    before = len(ephemeral_to(app_world, "alice"))
    deny = alice.click_payload(CARD, _button("rb_deny", f"{NOBODY}:0123"))
    del deny["trigger_id"]
    assert alice.interaction(deny).status == 200
    said = _next_private(app_world, "alice", before, "the answer to Deny")["text"]
    assert said.startswith(":warning: Something went wrong in the bot"), said
    assert "trigger_id" not in said and "KeyError" not in said  # the error stays in the log

    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    failed = [e for e in lines if e.get("event") == "slack work failed"]
    assert [(e.get("callback_id"), e.get("action_id")) for e in failed] == [
        ("rb_deny_modal", None),
        (None, "rb_deny"),
    ]
    assert all("Traceback" in e["exception"] and "KeyError" in e["exception"] for e in failed)
