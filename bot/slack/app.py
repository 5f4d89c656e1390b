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

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import structlog
from slack_bolt import Ack, App, Respond
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.slack.buttons import (
    ButtonNotUnderstood,
    ConfirmValue,
    IncidentRunValue,
    execution_value,
)
from bot.slack.commands import (
    Parsed,
    UsageError,
    command_names,
    namespace_usage,
    parse,
    usage,
)
from bot.slack.guard import RedactingWebClient, SlackGate, redacting
from bot.slack.notify import Notifier
from bot.slack.render import (
    REFUSAL_MARK,
    card_blocks,
    card_text,
    deny_modal,
    escape,
    execution_line,
    plan_blocks,
    plan_text,
    readiness_text,
    report_blocks,
    shorten_banner,
)
from runbooks.engine import Outcome, Request
from runbooks.engine.clock import Clock, SystemClock
from runbooks.engine.errors import RunbookError, StoreFull
from runbooks.engine.models import Actor, State, Trigger, TriggerKind
from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.slack")
DEFAULT_API_URL = "https://slack.com/api/"
#: Threads doing the work after an ack (planning, engine calls). Few: on 2 cores, more
#: threads only make each slower and steal the interpreter from the acks.
#: /drills report: how far back, and how many runs per drill in the text (the chart has all).
REPORT_DAYS = 400
REPORT_ROWS = 6
ActionWork = Callable[[dict[str, Any], dict[str, Any], Respond, WebClient], None]


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
            min_interval=float(env.get("RUNBOOK_BOT_SLACK_INTERVAL") or 1.0),
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
        logger=bolt_log,
        # Bolt runs listeners (our acks) on this pool; the work after the ack has its own pool
        # (_Listeners.work) so that acks never queue behind planning.
        listener_executor=acks,
    )
    notifier = Notifier(runtime, client, min_interval=settings.min_interval)
    runtime.engine.policy.use_usergroups(UsergroupCache(client, clock=runtime.engine.clock))
    listeners = _Listeners(runtime, notifier, kick)
    commands = command_names(runtime.engine.registry)
    for name in commands:
        app.command(name)(listeners.on_command)
    for action_id, work in [
        ("rb_confirm", listeners.on_confirm),
        ("rb_dismiss", listeners.on_dismiss),
        ("rb_approve", listeners.on_approve),
        ("rb_deny", listeners.on_deny),
        ("rb_cancel_run", listeners.on_cancel),
        ("rb_reconfirm", listeners.on_reconfirm),
        ("rb_incident_run", listeners.on_incident_run),
    ]:
        app.action(action_id)(listeners.deferred(work))
    # One button per choice of a step's question (action ids are unique within a block).
    app.action(re.compile(r"^rb_answer_\d+$"))(listeners.deferred(listeners.on_answer))
    app.view("rb_deny_modal")(listeners.on_deny_submitted)
    gate = (
        SlackGate(settings.signing_secret, audit=runtime.engine.audit, clock=runtime.engine.clock)
        if settings.signing_secret
        else None
    )
    return SlackFrontEnd(
        app, SlackRequestHandler(app), client, notifier, commands, gate, (acks, listeners.work)
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


def _error_text(exc: RunbookError) -> str:
    text = f"{REFUSAL_MARK} {exc.message}"
    if exc.hint:
        text += f"\n{exc.hint}"
    return text


def _channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel") or {}
    return channel.get("id") or (body.get("container") or {}).get("channel_id")


NOT_UNDERSTOOD = (
    ":warning: I did not understand that button (it may come from an old or altered "
    "message); nothing was done. Run the command again for a fresh one."
)


def _trigger(kind: Any, actor: Actor, incident: Any) -> Trigger | None:
    """An incident card's Run button (carried through its plan's Confirm button) is the
    request's trigger; anything else is the person's (the engine's default)."""
    if kind != str(TriggerKind.INCIDENT_BUTTON):
        return None
    return Trigger(TriggerKind.INCIDENT_BUTTON, actor.id, str(incident) if incident else None)


class _Listeners:
    def __init__(self, runtime: Runtime, notifier: Notifier, kick: Callable[[], None]) -> None:
        self.runtime = runtime
        self.engine = runtime.engine
        self.notifier = notifier
        self.kick = kick
        self.work = ThreadPoolExecutor(
            max_workers=runtime.settings.slack_workers, thread_name_prefix="slack-work"
        )

    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            try:
                fn(*args)
            except StoreFull as full:  # answered where the work could; one line here
                log.error(
                    "state store full", work=getattr(fn, "__name__", str(fn)), error=full.message
                )
            except Exception:
                log.exception("slack work failed", work=getattr(fn, "__name__", str(fn)))

        self.work.submit(guarded)

    def deferred(self, work: ActionWork) -> Callable[..., None]:
        """A button listener: ack at once, do ``work`` on the work pool."""

        def listener(
            ack: Ack,
            body: dict[str, Any],
            action: dict[str, Any],
            respond: Respond,
            client: WebClient,
        ) -> None:
            ack()
            self._later(self._understood(work), body, action, redacting(respond), client)

        listener.__name__ = f"deferred_{work.__name__}"
        return listener

    def _understood(self, work: ActionWork) -> ActionWork:
        """``work``, answering a malformed button privately and logging one line."""

        def run(
            body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient
        ) -> None:
            try:
                work(body, action, respond, client)
            except StoreFull as full:
                log.error("state store full", action_id=action.get("action_id"), error=full.message)
                self._whisper(body, _error_text(full), respond)
            except ButtonNotUnderstood as exc:
                log.warning(
                    "slack button not understood",
                    action_id=action.get("action_id"),
                    user=(body.get("user") or {}).get("id"),
                    why=str(exc),
                )
                self._whisper(body, NOT_UNDERSTOOD, respond)

        run.__name__ = work.__name__
        return run

    # identity -----------------------------------------------------------------------------
    def actor(self, user_id: str) -> Actor | None:
        policy = self.engine.config.policy
        key = policy.person_for_slack(user_id)
        if key is None:
            return None
        return Actor(id=key, name=policy.people[key].name, origin="slack")

    def refuse_stranger(self, user_id: str, user_name: str, what: str) -> str:
        self.engine.audit.record(
            "request.refused",
            actor=Actor(id=f"slack:{user_id}", name=user_name or user_id, origin="slack"),
            outcome="unknown_user",
            target={"slack": what},
            detail={"why": f"Slack user {user_id} is not in policy.yaml"},
        )
        return (
            f"Sorry, I do not know you yet (Slack user `{user_id}`), so I cannot run or approve "
            f"anything for you. Ask an SRE to add `slack_id: {user_id}` to your entry in "
            "policy.yaml."
        )

    def _done(self) -> None:
        self.notifier.wake.set()
        self.kick()

    # slash commands ---------------------------------------------------------------------------
    def on_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        """Parse and check identity inside the ack; bad input is answered here, privately.
        Planning and the rest happen after the ack, on the work pool."""
        ack, respond = redacting(ack), redacting(respond)
        user_id = command.get("user_id", "")
        if self.actor(user_id) is None:
            text = self.refuse_stranger(user_id, command.get("user_name", ""), command["command"])
            ack(text=text, response_type="ephemeral")
            return
        try:
            self._parse(command)
        except UsageError as exc:
            actor = self.actor(user_id)
            assert actor is not None
            # Recorded before the answer: whoever sees the refusal can find it in the log.
            self.engine.audit.record(
                "request.rejected",
                actor=actor,
                outcome="usage_error",
                target={"slack": command["command"]},
                params={"text": command.get("text", "")},
                detail={"error": exc.message, "channel": command.get("channel_id")},
            )
            text = f":warning: {exc.message}\n{exc.hint or ''}".rstrip()
            ack(text=text, response_type="ephemeral")
            return
        ack()
        self._later(self.run_command, command, respond)

    def _parse(self, command: dict[str, Any]) -> Parsed:
        return parse(
            self.engine.registry,
            command["command"],
            command.get("text", ""),
            environments=self.engine.config.environment_names(),
        )

    def run_command(self, command: dict[str, Any], respond: Respond) -> None:
        user_id = command.get("user_id", "")
        actor = self.actor(user_id)
        if actor is None:
            return
        try:
            parsed = self._parse(command)
        except UsageError:
            return  # answered in the ack
        try:
            if parsed.runbook is None and parsed.verb == "help" and parsed.command != "/runbook":
                respond(
                    namespace_usage(
                        self.engine.registry,
                        parsed.command,
                        environments=self.engine.config.environment_names(),
                    )
                )
            elif parsed.command == "/drills":
                self._drills(parsed, actor, respond, user_id, command.get("channel_id"))
            elif parsed.command == "/incident":
                self._incident(parsed, actor, respond)
            elif parsed.runbook is None:
                self._admin(parsed, actor, respond, user_id, command.get("channel_id"))
            elif parsed.verb == "help":
                respond(
                    usage(
                        self.engine.registry.get(parsed.runbook),
                        parsed.command,
                        environments=self.engine.config.environment_names(),
                    )
                )
            else:
                self._request(parsed, actor, respond, user_id, command.get("channel_id"))
        except RunbookError as exc:
            respond(_error_text(exc))

    def _request(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        assert parsed.runbook is not None
        flags = parsed.flags
        result = self.engine.request(
            Request(
                runbook=parsed.runbook,
                params=parsed.params,
                actor=actor,
                channel=channel,
                reason=flags.get("reason"),
                incident=flags.get("incident"),
                break_glass=bool(flags.get("break_glass")),
                dry_run=parsed.dry_run,
                drill=flags.get("drill"),
                trigger=_trigger(flags.get("trigger"), actor, flags.get("incident")),
            )
        )
        plan = result.plan
        banner = short_banner(self.runtime, plan.environment)
        if result.outcome == Outcome.REPORTED:
            assert result.execution is not None
            respond(
                text=card_text(result.execution),
                blocks=report_blocks(result.execution, banner=banner, now=self.engine.clock.now()),
            )
            return
        request = None
        if result.outcome == Outcome.CONFIRM:
            request = ConfirmValue(
                runbook=plan.runbook,
                params=parsed.params,
                plan_hash=plan.hash,
                requester=user_id,
                channel=channel,
                reason=flags.get("reason"),
                incident=flags.get("incident"),
                break_glass=bool(flags.get("break_glass")),
                drill=flags.get("drill"),
                trigger=flags.get("trigger"),
            )
        respond(
            text=plan_text(plan, banner),
            blocks=plan_blocks(
                plan,
                banner=banner,
                approvals=result.approvals,
                reason=flags.get("reason"),
                request=request,
                heading=(
                    f":warning: {result.dry_run_verdict}"
                    if result.would_refuse
                    else result.dry_run_verdict
                    if parsed.dry_run
                    else None
                ),
            ),
        )

    def _drills(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        from runbooks.engine import DrillScheduler
        from runbooks.engine.clock import iso

        scheduler = DrillScheduler(self.engine, self.runtime.config.schedules)
        if parsed.verb == "list":
            now = self.engine.clock.now()
            lines = []
            for drill in self.runtime.config.schedules.drills:
                fire = drill.next_fire(now)
                history = scheduler.history(drill.name)
                last = f"{iso(history[0]['at'])} {history[0]['state']}" if history else "none"
                paused = scheduler.paused(drill.name)
                state = f" · :double_vertical_bar: PAUSED: {paused['reason']}" if paused else ""
                lines.append(
                    f"*{drill.name}* `{drill.runbook}` · next {iso(fire)} "
                    f"({drill.local(fire)}) · last {last}{state}"
                )
            respond("\n".join(lines) or "no drills in schedules.yaml")
            return
        if parsed.verb == "report":
            self._drill_report(scheduler, parsed.args[0] if parsed.args else None, respond, channel)
            return
        name = parsed.args[0]
        if parsed.verb == "pause":
            said = scheduler.pause(name, actor=actor, reason=parsed.flags.get("reason") or "")
            respond(f":double_vertical_bar: {name} paused: {said}")
            return
        if parsed.verb == "resume":
            scheduler.resume(name, actor=actor)
            respond(f":arrow_forward: {name} resumed")
            return
        # Who may run a drill by hand is the engine's decision (policy drills.operators).
        drill = scheduler.authorise("run", name, actor=actor)
        request = Parsed(
            command=f"/{drill.runbook.split('.')[0]}",
            runbook=drill.runbook,
            params=dict(drill.params),
            flags={"reason": f"drill {drill.name} (run by hand)", "drill": drill.name},
        )
        self._request(request, actor, respond, user_id, channel)

    def _incident(self, parsed: Parsed, actor: Actor, respond: Respond) -> None:
        """``/incident list|show|ack|resolve|note``: the engine's incident verbs (authorised,
        redacted, audited there, as for the terminal) over the PagerDuty adapter."""
        from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
        from runbooks.engine import Incidents, pagerduty_services
        from runbooks.engine.errors import InvalidInput

        if parsed.verb == "list" and not pagerduty_services(
            self.runtime.config, parsed.args[0] if parsed.args else None
        ):
            respond("no PagerDuty services mapped (environments.yaml: <env>.pagerduty)")
            return
        settings = PagerDutySettings.from_env()
        if not settings.api_token:
            raise InvalidInput("PagerDuty is not configured on the bot (PAGERDUTY_API_TOKEN)")
        pagerduty = PagerDuty(settings)
        incidents = Incidents(self.engine, pagerduty)
        try:
            if parsed.verb == "list":
                found = incidents.list_open(parsed.args[0] if parsed.args else None)
                lines = [
                    f"*{escape(i.incident['id'])}* "
                    f"#{escape(i.incident.get('incident_number', '?'))} "
                    f"`{escape(i.incident['status'])}` {escape(i.incident.get('title', ''))} · "
                    f"{i.environment or ''}"
                    for i in found
                ]
                respond("\n".join(lines) or "no open incidents")
                return
            incident_id = parsed.args[0]
            if parsed.verb == "show":
                incident, notes = incidents.show(incident_id)
                lines = [
                    f"*{escape(incident['id'])}* `{escape(incident['status'])}` "
                    f"{escape(incident.get('title', ''))}"
                ]
                lines += [
                    f"• {escape(n.get('created_at', ''))}: {escape(n.get('content', ''))}"
                    for n in notes[-5:]
                ]
                respond("\n".join(lines))
                return
            if parsed.verb == "note":
                incidents.note(incident_id, " ".join(parsed.args[1:]), actor=actor)
                respond(f":memo: noted on {incident_id}")
                return
            status = "acknowledged" if parsed.verb == "ack" else "resolved"
            incidents.set_status(incident_id, status, actor=actor)
            respond(f"{incident_id} {status}")
        finally:
            pagerduty.close()

    def _drill_report(
        self, scheduler: Any, name: str | None, respond: Respond, channel: str | None
    ) -> None:
        """The recent runs per drill as text, and each drill's trend chart as an image in the
        channel (the CLI's ``drills.report --format html`` is the full evidence)."""
        from reports import drills as report
        from runbooks.engine import drill_evidence as evidence

        now = self.engine.clock.now()
        found = evidence.collect(scheduler, name=name, since=now - REPORT_DAYS * 86400.0)
        lines = [f"*Drill evidence*, last {REPORT_DAYS} days:"]
        for drill in found:
            lines.append(f"*{drill.name}* `{drill.runbook}` · {drill.summary()}")
            for run in drill.runs[:REPORT_ROWS]:
                row = report.slack_row(run)
                lines.append(f"• {row}")
            if len(drill.runs) > REPORT_ROWS:
                lines.append(f"• … {len(drill.runs) - REPORT_ROWS} older run(s)")
        lines.append("Full report: `invoke drills.report --format html --out drills.html`")
        respond("\n".join(lines))
        if channel is None:
            return
        client = self.notifier.courier.client
        for drill in found:
            if not drill.executed or not report.measured(drill):
                continue
            client.files_upload_v2(
                channel=channel,
                file=report.chart_png(drill),
                filename=f"{drill.name}-trend.png",
                title=f"{drill.name}: RTO and RPO per run against the target",
                alt_txt=f"{drill.name}: {drill.summary()}",
                initial_comment=f"{drill.name}: {drill.summary()}",
            )

    def _admin(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        engine = self.engine
        if parsed.verb == "help":
            commands = ", ".join(command_names(engine.registry))
            respond(
                f"*Commands*: {commands}. Type `/<command> help` for one.\n"
                + namespace_usage(engine.registry, "/runbook")
            )
            return
        if parsed.verb == "list":
            rows = engine.list(limit=15)
            respond("\n".join(execution_line(e) for e in rows) or "no executions yet")
            return
        if parsed.verb == "readiness":
            environment = parsed.args[0] if parsed.args else None
            respond(readiness_text(engine.readiness(actor=actor, environment=environment)))
            return
        execution = engine.get(parsed.args[0])
        banner = short_banner(self.runtime, execution.environment)
        if parsed.verb in {"show", "approve"}:
            # Approving means pressing Approve on the card you are shown: bound to that plan.
            respond(
                text=card_text(execution),
                blocks=card_blocks(execution, banner=banner, now=engine.clock.now()),
            )
            return
        if parsed.verb == "deny":
            engine.deny(execution.id, actor=actor, reason=parsed.flags["reason"])
            respond(f"You denied `{execution.id}`.")
            self._done()
            return
        if parsed.verb == "cancel":
            self._cancel(execution.id, actor, parsed.flags.get("reason") or "")
            respond(f"Cancellation of `{execution.id}` requested.")
        if parsed.verb == "answer":
            choice = parsed.args[1].lower()
            question = engine.answer(
                execution.id, choice, actor=actor, reason=parsed.flags.get("reason") or ""
            )
            respond(f"You answered {choice} to step {question['step']} of `{execution.id}`.")
            self._done()

    def _cancel(self, execution_id: str, actor: Actor, reason: str) -> None:
        # Who may cancel is the engine's decision (policy ``operators``), as in the terminal.
        self.engine.cancel(
            execution_id, actor=actor, reason=reason or f"cancelled in Slack by {actor.name}"
        )
        self._done()

    # buttons ------------------------------------------------------------------------------------
    def _clicker(self, body: dict[str, Any], respond: Respond | None = None) -> Actor | None:
        user = body.get("user") or {}
        actor = self.actor(user.get("id", ""))
        if actor is None:
            text = self.refuse_stranger(user.get("id", ""), user.get("username", ""), "button")
            self._whisper(body, text, respond)
        return actor

    def _whisper(self, body: dict[str, Any], text: str, respond: Respond | None = None) -> None:
        """Answer only the person who clicked."""
        channel = _channel_of(body)
        user = (body.get("user") or {}).get("id")
        if respond is not None and (body.get("container") or {}).get("is_ephemeral"):
            respond(text=text, replace_original=False, response_type="ephemeral")
        elif channel and user:
            self.notifier.courier.client.chat_postEphemeral(channel=channel, user=user, text=text)

    def on_incident_run(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        """A Run button on a PagerDuty incident card: the clicker's request of the suggested
        runbook, linked to the incident; the plan comes privately first, as for a command."""
        actor = self._clicker(body, respond)
        if actor is None:
            return
        suggestion = IncidentRunValue.read(action)
        try:
            spec = self.engine.registry.get(suggestion.runbook)
        except RunbookError:
            self._whisper(body, "That button no longer names a runbook here.", respond)
            return
        fields = spec.params.model_fields
        params: dict[str, Any] = {}
        if "environment" in fields:
            params["environment"] = suggestion.environment
        if "service" in fields and suggestion.service:
            params["service"] = suggestion.service
        incident = suggestion.incident
        parsed = Parsed(
            command=f"/{spec.namespace or spec.name}",
            runbook=spec.name,
            params=params,
            flags={
                "incident": incident,
                "reason": f"PagerDuty incident {incident}",
                # Not a flag anyone can type: set here, carried by the plan's Confirm button.
                "trigger": str(TriggerKind.INCIDENT_BUTTON),
            },
        )

        def privately(**kwargs: Any) -> Any:
            return respond(replace_original=False, response_type="ephemeral", **kwargs)

        try:
            self._request(
                parsed, actor, cast("Respond", privately), body["user"]["id"], _channel_of(body)
            )
        except RunbookError as exc:
            privately(text=_error_text(exc))

    def on_confirm(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        actor = self._clicker(body, respond)
        if actor is None:
            return
        request = ConfirmValue.read(action)
        if body["user"]["id"] != request.requester:
            self._whisper(body, "Only the person who asked for this plan can confirm it.", respond)
            return
        engine = self.engine
        try:
            result = engine.request(
                Request(
                    runbook=request.runbook,
                    params=request.params,
                    actor=actor,
                    channel=request.channel,
                    reason=request.reason,
                    incident=request.incident,
                    break_glass=request.break_glass,
                    confirmed_hash=request.plan_hash,
                    drill=request.drill,
                    trigger=_trigger(request.trigger, actor, request.incident),
                )
            )
        except RunbookError as exc:
            respond(replace_original=False, text=_error_text(exc))
            return
        if result.outcome != Outcome.SUBMITTED or result.execution is None:
            plan = result.plan
            banner = short_banner(self.runtime, plan.environment)
            respond(
                replace_original=True,
                text=plan_text(plan, banner),
                blocks=plan_blocks(
                    plan,
                    banner=banner,
                    approvals=result.approvals,
                    reason=request.reason,
                    request=request.with_hash(plan.hash),
                    heading=(
                        ":warning: The live state changed since you saw the plan; nothing "
                        "was submitted. This is the plan now; confirm it if it is right."
                    ),
                ),
            )
            return
        execution = result.execution
        if execution.state == State.AWAITING_APPROVAL:
            where = engine.config.policy.slack.approvals_channel(execution.environment)
            place = f"<#{where}>" if where else "`/runbook approve " + execution.id + "`"
            text = (
                f":hourglass_flowing_sand: Submitted `{execution.id}`: waiting for "
                f"{execution.required_approvals} approval(s) in {place}. The card there shows "
                "progress; I will tell you the outcome."
            )
        else:
            text = (
                f":arrow_forward: `{execution.id}` is starting; progress follows in this channel."
            )
        respond(replace_original=True, text=text)
        self._done()

    def _decide(
        self,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        decide: Callable[[str, Actor, str], object],
    ) -> str | None:
        """Run an engine decision for the clicker on ``execution id:plan hash``; refusals
        answer the clicker privately. Returns the execution id when it went through."""
        actor = self._clicker(body, respond)
        if actor is None:
            return None
        execution_id, plan_hash = execution_value(action)
        try:
            decide(execution_id, actor, plan_hash)
        except RunbookError as exc:
            self._whisper(body, _error_text(exc), respond)
            return None
        self._done()
        return execution_id

    def on_reconfirm(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        def confirm(execution_id: str, actor: Actor, plan_hash: str) -> object:
            return self.engine.confirm(execution_id, actor=actor, plan_hash=plan_hash)

        if execution_id := self._decide(body, action, respond, confirm):
            respond(replace_original=True, text=f"Confirmed the new plan of `{execution_id}`.")

    def on_dismiss(
        self, _body: dict[str, Any], _action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        respond(replace_original=True, text="Cancelled: nothing was submitted.")

    def on_approve(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        def approve(execution_id: str, actor: Actor, plan_hash: str) -> object:
            return self.engine.approve(execution_id, actor=actor, plan_hash=plan_hash)

        self._decide(body, action, respond, approve)

    def on_deny(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, client: WebClient
    ) -> None:
        actor = self._clicker(body, respond)
        if actor is None:
            return
        execution_id, _ = execution_value(action)
        client.views_open(
            trigger_id=body["trigger_id"], view=deny_modal(execution_id, _channel_of(body))
        )

    def on_deny_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        actor = self.actor((body.get("user") or {}).get("id", ""))
        if actor is None:
            ack(response_action="errors", errors={"reason": "you are not in policy.yaml"})
            return
        meta = json.loads(view.get("private_metadata") or "{}")
        reason = view["state"]["values"]["reason"]["value"].get("value") or ""
        try:
            self.engine.deny(meta["id"], actor=actor, reason=reason)
        except RunbookError as exc:
            ack(response_action="errors", errors={"reason": exc.message[:150]})
            return
        ack()
        self._done()

    def on_answer(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        """An answer button on a card: bound to the question it was shown for (its key)."""
        actor = self._clicker(body, respond)
        if actor is None:
            return
        execution_id, rest = execution_value(action)
        key, _, choice = rest.rpartition(":")
        try:
            question = self.engine.answer(
                execution_id, choice, actor=actor, question_key=key or None
            )
        except RunbookError as exc:
            self._whisper(body, _error_text(exc), respond)
            return
        self._whisper(
            body, f"You answered {choice} to step {question['step']} of `{execution_id}`.", respond
        )
        self._done()

    def on_cancel(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        actor = self._clicker(body, respond)
        if actor is None:
            return
        execution_id, _ = execution_value(action)
        try:
            self._cancel(execution_id, actor, "")
        except RunbookError as exc:
            self._whisper(body, _error_text(exc), respond)


def short_banner(runtime: Runtime, environment: str) -> str:
    return shorten_banner(runtime.banner(environment))
