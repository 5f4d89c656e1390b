"""The Bolt app: built by ``build_slack`` from settings, every listener registered here.

Each command and button acks at once (parsing and identity only: no store round trip beyond
an audit row for refusals) and hands the work to a small worker pool of its own, so the HTTP
answer is back well inside Slack's 3 seconds whatever the plan costs. (Not Bolt's lazy
listeners: they share Bolt's 5-thread listener pool with the acks, and under 20 concurrent
commands the acks queued behind planning — p99 761 ms in bench/slack_ack_bench.py.)

Security: Bolt's request verification is on (signature over the raw body, timestamps older
than 5 minutes refused). Identity is the Slack user id mapped through ``policy.yaml``;
unknown users are refused politely and audited. Channels, approvers, expiry and plan hashes
are the engine's checks, the same as in the terminal.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.slack.commands import (
    command_names,
)
from bot.slack.guard import RedactingWebClient, SlackGate
from bot.slack.handlers import register
from bot.slack.notify import Notifier
from runbooks.engine.clock import Clock, SystemClock
from runbooks.engine.errors import InvalidInput
from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.slack")
DEFAULT_API_URL = "https://slack.com/api/"
#: Threads doing the work after an ack (planning, engine calls). Few: on 2 cores, more
#: threads only make each slower and steal the interpreter from the acks.
#: /drills report: how far back, and how many runs per drill in the text (the chart has all).


@dataclass(frozen=True)
class SlackSettings:
    """``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``SLACK_APP_TOKEN``, ``SLACK_API_URL``."""

    bot_token: str | None
    signing_secret: str | None
    app_token: str | None = None
    api_url: str = DEFAULT_API_URL
    min_interval: float = 1.0

    @staticmethod
    def from_env(environ: dict[str, str] | None = None) -> SlackSettings:
        env = os.environ if environ is None else environ
        api_url = env.get("SLACK_API_URL") or DEFAULT_API_URL
        return SlackSettings(
            bot_token=env.get("SLACK_BOT_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            # WebClient silently drops the path unless the base URL ends with a slash.
            api_url=api_url if api_url.endswith("/") else api_url + "/",
            min_interval=_pacing(env.get("RUNBOOK_BOT_SLACK_INTERVAL") or ""),
        )

    @property
    def mode(self) -> str | None:
        """``socket``, ``http``, or None (Slack off)."""
        if not self.bot_token:
            return None
        if self.app_token:
            return "socket"
        return "http" if self.signing_secret else None

    def why_off(self) -> str:
        if not self.bot_token:
            return "SLACK_BOT_TOKEN is not set"
        return "SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode) is not set"


@dataclass
class SlackFrontEnd:
    app: App
    handler: SlackRequestHandler
    client: WebClient
    notifier: Notifier
    commands: list[str]
    #: Size, signature and shape checks before Bolt (HTTP mode; None in Socket Mode).
    gate: SlackGate | None = None
    #: The pools the listeners run on: Bolt's (the acks), then the work after the acks.
    pools: tuple[ThreadPoolExecutor, ...] = ()

    def drain(self) -> None:
        """Take no more requests and wait for the listeners' work in flight (before the
        store it writes to closes)."""
        for pool in self.pools:
            pool.shutdown(wait=True)

    def socket_mode_handler(self, app_token: str) -> Any:
        """Socket Mode for teams without public ingress (connects when ``connect()`` runs)."""
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        return SocketModeHandler(self.app, app_token)


def _pacing(raw: str) -> float:
    """``RUNBOOK_BOT_SLACK_INTERVAL``: seconds between messages per channel (default 1; 0
    paces nothing); a clear error for anything else."""
    if not raw.strip():
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (0 <= value < float("inf")):  # NaN compares false: refused too
        raise InvalidInput(
            f"RUNBOOK_BOT_SLACK_INTERVAL={raw!r} is not a number of seconds, 0 or more (default 1)"
        )
    return value


def web_client(settings: SlackSettings) -> WebClient:
    """The Web API client; everything it sends passes through the redactor."""
    return RedactingWebClient(
        token=settings.bot_token,
        base_url=settings.api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=5),
        ],
    )


def build_slack(
    runtime: Runtime, settings: SlackSettings, *, kick: Callable[[], None] = lambda: None
) -> SlackFrontEnd:
    """The Bolt app with every listener, its WSGI handler and the outbox notifier.

    ``kick`` asks the bot to start approved executions now rather than at the next sweep.
    """
    client = web_client(settings)
    bolt_log = logging.getLogger("runbook_bot.slack.bolt")
    bolt_log.addFilter(_quiet_token_notice)
    acks = ThreadPoolExecutor(max_workers=16, thread_name_prefix="slack-ack")
    app = App(
        client=client,
        signing_secret=settings.signing_secret,
        request_verification_enabled=True,
        token_verification_enabled=False,  # no auth.test at start: the bot starts offline too
        process_before_response=False,
        # A request no listener takes goes to the error handler too (handlers/errors.py),
        # which logs it and keeps Bolt's 404.
        raise_error_for_unhandled_request=True,
        logger=bolt_log,
        # Bolt runs listeners (our acks) on this pool; the work after the ack has its own pool
        # (_Listeners.work) so that acks never queue behind planning.
        listener_executor=acks,
    )
    notifier = Notifier(runtime, client, min_interval=settings.min_interval)
    runtime.engine.policy.use_usergroups(UsergroupCache(client, clock=runtime.engine.clock))
    work = register(app, runtime, notifier, kick)
    commands = command_names(runtime.engine.registry)
    gate = (
        SlackGate(settings.signing_secret, audit=runtime.engine.audit, clock=runtime.engine.clock)
        if settings.signing_secret
        else None
    )
    return SlackFrontEnd(
        app, SlackRequestHandler(app), client, notifier, commands, gate, (acks, work)
    )


class UsergroupCache:
    """Members of a Slack user group (``slack:S0ONCALL`` in policy.yaml), cached for a minute.

    If Slack cannot be asked, the group has no members: a policy check fails closed.
    """

    def __init__(self, client: WebClient, ttl: float = 60.0, clock: Clock | None = None) -> None:
        self.client = client
        self.ttl = ttl
        self.clock = clock or SystemClock()
        self._cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def __call__(self, usergroup: str) -> set[str]:
        now = self.clock.now()
        with self._lock:
            hit = self._cache.get(usergroup)
            if hit and now - hit[0] < self.ttl:
                return hit[1]
        try:
            users = set(self.client.usergroups_users_list(usergroup=usergroup)["users"])
        except SlackApiError as exc:
            log.warning("cannot read a Slack user group", usergroup=usergroup, error=str(exc))
            return set()
        with self._lock:
            self._cache[usergroup] = (now, users)
        return users


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    # Bolt reads SLACK_BOT_TOKEN itself and says it is unused when a client is given; it is
    # the same token, configured once, so the notice is noise on every start.
    return "`token` will be unused" not in record.getMessage()
