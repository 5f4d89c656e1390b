"""Slack Socket Mode end to end: no public ingress, each bot replica holds a WebSocket.

The Slack emulator answers ``apps.connections.open`` (app-level token) with a URL of its
WebSocket hub; Bolt's own Socket Mode client connects. Slack delivers each slash command and
click to one connection; here the request goes to one replica, the Confirm to the other and
the approval to the first, and the rollback still runs once. The hub checks that every
envelope is acknowledged; the Kubernetes emulators show the effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.models import State
from runbooks.engine.store.sqlite import SqliteStore
from sandbox.slack import SANDBOX_BOT_TOKEN, SlackEmulator, SlackUser, buttons_of, text_of
from sandbox.slack_socket import SANDBOX_APP_TOKEN
from tests.bot.conftest import PEOPLE, approval_cards, replica_env
from tests.conftest import KubeSandbox
from tests.support.bots import Bot, free_port, get, start_replicas, stop_replicas
from tests.support.kube_runs import DEPLOY, image
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot replicas as processes


def test_rollback_over_socket_mode_with_two_replicas_each_holding_a_connection(
    cli_env: dict[str, str], kube: KubeSandbox, health: Any, tmp_path: Path
) -> None:
    slack = SlackEmulator(socket_mode=True).start()
    hub = slack.hub
    state = str(tmp_path / "shared.db")
    env = replica_env(cli_env, state=state, kube=kube, health_url=health.url, slack=slack)
    env["SLACK_APP_TOKEN"] = SANDBOX_APP_TOKEN
    env.pop("SLACK_SIGNING_SECRET")  # Socket Mode needs no signing secret
    replicas = start_replicas(env, 2)
    bots = list(replicas.values())
    outputs: list[str] = []
    try:
        wait_for(lambda: hub.connections() == 2, what="both replicas to connect over Socket Mode")
        assert len(slack.calls("apps.connections.open")) == 2
        # No HTTP endpoint for Slack in Socket Mode: nothing to sign, nothing to expose.
        assert get(bots[0].base + "/slack/events")[0] == 404

        def person(name: str) -> SlackUser:
            return SlackUser(
                PEOPLE[name], bot_url=bots[0].base, slack_url=slack.url, user_name=name
            )

        def cards() -> list[dict[str, Any]]:
            return approval_cards(slack)

        alice, bob = person("alice"), person("bob")
        ack = alice.socket_command(hub, "/rollback production", to=0)
        assert not (ack.payload or {}).get("text")  # acked at once; the plan follows
        wait_for(lambda: alice.find_button("Confirm") is not None, what="alice's plan")
        plan = alice.find_button("Confirm")
        assert plan is not None
        assert "revision 3 (app-api:1.4.2) → revision 2 (app-api:1.4.1)" in text_of(plan[0])
        alice.socket_click(hub, "Confirm", to=1)
        wait_for(
            lambda: bool(cards()) and "awaiting_approval" in text_of(cards()[-1]),
            what="the approval card",
        )
        assert [b["text"]["text"] for b in buttons_of(cards()[-1])] == ["Approve", "Deny"]
        bob.socket_click(hub, "Approve", to=0)
        wait_for(lambda: "— succeeded" in text_of(cards()[-1]), timeout=90, what="the rollback")

        (card,) = cards()
        assert "1/1: Bob" in text_of(card)
        assert [index for index, _ in hub.delivered] == [0, 1, 0]
        store = SqliteStore(env["RUNBOOK_BOT_STATE"])
        try:
            (execution,) = store.list_executions()
            assert execution.state == State.SUCCEEDED
            assert execution.requester.id == "alice" and execution.requester.origin == "slack"
        finally:
            store.close()
        for region in ("us-east-1", "us-west-2"):
            assert image(kube, region) == "app-api:1.4.1"
            deploy = kube.cluster(region).get(DEPLOY, "production", "api-deployment")
            assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    finally:
        outputs = stop_replicas(replicas)
        slack.stop()
    assert all("socket" in out.lower() for out in outputs), outputs


def test_a_wrong_app_token_stops_the_bot_saying_what_to_fix(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    slack = SlackEmulator(socket_mode=True).start()
    env = {
        **cli_env,
        "RUNBOOK_BOT_LOG": "-",
        "SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "SLACK_APP_TOKEN": "xapp-1-not-the-right-one",
        "SLACK_API_URL": slack.api_url,
    }
    env.pop("SLACK_SIGNING_SECRET", None)
    try:
        bot = Bot(env, free_port())
        out, _ = bot.proc.communicate(timeout=60)
    finally:
        slack.stop()
    assert bot.proc.returncode == 2, out
    assert "Slack Socket Mode did not connect: invalid_auth" in out
    assert "app-level token (xapp-...) with connections:write" in out
    assert "Traceback" not in out and "not-the-right-one" not in out
    assert hub_untouched(slack)


def hub_untouched(slack: SlackEmulator) -> bool:
    return slack.hub.connections() == 0 and slack.hub.delivered == []
