"""Slack scenarios: journeys against the bot started as a real server process (``world``),
usage, refusals, dry runs, help, dialogs and cards against its Slack app in this process
(``app_world``, tests/support/slack_app.py).

Requests are signed like Slack signs them and sent over HTTP to ``/slack/events`` (or, in
this process, handed to Bolt's ``dispatch``, which checks the signature); the bot's Web API
calls go to the local Slack emulator, which records them; its Kubernetes calls go to the
sandbox's API emulators. Assertions are on effects: the deployment's pod template, the
card's final text and buttons, the store and the audit log.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.request
from typing import Any

import pytest

from runbooks.engine.models import State
from sandbox.slack import buttons_of, sign, text_of
from tests.bot.conftest import PEOPLE, SlackWorld, ephemeral_to, labels
from tests.conftest import run_cli
from tests.support.kube_runs import image
from tests.support.waiting import wait_for


def _plan_for(world: SlackWorld, user: str) -> dict[str, Any]:
    return world.wait_for_message(
        lambda m: m["ephemeral_to"] == PEOPLE[user] and "Confirm" in labels(m),
        what=f"the plan shown to {user}",
    )


def _request_rollback(world: SlackWorld) -> dict[str, Any]:
    """alice: /rollback production, Confirm; returns the approval card."""
    alice = world.user("alice")
    answer = alice.command("/rollback production")
    assert answer.status == 200 and answer.body == ""  # acked; the plan follows
    plan = _plan_for(world, "alice")
    assert "revision 3 (app-api:1.4.2) → revision 2 (app-api:1.4.1)" in text_of(plan)
    assert alice.click("Confirm").status == 200
    return world.wait_card(lambda t: "awaiting_approval" in t, what="the approval card")


def test_rollback_from_slack_plan_confirm_approve_progress_success(world: SlackWorld) -> None:
    card = _request_rollback(world)
    assert labels(card) == ["Approve", "Deny"]
    approve = buttons_of(card)[0]
    assert approve["confirm"]["title"]["text"] == "Approve?"  # a dialog guards the tap
    assert "Requested by* Alice (via slack)" in text_of(card)
    assert "0/1: nobody yet" in text_of(card)
    # Only alice saw the plan; bob sees the card, not the private plan.
    assert world.user("bob").find_button("Confirm") is None

    # Self-approval and a developer's approval are refused privately; nothing changes.
    world.user("alice").click("Approve")
    world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0ALICE" and "someone else must approve" in m["text"],
        what="alice's self-approval refusal",
    )
    world.user("carol").click("Approve")
    refusal = world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0CAROL" and "may not approve" in m["text"],
        what="carol's refusal",
    )
    assert "approvers: sre" in refusal["text"]
    (execution,) = world.executions()
    assert execution.state == State.AWAITING_APPROVAL and execution.valid_approvals() == []

    world.user("bob").click("Approve")
    final = world.wait_card(lambda t: "— succeeded" in t, what="the card to show success")
    text = text_of(final)
    assert "1/1: Bob" in text and labels(final) == []  # no buttons after the end
    assert text.count(":white_check_mark:") == 3  # both regions' rollouts, then the gate
    assert "watch api in production (us-east-1, us-west-2) for 3.0s in Prometheus" in text
    assert final["updates"] >= 2  # updated in place, not reposted
    for region in ("us-east-1", "us-west-2"):
        assert image(world.kube, region) == "app-api:1.4.1"

    def thread_of() -> list[dict[str, Any]]:
        return [m for m in world.messages("C0APPROVALS") if m["thread_ts"] == final["ts"]]

    wait_for(lambda: len(thread_of()) == 2, what="both steps in the card's thread")
    thread = thread_of()
    assert [m["text"].split(":")[0] for m in thread] == ["step 1 succeeded", "step 2 succeeded"]
    assert "rollout complete" in thread[0]["text"]
    dm = world.wait_for_message(
        lambda m: m["channel"] == "U0ALICE" and "succeeded" in m["text"], what="alice's result"
    )
    assert execution.id in dm["text"]
    approvals = [a for a in world.audit_actions() if a["action"] == "approval.granted"]
    assert [(a["actor"]["id"], a["actor"]["origin"]) for a in approvals] == [("bob", "slack")]

    # /metrics counts it, with the Slack ack latency histogram beside it.
    assert world.bot is not None
    with urllib.request.urlopen(world.bot.base + "/metrics", timeout=5) as response:  # noqa: S310
        metrics = response.read().decode()
    assert (
        'runbook_bot_executions_total{environment="production",runbook="rollback",'
        'state="succeeded"} 1.0' in metrics
    )
    count = [
        line
        for line in metrics.splitlines()
        if line.startswith("runbook_bot_slack_ack_seconds_count")
    ]
    assert count and float(count[0].split()[-1]) == 5  # the command and four clicks
    assert "runbook_bot_execution_duration_seconds_bucket" in metrics


def test_in_this_process_bolt_still_checks_each_signature(app_world: SlackWorld) -> None:
    """``app_world`` is no way around the signature check: Bolt refuses a forged and a stale
    request with 401 before any listener runs, as the bot does over HTTP (where the gate in
    front of Bolt refuses them first: the test below)."""
    alice = app_world.user("alice")
    body = alice.command_body("/rollback production --dry-run", channel="C0OPS")
    forged = alice.post(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale = int(time.time()) - 6 * 60  # signed correctly, six minutes ago
    assert alice.post(body, "application/x-www-form-urlencoded", timestamp=stale).status == 401
    assert alice.post(body, "application/x-www-form-urlencoded").status == 200  # the control
    app_world.wait_for_message(lambda m: m["ephemeral_to"] == "U0ALICE", what="the dry run")
    assert [a["action"] for a in app_world.audit_actions()] == ["request.dry_run"]


def test_forged_and_replayed_requests_change_nothing(world: SlackWorld) -> None:
    alice = world.user("alice")
    body = alice.command_body("/rollback production", channel="C0OPS")
    forged = alice.post(body, "application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale = int(time.time()) - 6 * 60  # a captured request replayed six minutes later
    replayed = alice.post(
        body,
        "application/x-www-form-urlencoded",
        timestamp=stale,
        signature=sign(alice.signing_secret, str(stale), body),
    )
    assert replayed.status == 401
    wrong_secret = alice.post(
        body,
        "application/x-www-form-urlencoded",
        signature=sign("not-the-secret", str(int(time.time())), body),
    )
    assert wrong_secret.status == 401
    # 401 comes from Bolt's verification, before any listener; the check below, after a real
    # request has been answered, shows no forged command produced a plan either.
    assert world.messages() == []
    assert world.executions() == []
    # A replay of a real approval within the window: Bolt accepts the signature, the engine
    # refuses the second approval by the same person.
    card = _request_rollback(world)
    bob = world.user("bob")
    payload = bob.click_payload(card, buttons_of(card)[0])
    clicked = json.dumps(payload)
    form = ("payload=" + urllib.parse.quote(clicked)).encode()
    ts = str(int(time.time()))
    signature = sign(bob.signing_secret, ts, form)
    assert (
        bob.post(
            form, "application/x-www-form-urlencoded", timestamp=int(ts), signature=signature
        ).status
        == 200
    )
    world.wait_card(lambda t: "— succeeded" in t or "running" in t, what="the approved run")
    assert (
        bob.post(
            form, "application/x-www-form-urlencoded", timestamp=int(ts), signature=signature
        ).status
        == 200
    )
    world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0BOB" and "not waiting for a decision" in m["text"],
        what="the replayed approval's refusal",
    )
    (execution,) = world.executions()
    assert len(execution.valid_approvals()) == 1
    plans = [m for m in world.messages() if m["ephemeral_to"] == "U0ALICE" and m["response_url"]]
    assert len(plans) == 1  # only the genuine /rollback production was ever planned


@pytest.mark.parametrize(
    ("text", "expected", "right_form"),
    [
        (
            "/rollback prod",
            "unknown environment 'prod'; known: development, staging, production, rehearsal",
            "",
        ),
        ("/rollback production --bogus 1", "unknown flag --bogus", "`/rollback ENVIRONMENT"),
        (
            "/rollback production --to-revison 2",
            "unknown flag --to-revison; did you mean --to-revision?",
            "`/rollback ENVIRONMENT",
        ),
        (
            "/rollback",
            "missing ENVIRONMENT (one of: development, staging, production, rehearsal)",
            "`/rollback ENVIRONMENT",
        ),
        (
            "/scale pods production --service api --replicas 50",
            "--replicas: 50 is outside production's bounds 2-20",
            "",
        ),
        (
            "/scale production",
            "/scale needs one of: hpa, nodes, pods",
            "`/scale pods ENVIRONMENT SERVICE",
        ),
        (
            "/rollback production --region eu-west-1",
            "unknown region 'eu-west-1' for production",
            "",
        ),
        ("/rollback production --yes", "--yes is for the terminal", ""),
        ("/runbook frobnicate", "unknown /runbook verb `frobnicate`", "/runbook list"),
        ('/rollback production --reason "unclosed', "could not read", "close the quote"),
    ],
)
def test_bad_input_is_answered_privately_and_creates_nothing(
    app_world: SlackWorld, text: str, expected: str, right_form: str
) -> None:
    answer = app_world.user("alice").command(text)
    assert answer.status == 200
    if answer.body:  # parse errors are answered in the ack itself
        reply = json.loads(answer.body)
        assert reply.get("response_type", "ephemeral") == "ephemeral"
        shown = reply["text"]
    else:  # validation against live config/state: a private response_url message
        shown = app_world.wait_for_message(
            lambda m: m["ephemeral_to"] == "U0ALICE", what="the private answer"
        )["text"]
    assert expected in shown
    assert right_form in shown
    assert app_world.executions() == []
    assert all(m["ephemeral_to"] == "U0ALICE" for m in app_world.messages())
    for region in ("us-east-1", "us-west-2"):
        assert image(app_world.kube, region) == "app-api:1.4.2"


def test_unknown_user_and_wrong_channel_are_refused_and_audited(app_world: SlackWorld) -> None:
    answer = app_world.user("stranger").command("/rollback production")
    assert "I do not know you yet" in json.loads(answer.body)["text"]
    assert "slack_id: U0NOBODY" in json.loads(answer.body)["text"]
    refused = [a for a in app_world.audit_actions() if a["outcome"] == "unknown_user"]
    assert refused and refused[0]["actor"]["id"] == "slack:U0NOBODY"

    app_world.user("alice").command("/rollback production", channel="C0RANDOM")
    refusal = app_world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0ALICE", what="the channel refusal"
    )
    assert "can only be requested from <#C0OPS>, not from <#C0RANDOM>" in refusal["text"]
    assert labels(refusal) == []  # no Confirm offered
    assert app_world.executions() == []
    assert any(a["outcome"] == "not_allowed" for a in app_world.audit_actions())


def test_dry_run_shows_the_plan_without_buttons_and_changes_nothing(app_world: SlackWorld) -> None:
    app_world.user("alice").command("/rollback production --dry-run --to-revision 1")
    plan = app_world.wait_for_message(lambda m: m["ephemeral_to"] == "U0ALICE", what="the dry run")
    assert labels(plan) == []
    assert "revision 3 (app-api:1.4.2) → revision 1 (app-api:1.4.0)" in text_of(plan)
    assert "dry run: nothing was changed" in text_of(plan)
    # Allowed, and what the real request would meet: the approval and who gives it.
    assert (
        "the real request would be allowed now, then wait for 1 approval(s) from sre: "
        "policy.yaml rules[2] (rollback in production)"
    ) in text_of(plan)
    assert app_world.executions() == []
    assert image(app_world.kube, "us-east-1") == "app-api:1.4.2"
    assert [a["action"] for a in app_world.audit_actions()] == ["request.dry_run"]


def test_deny_asks_for_a_reason_and_tells_the_requester(app_world: SlackWorld) -> None:
    _request_rollback(app_world)
    bob = app_world.user("bob")
    bob.click("Deny")
    wait_for(lambda: bob.last_view() is not None, what="the Deny dialog")
    view = bob.last_view()
    assert view is not None and view["callback_id"] == "rb_deny_modal"
    bob.view_submission(view, {"reason": "release 1.4.2 is fine; the alert was the CDN"})
    card = app_world.wait_card(lambda t: "— denied" in t, what="the denied card")
    assert labels(card) == []
    assert "denied by Bob: release 1.4.2 is fine" in text_of(card)
    app_world.wait_for_message(
        lambda m: m["channel"] == "U0ALICE" and "the alert was the CDN" in m["text"],
        what="alice hearing why",
    )
    assert image(app_world.kube, "us-east-1") == "app-api:1.4.2"


@pytest.mark.policy_edit("approvals: 1, expiry: 30m", "approvals: 1, expiry: 2s")
def test_expired_card_stops_working(app_world: SlackWorld) -> None:
    card = _request_rollback(app_world)
    stale_approve = app_world.user("bob").click_payload(card, buttons_of(card)[0])
    expired = app_world.wait_card(lambda t: "— expired" in t, what="the card to expire")
    assert labels(expired) == []
    app_world.user("bob").interaction(stale_approve)  # an old card still on someone's phone
    app_world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0BOB" and "expired" in m["text"],
        what="the refusal of a stale click",
    )
    (execution,) = app_world.executions()
    assert execution.state == State.EXPIRED and execution.valid_approvals() == []
    app_world.wait_for_message(
        lambda m: m["channel"] == "U0ALICE" and "expired" in m["text"], what="alice told"
    )
    assert image(app_world.kube, "us-east-1") == "app-api:1.4.2"


def test_rate_limited_progress_still_ends_on_the_final_state(world: SlackWorld) -> None:
    card = _request_rollback(world)
    request = urllib.request.Request(  # noqa: S310 - the local emulator
        world.slack.url + "/_sandbox/rate_limit",
        data=json.dumps({"method": "chat.update", "count": 2, "retry_after": 1}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310
    world.user("bob").click("Approve")
    final = world.wait_card(lambda t: "— succeeded" in t, what="the final state after 429s")
    assert final["ts"] == card["ts"]
    updates = world.slack.calls("chat.update")
    assert len(updates) >= 3  # two answered 429, then the retries got through
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(updates)]
    assert max(gaps) >= 0.9  # Retry-After was honoured


def test_terminal_request_is_approved_from_slack(world: SlackWorld) -> None:
    result = run_cli(["rollback", "production", "--yes", "--no-wait"], world.env)
    assert result.returncode == 3, result.stderr  # pending
    card = world.wait_card(lambda t: "awaiting_approval" in t, what="the CLI request's card")
    assert "Requested by* Alice (via cli)" in text_of(card)
    world.user("bob").click("Approve")
    world.wait_card(lambda t: "— succeeded" in t, what="the bot to run it")
    assert image(world.kube, "us-west-2") == "app-api:1.4.1"


def test_help_is_generated_from_the_registry(app_world: SlackWorld) -> None:
    app_world.user("alice").command("/scale help")
    shown = app_world.wait_for_message(lambda m: m["ephemeral_to"] == "U0ALICE", what="help")[
        "text"
    ]
    assert "`/scale pods ENVIRONMENT SERVICE REPLICAS [--region REGION]" in shown
    assert "`/scale hpa ENVIRONMENT SERVICE MIN MAX" in shown
    answer = app_world.user("alice").command("/runbook help")
    assert answer.body == ""
    wait_for(lambda: len(ephemeral_to(app_world, "alice")) == 2, what="/runbook help")
    shown = ephemeral_to(app_world, "alice")[-1]["text"]
    assert (
        "/dr, /drills, /incident, /maintenance, /restore, /rollback, /runbook, /scale, /selftest"
        in shown
    )
    assert "/runbook deny ID --reason TEXT" in shown


@pytest.mark.policy_edit(
    "approvers: [sre], approvals: 1, expiry: 30m", "approvers: [slack:S0ONCALL], approvals: 1"
)
def test_approvers_from_a_slack_user_group(app_world: SlackWorld) -> None:
    request = urllib.request.Request(  # noqa: S310 - the local emulator
        app_world.slack.url + "/_sandbox/usergroup",
        data=json.dumps({"id": "S0ONCALL", "users": ["U0DAVE"]}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()  # noqa: S310
    _request_rollback(app_world)
    app_world.user("bob").click("Approve")  # sre, but not on call
    app_world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0BOB" and "approvers: slack:S0ONCALL" in m["text"],
        what="bob refused",
    )
    app_world.user("dave").click("Approve")
    card = app_world.wait_card(lambda t: "— succeeded" in t, what="dave's approval to run it")
    assert "1/1: Dave" in text_of(card)
    assert app_world.slack.calls("usergroups.users.list")
