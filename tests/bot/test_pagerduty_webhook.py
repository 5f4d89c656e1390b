"""``POST /webhooks/pagerduty`` on a running bot (a process) with the Slack and Kubernetes
emulators: forged, unsigned, stale and duplicate deliveries change nothing; a delivery signed
during a secret rotation (two signatures, one valid) is accepted; an ``incident.triggered`` on
a mapped service posts a card whose Run button is the clicker's request, linked to the
incident, plan first, then the approval card."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.webhooks import signature_matches
from sandbox.pagerduty import send_webhook, signature, webhook_body
from sandbox.slack import buttons_of, text_of
from tests.bot.conftest import SlackWorld, ephemeral_to, labels
from tests.support.waiting import wait_for

OLD, NEW = "pd-secret-old", "pd-secret-new"  # a rotation: both configured
INCIDENT = {
    "id": "P1ABC23",
    "incident_number": 42,
    "title": "api 5xx above 5 %",
    "status": "triggered",
    "html_url": "https://example.pagerduty.com/incidents/P1ABC23",
    "service": {"id": "PSVCPROD", "type": "service_reference", "summary": "api (production)"},
}


@pytest.fixture
def slack_env_extra() -> dict[str, str]:
    return {"PAGERDUTY_WEBHOOK_SECRETS": f"{OLD},{NEW}"}


def url(world: SlackWorld) -> str:
    return world.bot.base + "/webhooks/pagerduty"


def raw_post(world: SlackWorld, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(  # noqa: S310 - the local bot
        url(world),
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_signatures_any_entry_any_secret() -> None:
    body = b'{"event": {}}'
    assert signature_matches(signature(NEW, body), body, [OLD, NEW])
    assert signature_matches(
        f"{signature('other', body)}, {signature(OLD, body)}", body, [NEW, OLD]
    )
    assert not signature_matches(signature("other", body), body, [OLD, NEW])
    assert not signature_matches("v2=" + signature(OLD, body)[3:], body, [OLD])
    assert not signature_matches("", body, [OLD])
    # Splitting on "=" (a known bug elsewhere) would break on the prefix; we split on ",".
    assert signature_matches(" " + signature(OLD, body) + " ", body, [OLD])


def test_forged_unsigned_stale_and_duplicate_deliveries_change_nothing(world: SlackWorld) -> None:
    body = webhook_body("incident.triggered", INCIDENT)
    forged = send_webhook(url(world), body, secrets=["not-ours"])
    assert forged == (401, {"error": "signature does not match"})
    unsigned = raw_post(world, body, {"X-Webhook-Id": "w-0"})
    assert unsigned == (401, {"error": "no X-PagerDuty-Signature"})
    old = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale_body = webhook_body("incident.triggered", INCIDENT, occurred_at=old)
    status, answer = send_webhook(url(world), stale_body, secrets=[NEW])
    assert status == 401 and "the limit is 600 s" in answer["error"]
    # A rotation: PagerDuty signs with both; one of ours matches.
    accepted = send_webhook(url(world), body, secrets=["retired", NEW], webhook_id="w-1")
    assert accepted == (200, {"suggested": ["rollback", "scale.pods", "dr.status"]})
    again = send_webhook(url(world), body, secrets=[NEW], webhook_id="w-1")
    assert again == (200, {"duplicate": True})
    not_json = raw_post(
        world, b"{nope", {"X-PagerDuty-Signature": signature(NEW, b"{nope"), "X-Webhook-Id": "w-2"}
    )
    assert not_json[0] == 400
    assert world.executions() == []
    card = world.wait_card(lambda t: "P1ABC23" in t, channel="C0OPS", what="the incident card")
    assert len([m for m in world.messages("C0OPS") if "P1ABC23" in text_of(m)]) == 1
    assert labels(card) == ["Run rollback", "Run scale.pods", "Run dr.status"]
    outcomes = [a["outcome"] for a in world.audit_actions() if a["action"] == "webhook.pagerduty"]
    assert outcomes == ["401", "401", "401", "suggested", "duplicate", "400"]
    assert NEW not in json.dumps(world.audit_actions())


def test_run_on_the_incident_card_is_the_clickers_request_linked_to_the_incident(
    world: SlackWorld,
) -> None:
    body = webhook_body("incident.triggered", INCIDENT)
    assert send_webhook(url(world), body, secrets=[OLD])[0] == 200
    card = world.wait_card(lambda t: "P1ABC23" in t, channel="C0OPS", what="the incident card")
    run = next(b for b in buttons_of(card) if b["text"]["text"] == "Run rollback")
    assert json.loads(run["value"])["incident"] == "P1ABC23"
    alice = world.user("alice")
    assert alice.click("Run rollback").status == 200
    wait_for(lambda: alice.find_button("Confirm") is not None, what="alice's plan")
    plan = json.dumps(ephemeral_to(world, "alice")[-1])
    assert "production" in plan and "PagerDuty incident P1ABC23" in plan
    assert world.executions() == []  # nothing before Confirm
    assert alice.click("Confirm").status == 200
    wait_for(lambda: len(world.executions()) == 1, what="the request")
    (execution,) = world.executions()
    assert execution.runbook == "rollback" and execution.incident == "P1ABC23"
    assert execution.requester.id == "alice" and execution.state == "awaiting_approval"
    assert execution.trigger is not None and execution.trigger.to_doc()["kind"] == "incident-button"
    assert (execution.trigger.name, execution.trigger.reference) == ("alice", "P1ABC23")
    world.wait_card(lambda t: "awaiting_approval" in t, what="the approval card")


def _at(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_events_dated_in_the_future_beyond_the_skew_are_refused(world: SlackWorld) -> None:
    for when in (_at(timedelta(hours=1)), "2099-01-01T00:00:00Z"):
        body = webhook_body("incident.triggered", INCIDENT, occurred_at=when)
        status, answer = send_webhook(url(world), body, secrets=[NEW])
        assert status == 401, answer
        assert "ahead of the bot's clock" in answer["error"]
    # A clock a minute fast is skew, not an attack.
    body = webhook_body("incident.triggered", INCIDENT, occurred_at=_at(timedelta(minutes=1)))
    assert send_webhook(url(world), body, secrets=[NEW])[0] == 200
    outcomes = [
        (a["outcome"], a["detail"]["why"])
        for a in world.audit_actions()
        if a["action"] == "webhook.pagerduty"
    ]
    assert outcomes == [
        ("401", "from the future"),
        ("401", "from the future"),
        ("suggested", "card posted"),
    ]


def test_a_malformed_signed_body_is_a_400_and_its_retry_is_not_a_duplicate(
    world: SlackWorld,
) -> None:
    shapes: list[dict[str, Any]] = [
        {**INCIDENT, "service": "PSVCPROD"},
        {**INCIDENT, "service": ["PSVCPROD"]},
        {**INCIDENT, "service": {"id": ["PSVCPROD"]}},
        {**INCIDENT, "title": {"nested": True}},
    ]
    for shape in shapes:
        body = webhook_body("incident.triggered", shape)
        status, answer = send_webhook(url(world), body, secrets=[NEW], webhook_id="w-retried")
        assert status == 400, (shape, answer)
        assert "is not a PagerDuty v3 event" in answer["error"]
    data_list = json.dumps(
        {"event": {"event_type": "incident.triggered", "occurred_at": _at(timedelta()), "data": []}}
    ).encode()
    assert send_webhook(url(world), data_list, secrets=[NEW], webhook_id="w-retried")[0] == 400
    # PagerDuty retries the delivery (same X-Webhook-Id), now well formed: it is handled.
    body = webhook_body("incident.triggered", INCIDENT)
    retried = send_webhook(url(world), body, secrets=[NEW], webhook_id="w-retried")
    assert retried == (200, {"suggested": ["rollback", "scale.pods", "dr.status"]})
    assert send_webhook(url(world), body, secrets=[NEW], webhook_id="w-retried") == (
        200,
        {"duplicate": True},
    )
    outcomes = [a["outcome"] for a in world.audit_actions() if a["action"] == "webhook.pagerduty"]
    assert outcomes == ["400"] * 5 + ["suggested", "duplicate"]


HOSTILE = "<!channel> api down, see <https://evil.example/login|the runbook> & <@U0ALICE>"


def test_third_party_text_reaches_slack_as_plain_text(world: SlackWorld) -> None:
    """Slack's mrkdwn: ``<!channel>`` pings, ``<url|label>`` disguises a link, unless ``&``,
    ``<`` and ``>`` are sent as ``&amp;``, ``&lt;``, ``&gt;``."""
    hostile = {**INCIDENT, "id": "P9HOST1", "title": HOSTILE}
    hostile["html_url"] = "https://evil.example/|<!here>"
    body = webhook_body("incident.triggered", hostile)
    assert send_webhook(url(world), body, secrets=[NEW])[0] == 200
    card = world.wait_card(lambda t: "P9HOST1" in t, channel="C0OPS", what="the incident card")
    sent = json.dumps({"text": card["text"], "blocks": card["blocks"]})
    for live in ("<!channel>", "<https://evil.example", "<@U0ALICE>", "<!here>"):
        assert live not in sent, live
    shown = text_of(card)
    assert (
        "&lt;!channel&gt; api down, see &lt;https://evil.example/login|the runbook&gt; &amp; "
        "&lt;@U0ALICE&gt;" in shown
    )
