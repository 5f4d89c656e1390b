"""The bot with Slack on (a real process: ``world``; its Slack app in this process:
``app_world``), the local Slack Web API emulator and the Kubernetes sandbox."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.models import Execution
from runbooks.engine.store.sqlite import SqliteStore
from sandbox.slack import (
    SANDBOX_BOT_TOKEN,
    SANDBOX_SIGNING_SECRET,
    SlackEmulator,
    SlackUser,
    buttons_of,
    text_of,
)
from tests.conftest import ROOT, KubeSandbox
from tests.support.bots import Bot, free_port
from tests.support.slack_app import InProcessUser, in_process_bot
from tests.support.waiting import wait_for

PEOPLE = {"alice": "U0ALICE", "bob": "U0BOB", "dave": "U0DAVE", "carol": "U0CAROL"}


@dataclass
class SlackWorld:
    #: The bot process (None when its Slack app runs in this process: ``app_world``).
    bot: Bot | None
    slack: SlackEmulator
    kube: KubeSandbox
    env: dict[str, str]
    users: dict[str, SlackUser]

    def user(self, name: str) -> SlackUser:
        return self.users[name]

    def executions(self) -> list[Execution]:
        store = SqliteStore(self.env["RUNBOOK_BOT_STATE"])
        try:
            return store.list_executions(limit=100)
        finally:
            store.close()

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            m.to_doc()
            for m in list(self.slack.state.messages)
            if channel is None or m.channel == channel
        ]

    def _cards(self, channel: str) -> list[dict[str, Any]]:
        return [m for m in self.messages(channel) if not m["thread_ts"] and not m["ephemeral_to"]]

    def card(self, channel: str = "C0APPROVALS") -> dict[str, Any]:
        cards = self._cards(channel)
        assert cards, f"no card in {channel}: {self.messages()}"
        return cards[-1]

    def wait_card(
        self, predicate: Callable[[str], bool], channel: str = "C0APPROVALS", what: str = ""
    ) -> dict[str, Any]:
        def ready() -> bool:
            cards = self._cards(channel)
            return bool(cards) and predicate(text_of(cards[-1]))

        wait_for(ready, what=what or f"a card in {channel}")
        return self.card(channel)

    def wait_for_message(
        self, predicate: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [m for m in self.messages() if predicate(m)]
            return bool(found)

        wait_for(seen, what=what)
        return found[-1]

    def audit_actions(self) -> list[dict[str, Any]]:
        store = SqliteStore(self.env["RUNBOOK_BOT_STATE"])
        try:
            return [json.loads(row.body) for row in store.iter_audit()]
        finally:
            store.close()


def slack_messages(slack: SlackEmulator) -> list[dict[str, Any]]:
    return [m.to_doc() for m in list(slack.state.messages)]


def approval_cards(slack: SlackEmulator, channel: str = "C0APPROVALS") -> list[dict[str, Any]]:
    """The top-level cards of a channel (not thread replies, not private messages)."""
    return [
        m
        for m in slack_messages(slack)
        if m["channel"] == channel and not m["thread_ts"] and not m["ephemeral_to"]
    ]


def replica_env(
    cli_env: dict[str, str], *, state: str, kube: KubeSandbox, health_url: str, slack: SlackEmulator
) -> dict[str, str]:
    """A bot replica's environment: a shared store, the sandbox's clusters, Prometheus and
    Slack's Web API (HTTP mode; a test adds ``SLACK_APP_TOKEN`` for Socket Mode)."""
    env = {
        **cli_env,
        "RUNBOOK_BOT_STATE": state,
        "RUNBOOK_BOT_LOG": "-",
        "KUBECONFIG": str(kube.kubeconfig),
        "SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SANDBOX_SIGNING_SECRET,
        "SLACK_API_URL": slack.api_url,
        "RUNBOOK_BOT_SLACK_INTERVAL": "0.05",
        "RUNBOOK_BOT_SWEEP_INTERVAL": "0.3",
        "RUNBOOK_BOT_SANDBOX_HEALTH": health_url,
        "RUNBOOK_BOT_SANDBOX_PROMETHEUS": health_url,  # the emulator answers the queries
    }
    env.pop("SLACK_APP_TOKEN", None)
    return env


@pytest.fixture(params=["sqlite", "mongodb"])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store for several processes: a SQLite file, or the sandbox's wire-protocol MongoDB."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    from sandbox.mongo import MongoServer

    server = MongoServer(name="state").start()
    try:
        yield server.uri.replace("/?", "/replicas?")
    finally:
        server.stop()


