"""The real Alertmanager (Debian's 0.25) delivering to a running bot's webhook, and the real
Prometheus scraping the bot: a firing alert, repeated by Alertmanager every second, rolls
back once (the rest suppressed); a wrong token is answered 401 and changes nothing; basic
auth works and policy asks for approval in staging. Prometheus scrapes the bot's
``/metrics`` throughout: ``runbook_bot_executions_total`` never resets, and ``promtool check
metrics`` accepts what the bot serves."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from typing import Any

import pytest

from tests.bot.conftest import SlackWorld
from tests.support.monitoring import Monitoring, need
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # a bot, the real Prometheus and Alertmanager

TOKEN = "test-alertmanager-token"


@pytest.fixture
def slack_env_extra() -> dict[str, str]:
    return {"ALERTMANAGER_WEBHOOK_TOKEN": TOKEN}


def received(world: SlackWorld) -> list[dict[str, Any]]:
    return [a for a in world.audit_actions() if a["action"] == "alert.received"]


def outcomes(world: SlackWorld, alert: str) -> list[str]:
    return [
        d["outcome"]
        for record in received(world)
        for d in record["detail"]["alerts"]
        if d["alert"] == alert
    ]


def labels(alertname: str, environment: str) -> dict[str, str]:
    return {
        "alertname": alertname,
        "environment": environment,
        "service": "api",
        "region": "us-east-1",
        "severity": "critical",
        "trigger": "rollback",
    }


def test_the_real_alertmanager_rolls_back_once_and_prometheus_scrapes_the_bot(
    world: SlackWorld, monitoring: Monitoring
) -> None:
    am, prometheus = monitoring.alertmanager, monitoring.prometheus
    webhook = world.bot.base + "/webhooks/alertmanager"
    bot_target = world.bot.base.removeprefix("http://")
    prometheus.scrape("bot", [bot_target])
    try:
        # Repeated every second: the bot's cooldown makes them one rollback.
        am.route_to(webhook, token=TOKEN, repeat_interval="1s")
        am.fire(labels("HighErrorRate", "development"), {"summary": "error rate 7 %"})
        wait_for(
            lambda: len(outcomes(world, "HighErrorRate")) >= 3,
            timeout=60,
            what="three notifications from Alertmanager",
        )
        wait_for(
            lambda: [e.state for e in world.executions()] == ["succeeded"],
            timeout=60,
            what="the automatic rollback to succeed",
        )
        seen = outcomes(world, "HighErrorRate")
        assert seen[0] == "accepted" and set(seen[1:]) == {"suppressed"}, seen
        (execution,) = world.executions()
        assert execution.runbook == "rollback" and execution.requester.id == "alertmanager"
        assert "alert HighErrorRate firing" in (execution.reason or "")

        # A wrong token: 401, audited, nothing requested (Alertmanager does not retry a 4xx).
        am.route_to(webhook, token="not-the-token")
        am.fire(labels("HighLatencyP95", "development"))
        wait_for(
            lambda: any(
                a["action"] == "webhook.rejected" and a["outcome"] == "401"
                for a in world.audit_actions()
            ),
            timeout=60,
            what="the bot refusing the wrong token",
        )
        assert outcomes(world, "HighLatencyP95") == []
        assert len(world.executions()) == 1

        # Basic auth; in staging policy wants an approval first.
        am.route_to(webhook, basic_auth=("alertmanager", TOKEN))
        am.fire(labels("HealthCheckFailing", "staging"))
        wait_for(
            lambda: any(e.environment == "staging" for e in world.executions()),
            timeout=60,
            what="the staging request",
        )
        (staging,) = [e for e in world.executions() if e.environment == "staging"]
        assert staging.state == "awaiting_approval" and staging.required_approvals == 1

        # The real Prometheus scraped the bot all along; its counter never reset.
        wait_for(
            lambda: prometheus.targets_up("bot"), timeout=30, what="Prometheus scraping the bot"
        )
        monitoring.scraped(
            'runbook_bot_executions_total{runbook="rollback",environment="staging"}',
            what="the staging request in Prometheus",
        )
        resets = prometheus.query("resets(runbook_bot_executions_total[5m]) > 0")
        assert resets == [], resets
        succeeded = monitoring.value(
            'runbook_bot_executions_total{runbook="rollback",environment="development",'
            'state="succeeded"}'
        )
        assert succeeded == 1.0
        # Every notification was timed, the refused one included.
        answered = len(received(world)) + 1
        wait_for(
            lambda: (
                (monitoring.value('runbook_bot_webhook_seconds_count{webhook="alertmanager"}') or 0)
                >= answered
            ),
            what="the webhook's answer times in Prometheus",
        )
    finally:
        prometheus.scrape("bot", [])
        am.route_to(None)

    promtool = need("promtool")["promtool"]
    with urllib.request.urlopen(world.bot.base + "/metrics", timeout=5) as response:  # noqa: S310
        body = response.read()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_burst_of_kept_alive_connections_does_not_lock_out_the_probes(
    world: SlackWorld,
) -> None:
    """Alertmanager sends each group's notification on its own kept-alive connection: 150
    groups at once hold 150 idle connections open. The bot must still accept the kubelet's
    probes, Prometheus's scrape and Slack (waitress's default of 100 connections refused
    every new one until the idle ones timed out, two minutes later)."""
    host, port = world.bot.base.removeprefix("http://").split(":")
    held = []
    try:
        for _ in range(150):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bot\r\nConnection: keep-alive\r\n\r\n")
            held.append(sock)
        for sock in held:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200"), "each kept-alive request answered"
        with urllib.request.urlopen(world.bot.base + "/health", timeout=5) as response:  # noqa: S310
            assert response.status == 200
    finally:
        for sock in held:
            sock.close()
