"""The Slack front end's parts in-process: command parsing (same rules as the CLI), the app
manifest, Socket Mode wiring, settings, and the notifier's pacing against the emulator."""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest
import yaml

from bot.slack.app import SlackSettings, build_slack
from bot.slack.commands import UsageError, command_names, parse
from bot.slack.manifest import manifest_yaml
from bot.slack.notify import Courier
from runbook_cli.collection import runbook_task
from runbooks.catalog import load_catalog
from runbooks.engine.clock import FakeClock
from runbooks.engine.settings import load_settings
from runbooks.engine.wiring import open_runtime
from sandbox.slack import SANDBOX_BOT_TOKEN, SlackEmulator
from tests.conftest import ROOT

REGISTRY = load_catalog()


@pytest.mark.parametrize(
    ("command", "text", "runbook", "params", "flags"),
    [
        ("/rollback", "production", "rollback", {"environment": "production"}, {}),
        (
            "/rollback",
            "production --to-revision 4 --region us-west-2",
            "rollback",
            {"environment": "production", "to_revision": "4", "region": "us-west-2"},
            {},
        ),
        (
            "/rollback",
            "--environment=staging --dry-run",
            "rollback",
            {"environment": "staging"},
            {"dry_run": True},
        ),
        ("/rollback", "history production", "rollback.history", {"environment": "production"}, {}),
        (
            "/scale",
            "pods production --service api --replicas 6",
            "scale.pods",
            {"environment": "production", "service": "api", "replicas": "6"},
            {},
        ),
        (
            "/scale",
            "pods production api 6",
            "scale.pods",
            {"environment": "production", "service": "api", "replicas": "6"},
            {},
        ),
        (
            "/rollback",
            'production --break-glass --reason "site down, 1.4.2 crashes" --incident PD123',
            "rollback",
            {"environment": "production"},
            {"break_glass": True, "reason": "site down, 1.4.2 crashes", "incident": "PD123"},
        ),
    ],
)
def test_commands_parse_like_the_cli(
    command: str, text: str, runbook: str, params: dict[str, Any], flags: dict[str, Any]
) -> None:
    parsed = parse(REGISTRY, command, text)
    assert (parsed.runbook, parsed.params, parsed.flags) == (runbook, params, flags)


