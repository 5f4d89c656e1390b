"""What every Slack listener shares: who the clicker is, answering privately, the work pool
after the ack (what it raises goes to the one error mapper, ``errors.py``), and the engine
verbs both kinds call."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import Ack, Respond
from slack_sdk import WebClient

from bot.slack.guard import redacting
from bot.slack.handlers.errors import ErrorMapper
from bot.slack.notify import Notifier
from bot.slack.render import (
    shorten_banner,
)
from runbooks.engine.models import Actor, Origin, Trigger, TriggerKind
from runbooks.engine.wiring import Runtime

ActionWork = Callable[[dict[str, Any], dict[str, Any], Respond, WebClient], None]
REPORT_DAYS = 400
REPORT_ROWS = 6


def channel_of(body: dict[str, Any]) -> str | None:
    channel = body.get("channel") or {}
    return channel.get("id") or (body.get("container") or {}).get("channel_id")


def trigger_of(kind: Any, actor: Actor, incident: Any) -> Trigger | None:
    """An incident card's Run button (carried through its plan's Confirm button) is the
    request's trigger; anything else is the person's (the engine's default)."""
    if kind != str(TriggerKind.INCIDENT_BUTTON):
        return None
    return Trigger(TriggerKind.INCIDENT_BUTTON, actor.id, str(incident) if incident else None)


def short_banner(runtime: Runtime, environment: str) -> str:
    return shorten_banner(runtime.banner(environment))


class Listening:
    """The listeners' shared kit, given to the command and button handlers."""

    def __init__(self, runtime: Runtime, notifier: Notifier, kick: Callable[[], None]) -> None:
        self.runtime = runtime
        self.engine = runtime.engine
        self.notifier = notifier
        self.kick = kick
        self.work = ThreadPoolExecutor(
            max_workers=runtime.settings.slack_workers, thread_name_prefix="slack-work"
        )
        self.errors = ErrorMapper(self.whisper)

    def later(
        self, body: dict[str, Any], respond: Respond, work: Callable[..., None], *args: Any
    ) -> None:
        """Run ``work(*args)`` on the work pool, after the ack of the request ``body``. Bolt's
        error handler does not see this thread: what ``work`` raises goes to the same mapper,
        answered through ``respond`` (already redacting) or privately to the clicker."""
        name = getattr(work, "__name__", str(work))

        def guarded() -> None:
            try:
                work(*args)
            except Exception as error:
                self.errors.answer(error, body, respond, work=name)

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
            respond = redacting(respond)
            self.later(body, respond, work, body, action, respond, client)

        listener.__name__ = f"deferred_{work.__name__}"
        return listener

    def actor(self, user_id: str) -> Actor | None:
        policy = self.engine.config.policy
        key = policy.person_for_slack(user_id)
        if key is None:
            return None
        return Actor(id=key, name=policy.people[key].name, origin=Origin.SLACK)

    def refuse_stranger(self, user_id: str, user_name: str, what: str) -> str:
        self.engine.audit.record(
            "request.refused",
            actor=Actor(id=f"slack:{user_id}", name=user_name or user_id, origin=Origin.SLACK),
            outcome="unknown_user",
            target={"slack": what},
            detail={"why": f"Slack user {user_id} is not in policy.yaml"},
        )
        return (
            f"Sorry, I do not know you yet (Slack user `{user_id}`), so I cannot run or approve "
            f"anything for you. Ask an SRE to add `slack_id: {user_id}` to your entry in "
            "policy.yaml."
        )

    def done(self) -> None:
        self.notifier.wake.set()
        self.kick()

    def cancel(self, execution_id: str, actor: Actor, reason: str) -> None:
        # Who may cancel is the engine's decision (policy ``operators``), as in the terminal.
        self.engine.cancel(
            execution_id, actor=actor, reason=reason or f"cancelled in Slack by {actor.name}"
        )
        self.done()

    def clicker(self, body: dict[str, Any], respond: Respond | None = None) -> Actor | None:
        user = body.get("user") or {}
        actor = self.actor(user.get("id", ""))
        if actor is None:
            text = self.refuse_stranger(user.get("id", ""), user.get("username", ""), "button")
            self.whisper(body, text, respond)
        return actor

    def whisper(self, body: dict[str, Any], text: str, respond: Respond | None = None) -> None:
        """Answer only the person who clicked."""
        channel = channel_of(body)
        user = (body.get("user") or {}).get("id")
        if respond is not None and (body.get("container") or {}).get("is_ephemeral"):
            respond(text=text, replace_original=False, response_type="ephemeral")
        elif channel and user:
            self.notifier.courier.client.chat_postEphemeral(channel=channel, user=user, text=text)
