"""``POST /webhooks/alertmanager`` on a running bot (a process), with the Slack and Kubernetes
emulators: refusals change nothing; the spec's rollback trigger fired three times and by a
second Alertmanager replica rolls back once in development (the pod template after it is the
previous revision's); in production the same alert posts an approval card instead."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from sandbox.kube.emulator import BY_PATH
from sandbox.pagerduty import SANDBOX_API_TOKEN, SANDBOX_ROUTING_KEY, PagerDutyEmulator
from sandbox.slack import text_of
from tests.bot.conftest import SlackWorld
from tests.support.waiting import wait_for

TOKEN = "test-alertmanager-token"
DEPLOY = BY_PATH["apps", "v1", "deployments"]


@pytest.fixture
def slack_env_extra(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"ALERTMANAGER_WEBHOOK_TOKEN": TOKEN}
    if "pagerduty_emulator" in request.fixturenames:  # the bot pages through it
        emulator = request.getfixturevalue("pagerduty_emulator")
        env |= {
            "PAGERDUTY_API_URL": emulator.url,
            "PAGERDUTY_EVENTS_URL": emulator.url,
            "PAGERDUTY_CA_BUNDLE": str(emulator.ca_path),
            "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
            "PAGERDUTY_ROUTING_KEY": SANDBOX_ROUTING_KEY,
        }
    return env


def payload(alertname: str, environment: str, *, replica: str = "am-0") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "runbook-bot",
            "groupKey": f'{{}}:{{alertname="{alertname}"}}',
            "externalURL": f"http://{replica}:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": alertname,
                        "environment": environment,
                        "service": "api",
                        "region": "us-east-1",
                        "severity": "page",
                    },
                    "annotations": {"summary": "5xx rate 7.2 % over 5m (trigger: 5 %)"},
                    "startsAt": "2026-12-02T03:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z",
                    "fingerprint": "0123456789abcdef",
                }
            ],
        }
    ).encode()


def post(
    world: SlackWorld, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any], Any]:
    request = urllib.request.Request(  # noqa: S310 - the local bot
        world.bot.base + "/webhooks/alertmanager",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local bot
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read()), refused.headers


BEARER = {"Authorization": f"Bearer {TOKEN}"}
BASIC = {"Authorization": "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()}


def image(world: SlackWorld, namespace: str) -> str:
    deploy = world.kube.cluster("us-east-1").get(DEPLOY, namespace, "api-deployment")
    return str(deploy["spec"]["template"]["spec"]["containers"][0]["image"]).rsplit("/", 1)[-1]


def test_refused_notifications_change_nothing(world: SlackWorld) -> None:
    good = payload("HighErrorRate", "development")
    status, body, headers = post(world, good, {})
    assert status == 401 and "no credentials" in body["error"]
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert post(world, good, {"Authorization": "Bearer nope"})[:2] == (
        401,
        {"error": "wrong bearer token"},
    )
    wrong_basic = "Basic " + base64.b64encode(b"alertmanager:nope").decode()
    assert post(world, good, {"Authorization": wrong_basic})[0] == 401
    status, body, _ = post(world, b"{not json", BEARER)
    assert status == 400 and body["error"].startswith("body is not JSON")
    status, body, _ = post(world, json.dumps({"version": "3", "alerts": []}).encode(), BEARER)
    assert status == 400 and "payload version '3' is not supported" in body["error"]
    assert world.executions() == []
    rejected = [a for a in world.audit_actions() if a["action"] == "webhook.rejected"]
    assert [a["outcome"] for a in rejected] == ["401", "401", "401", "400", "400"]
    assert TOKEN not in json.dumps(world.audit_actions())


def test_three_repeats_and_a_second_alertmanager_roll_back_once(world: SlackWorld) -> None:
    assert image(world, "development") == "app-api:1.4.2"
    answers = [post(world, payload("HighErrorRate", "development"), BEARER) for _ in range(3)]
    answers.append(post(world, payload("HighErrorRate", "development", replica="am-1"), BASIC))
    assert [(s, b["accepted"], b["suppressed"]) for s, b, _ in answers] == [
        (200, 1, 0),
        (200, 0, 1),
        (200, 0, 1),
        (200, 0, 1),
    ]
    wait_for(
        lambda: [e.state for e in world.executions()] == ["succeeded"],
        timeout=60,
        what="the automatic rollback to succeed",
    )
    (execution,) = world.executions()
    assert execution.runbook == "rollback" and execution.requester.id == "alertmanager"
    assert execution.plan.params["service"] == "api"
    assert execution.reason is not None and "alert HighErrorRate firing" in execution.reason
    assert image(world, "development") == "app-api:1.4.1"  # the revision before
    # Never silent: its card goes to the approvals channel though it needed no approval.
    world.wait_card(lambda t: "— succeeded" in t, what="the rollback's card")


def test_in_production_the_alert_asks_the_approvers(world: SlackWorld) -> None:
    status, body, _ = post(world, payload("HighLatencyP95", "production"), BEARER)
    assert status == 200 and body["accepted"] == 1
    card = world.wait_card(lambda t: "awaiting_approval" in t, what="the approval card")
    text = text_of(card)
    assert "Alertmanager" in text and "alert HighLatencyP95 firing" in text
    (execution,) = world.executions()
    assert execution.state == "awaiting_approval" and execution.required_approvals == 1
    assert image(world, "production") == "app-api:1.4.2"  # nothing changed before approval


def live(world: SlackWorld, namespace: str) -> tuple[str, str]:
    """kubectl's view (the oracle): the deployment's image and revision in us-east-1."""
    shown = world.kube.kubectl("get", "deployment", "api-deployment", "-n", namespace, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    deploy = json.loads(shown.stdout)
    image_now = deploy["spec"]["template"]["spec"]["containers"][0]["image"].rsplit("/", 1)[-1]
    return image_now, deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"]


@pytest.mark.config_edit("alerts.yaml", "cooldown: 30m", "cooldown: 1s")
def test_an_alert_still_firing_after_a_rollback_pages_instead_of_rolling_back_again(
    world: SlackWorld, pagerduty_emulator: PagerDutyEmulator
) -> None:
    """Revision 3 (1.4.2) → 4 (1.4.1) by the first alert; the alert keeps firing: a second
    automatic rollback would be `rollout undo` to revision 3, the release just removed. It is
    refused, audited, and pages once; kubectl still shows 1.4.1."""
    assert live(world, "development") == ("app-api:1.4.2", "3")
    assert post(world, payload("HighErrorRate", "development"), BEARER)[1]["accepted"] == 1
    wait_for(
        lambda: [e.state for e in world.executions()] == ["succeeded"],
        timeout=60,
        what="the first automatic rollback to succeed",
    )
    assert live(world, "development") == ("app-api:1.4.1", "4")
    wait_for(
        lambda: post(world, payload("HighErrorRate", "development"), BEARER)[1]["accepted"] == 1,
        timeout=30,
        what="the cooldown (1 s here) to pass",
    )
    wait_for(lambda: len(pagerduty_emulator.state.events) == 1, what="the page")
    (event,) = pagerduty_emulator.state.events
    summary = event["payload"]["summary"]
    assert "still failing after rolling back to app-api:1.4.1" in summary
    assert "no earlier good release" in summary
    assert event["dedup_key"].startswith("runbook-bot:auto:rollback:development:api")
    (first,) = world.executions()  # no second execution, no second rollout
    assert first.state == "succeeded"
    assert "rolled back at" in summary and first.id in summary
    assert live(world, "development") == ("app-api:1.4.1", "4")
    refused = [a for a in world.audit_actions() if a["action"] == "request.refused"]
    assert [(a["actor"]["id"], a["outcome"]) for a in refused] == [("alertmanager", "needs_person")]
    world.wait_for_message(lambda m: "Paged on-call" in text_of(m), what="the notice in Slack")