@pytest.mark.parametrize(
    ("command", "text", "message"),
    [
        ("/scale", "pods production --service api", "missing REPLICAS"),
        ("/scale", "pods production api 6 7", "unexpected `7`"),
        ("/rollback", "production --to-revision", "--to-revision needs a value"),
        ("/rollback", "production --dry-run=yes", "--dry-run takes no value"),
        ("/rollback", "production --region a --region b", "--region given twice"),
        (
            "/rollback",
            "production --break-glass",
            "--break-glass needs --reason TEXT and --incident",
        ),
        ("/nope", "x", "unknown command /nope"),
        ("/runbook", "approve", "/runbook approve needs one execution id"),
        ("/runbook", "deny rb-123456", "a denial needs --reason TEXT"),
    ],
)
def test_bad_commands_say_what_is_wrong(command: str, text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(REGISTRY, command, text)
    assert message in caught.value.message
    if command != "/nope":
        assert caught.value.hint  # the right form


def test_every_runbook_parameter_is_reachable_from_slack_and_the_cli() -> None:
    """The CLI task and the Slack command take the same parameters, required ones positional."""
    for spec in REGISTRY:
        task = runbook_task(spec)
        cli_params = [p for p in inspect.signature(task.body).parameters if p != "c"]
        fields = spec.params.model_fields
        assert set(fields) <= set(cli_params)
        required = [n for n, f in fields.items() if f.is_required()]
        assert cli_params[: len(required)] == required
        command = "/" + (spec.namespace or spec.name)
        sub = [spec.short_name] if spec.namespace else []
        values = [f"v{i}" for i in range(len(required))]
        parsed = parse(REGISTRY, command, " ".join(sub + values))
        assert parsed.runbook == spec.name
        assert parsed.params == dict(zip(required, values, strict=True))


def test_manifest_in_the_repository_matches_the_registry() -> None:
    text = (ROOT / "slack-manifest.yaml").read_text()
    assert text == manifest_yaml(REGISTRY), (
        "regenerate: python -m bot manifest > slack-manifest.yaml"
    )
    doc = yaml.safe_load(text)
    declared = [c["command"] for c in doc["features"]["slash_commands"]]
    assert declared == command_names(REGISTRY)
    assert doc["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    assert {"commands", "chat:write"} <= set(doc["oauth_config"]["scopes"]["bot"])


def test_settings_decide_the_mode_and_fix_the_api_url() -> None:
    assert SlackSettings.from_env({}).mode is None
    assert "SLACK_BOT_TOKEN" in SlackSettings.from_env({}).why_off()
    http = SlackSettings.from_env(
        {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_API_URL": "http://x/api"}
    )
    assert http.mode == "http" and http.api_url == "http://x/api/"  # WebClient needs the slash
    socket = SlackSettings.from_env({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"})
    assert socket.mode == "socket"


def test_socket_mode_handler_is_wired_to_the_same_app(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Socket Mode needs Slack's websocket endpoint, which these machines cannot reach: this
    checks the wiring (same Bolt app, the app-level token) without connecting."""
    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    runtime = open_runtime(load_settings(), registry=load_catalog())
    try:
        front = build_slack(
            runtime, SlackSettings(bot_token="xoxb-1", signing_secret=None, app_token="xapp-1-A")
        )
        handler = front.socket_mode_handler("xapp-1-A")
        assert handler.app is front.app
        assert handler.client.app_token == "xapp-1-A"
        assert not handler.client.is_connected()
    finally:
        runtime.close()


class _SleepLog(FakeClock):
    """The courier's clock: each wait it asks for, taken at once."""

    def __init__(self) -> None:
        super().__init__()
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        super().sleep(seconds)


def test_courier_paces_each_channel_and_honours_retry_after() -> None:
    from bot.slack.app import web_client

    slack = SlackEmulator().start()
    try:
        client = web_client(
            SlackSettings(bot_token=SANDBOX_BOT_TOKEN, signing_secret="s", api_url=slack.api_url)
        )
        clock = _SleepLog()
        courier = Courier(client, min_interval=0.3, clock=clock)
        ts = [courier.post("C1", f"m{i}") for i in range(3)]
        assert clock.slept == pytest.approx([0.3, 0.3])  # one channel: paced
        courier.post("C2", "other channel")
        assert clock.slept == pytest.approx([0.3, 0.3])  # another channel: not held back
        posts = slack.calls("chat.postMessage")
        assert [(p["args"]["channel"], p["args"]["text"]) for p in posts] == [
            ("C1", "m0"), ("C1", "m1"), ("C1", "m2"), ("C2", "other channel"),
        ]  # fmt: skip
        slack.state.rate_limits["chat.update"] = [1.0]
        started = time.monotonic()
        courier.update("C1", ts[0], "edited", [])
        assert time.monotonic() - started >= 1.0
        assert [m.text for m in slack.state.messages if m.ts == ts[0]] == ["edited"]
        assert [c["method"] for c in slack.calls()][-2:] == ["chat.update", "chat.update"]
    finally:
        slack.stop()


def test_a_read_only_check_step_is_not_labelled_cannot_be_undone() -> None:
    """The rollback gate's watch changes nothing: the card says so, as the CLI does, instead
    of "(cannot be undone)", which would warn an approver off for no reason."""
    from bot.slack.render import _steps_text
    from runbooks.engine.plan import Plan

    steps = [
        {"description": "roll back api", "reversible": True},
        {"description": "promote the database", "reversible": False, "irreversible_reason": "x"},
        {
            "description": "watch api for 2m",
            "reversible": False,
            "irreversible_reason": "a check: it changes nothing",
        },
    ]
    plan = Plan(
        runbook="rollback",
        environment="production",
        tier="production",
        region=None,
        lock_key="production:api",
        params={"environment": "production"},
        steps=steps,
        summary="",
        notes=[],
    )
    lines = _steps_text(plan).splitlines()
    assert "(cannot be undone)" not in lines[0]
    assert "promote the database _(cannot be undone)_" in lines[1]
    assert "watch api for 2m _(a check: it changes nothing)_" in lines[2]