def labels(message: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in buttons_of(message)]


def ephemeral_to(world: SlackWorld, user: str) -> list[dict[str, Any]]:
    return [m for m in world.messages() if m["ephemeral_to"] == PEOPLE.get(user, user)]


@pytest.fixture
def slack_env_extra() -> dict[str, str]:
    """Tests override this to change the bot's environment."""
    return {}


def bot_env(
    cli_env: dict[str, str],
    tmp_path: Path,
    kube: KubeSandbox,
    *,
    health: Any,
    slack: SlackEmulator,
    slack_env_extra: dict[str, str],
    policy_edit: Callable[[str], str],
    request: pytest.FixtureRequest,
) -> dict[str, str]:
    """The bot's environment for a test: the sandbox's config copied and edited by the test's
    ``policy_edit`` and ``config_edit`` markers, the emulators, and ``slack_env_extra``."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("example"))
    policy = config / "policy.yaml"
    policy.write_text(policy_edit(policy.read_text()))
    for marker in request.node.iter_markers("config_edit"):
        file, old, new = marker.args
        path = config / file
        assert old in path.read_text(), f"{file} has no {old!r} to replace"
        path.write_text(path.read_text().replace(old, new))
    env = {
        **replica_env(
            cli_env,
            state=cli_env["RUNBOOK_BOT_STATE"],
            kube=kube,
            health_url=health.url,  # production's rollback gate asks the sandbox's Prometheus
            slack=slack,
        ),
        "RUNBOOK_BOT_CONFIG": str(config),
        **slack_env_extra,
    }
    env.pop("SLACK_APP_TOKEN", None)
    return env


@pytest.fixture
def world(
    cli_env: dict[str, str],
    tmp_path: Path,
    kube: KubeSandbox,
    *,
    health: Any,
    slack_env_extra: dict[str, str],
    policy_edit: Callable[[str], str],
    request: pytest.FixtureRequest,
) -> Iterator[SlackWorld]:
    """A bot process (HTTP mode) and the people of the workspace talking to it over HTTP."""
    slack = SlackEmulator().start()
    env = bot_env(
        cli_env,
        tmp_path,
        kube,
        health=health,
        slack=slack,
        slack_env_extra=slack_env_extra,
        policy_edit=policy_edit,
        request=request,
    )
    bot = Bot(env, free_port())
    bot.wait_ready()
    users = {
        name: SlackUser(uid, bot_url=bot.base, slack_url=slack.url, user_name=name)
        for name, uid in {**PEOPLE, "stranger": "U0NOBODY"}.items()
    }
    try:
        yield SlackWorld(bot, slack, kube, env, users)
    finally:
        output = bot.stop()
        slack.stop()
        if "Traceback" in output:
            print(output)


@pytest.fixture
def app_world(
    cli_env: dict[str, str],
    tmp_path: Path,
    kube: KubeSandbox,
    *,
    health: Any,
    slack_env_extra: dict[str, str],
    policy_edit: Callable[[str], str],
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SlackWorld]:
    """The same world with the bot's Slack app in this process (``tests/support/slack_app.py``):
    requests dispatched into Bolt, signed with slack_sdk's ``SignatureVerifier``; the same
    configuration, store, emulators and notifier. For rendering, usage, refusals, plans, dry
    runs and dialogs; journeys about the process keep ``world``."""
    slack = SlackEmulator().start()
    env = bot_env(
        cli_env,
        tmp_path,
        kube,
        health=health,
        slack=slack,
        slack_env_extra=slack_env_extra,
        policy_edit=policy_edit,
        request=request,
    )
    for key in os.environ:  # what the bot process would have as its environment
        if key.startswith("RUNBOOK") and key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        with in_process_bot(env) as bot:
            users: dict[str, SlackUser] = {
                name: InProcessUser(bot.app, uid, slack_url=slack.url, user_name=name)
                for name, uid in {**PEOPLE, "stranger": "U0NOBODY"}.items()
            }
            yield SlackWorld(None, slack, kube, env, users)
    finally:
        slack.stop()


@pytest.fixture
def policy_edit(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``@pytest.mark.policy_edit(old, new)`` edits the test's copy of policy.yaml."""
    marker = request.node.get_closest_marker("policy_edit")
    if marker is None:
        return lambda text: text
    old, new = marker.args

    def edit(text: str) -> str:
        assert old in text, f"policy.yaml has no {old!r} to replace"
        return text.replace(old, new)

    return edit
