"""The bot's Slack front end in this process: what needs no process, at milliseconds a request.

The app is the bot's own (``bot.slack.app.build_slack`` over ``open_runtime``, as ``python -m
bot serve`` builds it), with its outbox notifier and its housekeeper running as threads; its
Web API calls go to the Slack emulator. A request is signed with ``slack_sdk``'s
``SignatureVerifier`` (not our own signing code) and handed to ``app.dispatch(BoltRequest(…))``,
as bolt-python's scenario tests do; Bolt checks the signature as it does over HTTP. What this
leaves out is the process and its HTTP server: the gate in front of Bolt (sizes, forged and
replayed requests), Socket Mode, the drill scheduler and the other background loops. Tests
about those keep the ``world`` fixture (a bot process).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from slack_bolt import App, BoltRequest
from slack_sdk.signature import SignatureVerifier

from sandbox.slack import SANDBOX_SIGNING_SECRET, Delivery, SlackUser


class InProcessUser(SlackUser):
    """A person of the sandbox workspace whose requests go to an app in this process."""

    def __init__(
        self,
        app: App,
        user_id: str,
        *,
        slack_url: str,
        user_name: str | None = None,
        signing_secret: str = SANDBOX_SIGNING_SECRET,
    ) -> None:
        super().__init__(
            user_id,
            bot_url="in-process",
            slack_url=slack_url,
            signing_secret=signing_secret,
            user_name=user_name,
        )
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)

    def post(
        self,
        body: bytes,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        text = body.decode()
        signed = signature or self.verifier.generate_signature(timestamp=ts, body=text)
        assert signed is not None  # None only without a signing secret
        headers: dict[str, str | Sequence[str]] = {
            "content-type": content_type,
            "x-slack-request-timestamp": ts,
            "x-slack-signature": signed,
        }
        response = self.app.dispatch(BoltRequest(body=text, headers=headers))
        return Delivery(response.status, response.body)


@dataclass
class InProcessBot:
    """The parts ``python -m bot serve`` runs for Slack, here: ``front`` (the Bolt app and
    its notifier), the housekeeper, the runtime."""

    runtime: Any
    front: Any
    housekeeper: Any

    @property
    def app(self) -> App:
        app: App = self.front.app
        return app


@contextmanager
def in_process_bot(env: dict[str, str]) -> Iterator[InProcessBot]:
    """The bot's runtime and Slack front end over ``env`` (which must already be the process
    environment: the adapters read it, as in the bot), stopped in the bot's order on exit."""
    from bot.server import Housekeeper
    from bot.slack.app import SlackSettings, build_slack
    from runbooks.adapters import build_adapters, resolve_secret
    from runbooks.catalog import load_catalog
    from runbooks.engine.settings import load_settings
    from runbooks.engine.wiring import open_runtime
    from runbooks.engine.workers import Workers

    runtime = open_runtime(
        load_settings(env), registry=load_catalog(), adapters=build_adapters, secrets=resolve_secret
    )
    housekeeper = Housekeeper(runtime)  # RUNBOOK_BOT_SWEEP_INTERVAL, read with the settings
    front = build_slack(runtime, SlackSettings.from_env(env), kick=housekeeper.kick)
    front.notifier.start()
    housekeeper.start()
    try:
        yield InProcessBot(runtime, front, housekeeper)
    finally:
        front.drain()
        Workers([housekeeper, front.notifier]).stop_all(timeout=30)
        runtime.close()
