"""Slack across replicas: three bot processes on one store behind one Slack app.

A request planned on one replica, confirmed on another, approved from a terminal, runs once;
the approval card is posted once and updated in place; the audit chain stays one chain. Runs
on one SQLite file and on the sandbox's wire-protocol MongoDB. The oracles are the Slack
emulator's record of every Web API call, the Kubernetes emulators' deployments, and the
store read back with a fresh connection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.models import State
from runbooks.engine.store import open_store
from sandbox.slack import (
    SlackEmulator,
    SlackUser,
    buttons_of,
    text_of,
)
from tests.bot.conftest import PEOPLE, approval_cards, replica_env, slack_messages
from tests.conftest import KubeSandbox, run_cli
from tests.support.bots import Bot, start_replicas, stop_replicas
from tests.support.kube_runs import DEPLOY, image
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot replicas as processes

REPLICAS = 3


def test_plan_on_one_replica_confirm_on_another_approve_at_a_terminal_runs_once(
    cli_env: dict[str, str], kube: KubeSandbox, health: Any, shared_state: str, tmp_path: Path
) -> None:
    slack = SlackEmulator().start()
    env = replica_env(cli_env, state=shared_state, kube=kube, health_url=health.url, slack=slack)
    cli = {**env, "RUNBOOK_BOT_LOG": str(tmp_path / "cli-log.jsonl")}
    replicas = start_replicas(env, REPLICAS)
    bots = list(replicas.values())
    try:

        def alice_at(bot: Bot) -> SlackUser:
            return SlackUser(
                PEOPLE["alice"], bot_url=bot.base, slack_url=slack.url, user_name="alice"
            )

        def messages() -> list[dict[str, Any]]:
            return slack_messages(slack)

        def cards() -> list[dict[str, Any]]:
            return approval_cards(slack)

        def plans() -> list[dict[str, Any]]:
            return [
                m
                for m in messages()
                if m["ephemeral_to"] == PEOPLE["alice"]
                and any(b["text"]["text"] == "Confirm" for b in buttons_of(m))
            ]

        # Replica 1 plans; replica 2 takes the Confirm click.
        answer = alice_at(bots[0]).command("/rollback production")
        assert answer.status == 200 and answer.body == ""
        wait_for(lambda: len(plans()) == 1, what="the plan shown to alice")
        assert alice_at(bots[1]).click("Confirm").status == 200
        wait_for(
            lambda: bool(cards()) and "awaiting_approval" in text_of(cards()[-1]),
            what="the approval card",
        )

        store = open_store(shared_state)
        try:
            (pending,) = store.list_executions(limit=10)
            # Bob approves from his terminal; whichever replica leads starts the run.
            approved = run_cli(
                ["approvals.approve", pending.id, "--yes"], {**cli, "RUNBOOK_USER": "bob"}
            )
            assert approved.returncode == 0, approved.stdout + approved.stderr

            def state() -> str:
                found = store.get_execution(pending.id)
                assert found is not None
                return found.state

            wait_for(lambda: state() == State.SUCCEEDED, timeout=120, what="the rollback")
            wait_for(lambda: "— succeeded" in text_of(cards()[-1]), what="the card's final state")
            assert len(store.list_executions(limit=10)) == 1
        finally:
            store.close()

        # Each effect once: one card, updated in place; the rollout reached both regions once.
        (card,) = cards()
        assert card["updates"] >= 2
        assert "1/1: Bob" in text_of(card)
        thread = [m["text"] for m in messages() if m["thread_ts"] == card["ts"]]
        assert len(thread) == len(set(thread)), thread  # no note posted twice
        for region in ("us-east-1", "us-west-2"):
            assert image(kube, region) == "app-api:1.4.1"
            deploy = kube.cluster(region).get(DEPLOY, "production", "api-deployment")
            # seeded at revision 3; one rollback makes revision 4 (a second would make 5)
            assert deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
        verify = run_cli(["audit.verify", "--json"], cli)
        assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout
    finally:
        stop_replicas(replicas)
        slack.stop()
