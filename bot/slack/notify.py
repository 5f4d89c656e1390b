"""Render the engine's event outbox into Slack: approval cards, progress, threads, results.

The notifier reads the store's outbox (``events_after``), so executions requested from a
terminal get the same card as those requested in Slack, and nothing is lost while the bot was
down or when another replica takes over: the cursor lives in the store and only moves past an
event once everything it asked for has reached Slack (at-least-once; posting is idempotent:
a card is posted once per execution, and thread lines and direct messages carry a delivery
mark per event). One bot replica notifies at a time (the ``slack-notifier`` leader lease).

Rate limits: Slack allows about one message per second per channel. Card updates coalesce:
an event only marks the card dirty, and the card is rendered from the store when its channel's
turn comes, so a burst of step events costs one ``chat.update`` and the last render always
shows the final state. A 429 is retried after ``Retry-After`` by slack_sdk's retry handler;
if it still fails the card stays dirty and is tried again on the next pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import structlog
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.slack.render import (
    card_blocks,
    card_text,
    escape,
    incident_card,
    outcome_text,
    plan_blocks,
    shorten_banner,
)
from runbooks.engine import OutboxFollower
from runbooks.engine.clock import Clock, SystemClock
from runbooks.engine.models import Event, Execution, State
from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.slack")

CURSOR_KEY = "slack.cursor"
CARD_KEY = "slack.card.{}"
LEASE_NAME = "slack-notifier"
#: Step events worth a line in the card's thread.
THREAD_EVENTS = {
    "step.succeeded",
    "step.failed",
    "step.cancelled",
    "step.undone",
    "step.undo_failed",
}
#: A step's question, its answer or its expiry, as a line in the card's thread.
QUESTION_LINES = {
    "execution.question": ":question: step {step} asks: {question}\n"
    "Answer with the card's buttons or `/runbook answer {execution_id} CHOICE`.",
    "execution.answered": ":speech_balloon: {by} answered {choice} to step {step}",
    "execution.question_expired": ":hourglass: nobody answered step {step} in time",
}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


#: States the requester hears about directly.
TELL_REQUESTER = {
    State.SUCCEEDED,
    State.FAILED,
    State.COMPENSATED,
    State.COMPENSATION_FAILED,
    State.CANCELLED,
    State.DENIED,
    State.EXPIRED,
}


class Courier:
    """Calls the Web API at most once per ``min_interval`` per channel."""

    def __init__(
        self, client: WebClient, *, min_interval: float = 1.0, clock: Clock | None = None
    ) -> None:
        self.client = client
        self.min_interval = min_interval
        self.clock = clock or SystemClock()
        self._last: dict[str, float] = {}

    def _pace(self, channel: str) -> None:
        wait = self._last.get(channel, float("-inf")) + self.min_interval - self.clock.now()
        if wait > 0:
            self.clock.sleep(wait)
        self._last[channel] = self.clock.now()

    def post(self, channel: str, text: str, **kwargs: Any) -> str:
        self._pace(channel)
        response = self.client.chat_postMessage(channel=channel, text=text, **kwargs)
        return str(response["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self._pace(channel)
        self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)


SENT_KEY = "slack.sent.{}"


@dataclass
class _Pending:
    """Work noted from events and not yet delivered, each item with the event that asked."""

    cards: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (channel, event)
    dirty: dict[str, int] = field(default_factory=dict)  # execution id -> first event
    thread: list[tuple[str, str, int]] = field(default_factory=list)  # (id, text, event)
    direct: list[tuple[str, str, int]] = field(default_factory=list)  # (id, kind, event)
    #: drill announcements: (channel, payload, event)
    announcements: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)

    def oldest(self) -> int | None:
        ids = [
            *(e for _, e in self.cards.values()),
            *self.dirty.values(),
            *(e for *_, e in self.thread),
            *(e for *_, e in self.direct),
            *(e for *_, e in self.announcements),
        ]
        return min(ids) if ids else None


class Notifier:
    """A thread following the outbox and keeping Slack in step with the store."""

    def __init__(
        self,
        runtime: Runtime,
        client: WebClient,
        *,
        min_interval: float = 1.0,
        poll: float = 0.25,
    ) -> None:
        self.runtime = runtime
        self.engine = runtime.engine
        self.courier = Courier(client, min_interval=min_interval, clock=self.engine.clock)
        self.poll = poll
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.pending = _Pending()
        self.follower = OutboxFollower(
            self.engine.store,
            self.engine.clock,
            self,
            name=LEASE_NAME,
            owner=self.engine.owner,
            cursor_key=CURSOR_KEY,
            lease=max(5.0, min(15.0, self.engine.lease_ttl)),
        )
        self.thread = threading.Thread(target=self._loop, name="slack-notifier", daemon=True)

    def start(self) -> None:
        self.thread.start()

    # bookkeeping ------------------------------------------------------------------------------
    def card_ref(self, execution_id: str) -> dict[str, str] | None:
        ref = self.engine.store.kv_get(CARD_KEY.format(execution_id))
        return dict(ref) if ref else None

    def _slack_id(self, person: str) -> str | None:
        entry = self.engine.config.policy.people.get(person)
        return entry.slack_id if entry else None

    def _has_lease(self) -> bool:
        return self.follower.lead()

    # The engine's outbox follower drives this consumer (note, flush, reset).
    def _loop(self) -> None:
        self.follower.start_at_present()
        self.follower.run(self.stop, self.wake, poll=self.poll)

    def pass_once(self) -> int:
        """Read new events, then bring Slack up to date. Returns the events read."""
        return self.follower.pass_once()

    def reset(self) -> None:
        self.pending = _Pending()

    def note(self, event: Event) -> None:
        self._note(event)

    def flush(self) -> int | None:
        self._flush()
        return self.pending.oldest()

    def _note(self, event: Event) -> None:
        execution_id = event.execution_id
        if event.type in ("drill.announce", "notice", "incident.suggest"):
            channel = event.payload.get("channel")
            if channel:
                self.pending.announcements.append((str(channel), event.payload, event.id))
            return
        if execution_id is None:
            return
        payload = event.payload
        pending = self.pending
        if event.type == "execution.created":
            if self.card_ref(execution_id) is None:  # a replayed event: posted already
                channel = self._card_channel(execution_id, payload)
                if channel:
                    pending.cards[execution_id] = (channel, event.id)
            return
        if execution_id in pending.cards or self.card_ref(execution_id):
            pending.dirty.setdefault(execution_id, event.id)
            if event.type in THREAD_EVENTS:
                pending.thread.append((execution_id, _step_line(payload), event.id))
            elif event.type in QUESTION_LINES:
                line = QUESTION_LINES[event.type].format_map(_Blank(payload))
                pending.thread.append((execution_id, line, event.id))
            elif event.type in ("gitops.resumed", "gitops.expired"):  # docs/gitops.md
                pending.thread.append((execution_id, str(payload.get("text", "")), event.id))
        state = payload.get("state")
        if event.type == "plan.changed":
            pending.direct.append((execution_id, "plan_changed", event.id))
        elif event.type.startswith("execution.") and state in TELL_REQUESTER:
            pending.direct.append((execution_id, "outcome", event.id))

    def _card_channel(self, execution_id: str, payload: dict[str, Any]) -> str | None:
        execution = self.engine.store.get_execution(execution_id)
        if execution is None or execution.plan.read_only:
            return None
        if execution.required_approvals and not execution.break_glass:
            channel = self.engine.config.policy.slack.approvals_channel(execution.environment)
            if channel is None:
                log.warning(
                    "no approvals channel for environment; no card posted",
                    execution_id=execution_id,
                    environment=execution.environment,
                )
            return channel
        # No approvals needed: progress goes where the request was made (Slack requests only).
        origin = payload.get("channel")
        return str(origin) if origin else None

    def _render(self, execution: Execution) -> tuple[str, list[dict[str, Any]]]:
        banner = shorten_banner(self.runtime.banner(execution.environment))
        return card_text(execution), card_blocks(
            execution, banner=banner, now=self.engine.clock.now()
        )

    def _flush(self) -> None:
        pending = self.pending
        for execution_id, (channel, _event) in list(pending.cards.items()):
            execution = self.engine.get(execution_id)
            text, blocks = self._render(execution)
            try:
                ts = self.courier.post(channel, text, blocks=blocks)
            except SlackApiError as exc:
                log.warning(
                    "could not post card; will retry", execution_id=execution_id, error=str(exc)
                )
                continue
            self.engine.store.kv_set(CARD_KEY.format(execution_id), {"channel": channel, "ts": ts})
            del pending.cards[execution_id]
            pending.dirty.pop(execution_id, None)
        for execution_id in sorted(pending.dirty):
            ref = self.card_ref(execution_id)
            if ref is None:
                continue  # its card is not posted yet; the post renders the latest state
            execution = self.engine.get(execution_id)
            text, blocks = self._render(execution)
            try:
                self.courier.update(ref["channel"], ref["ts"], text, blocks)
            except SlackApiError as exc:
                log.warning(
                    "could not update card; will retry", execution_id=execution_id, error=str(exc)
                )
                continue
            pending.dirty.pop(execution_id, None)
        while pending.thread:
            execution_id, text, event_id = pending.thread[0]
            ref = self.card_ref(execution_id)
            if ref is not None and not self._sent(event_id):
                try:
                    self.courier.post(ref["channel"], text, thread_ts=ref["ts"])
                except SlackApiError as exc:
                    log.warning("could not post to thread; will retry", error=str(exc))
                    return
                self._mark_sent(event_id)
            pending.thread.pop(0)
        while pending.direct:
            execution_id, kind, event_id = pending.direct[0]
            if not self._sent(event_id):
                try:
                    self._tell_requester(execution_id, kind)
                except SlackApiError as exc:
                    log.warning("could not message the requester; will retry", error=str(exc))
                    return
                self._mark_sent(event_id)
            pending.direct.pop(0)

        while pending.announcements:
            channel, payload, event_id = pending.announcements[0]
            if not self._sent(event_id):
                card: list[dict[str, Any]] | None = None
                if "incident" in payload and "runbooks" in payload:
                    text, card = incident_card(payload)
                elif payload.get("drill"):
                    text = f":calendar: *drill* {escape(payload.get('text', ''))}"
                else:
                    # Notices quote alerts (names, summaries): third-party text.
                    text = escape(payload.get("text", ""))
                try:
                    if card is None:
                        self.courier.post(channel, text)
                    else:
                        self.courier.post(channel, text, blocks=card)
                except SlackApiError as exc:
                    log.warning("could not post an announcement; will retry", error=str(exc))
                    return
                self._mark_sent(event_id)
            pending.announcements.pop(0)

    def _sent(self, event_id: int) -> bool:
        return bool(self.engine.store.kv_get(SENT_KEY.format(event_id)))

    def _mark_sent(self, event_id: int) -> None:
        self.engine.store.kv_set(SENT_KEY.format(event_id), True)

    def _tell_requester(self, execution_id: str, kind: str) -> None:
        execution = self.engine.get(execution_id)
        if execution.plan.read_only:
            return  # the requester saw the report where they asked for it: no message
        slack_id = self._slack_id(execution.requester.id)
        if slack_id is None:
            return
        if kind == "plan_changed":
            if execution.state != State.AWAITING_APPROVAL:
                return
            blocks = plan_blocks(
                execution.plan,
                banner=shorten_banner(self.runtime.banner(execution.environment)),
                approvals=execution.required_approvals,
                reason=execution.reason,
                request=None,
                heading=(
                    f":warning: The live state changed before `{execution.id}` started, so its "
                    "plan changed and the approvals given so far are void. Review the new plan; "
                    "confirm it to ask for approvals again."
                ),
            )
            blocks[-1] = {
                "type": "actions",
                "block_id": f"reconfirm:{execution.id}",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Confirm"},
                        "action_id": "rb_reconfirm",
                        "style": "primary",
                        "value": f"{execution.id}:{execution.plan.hash}",
                    }
                ],
            }
            self.courier.post(slack_id, f"The plan of {execution.id} changed", blocks=blocks)
            return
        self.courier.post(slack_id, outcome_text(execution))


def _step_line(payload: dict[str, Any]) -> str:
    line = f"step {payload.get('step')} {payload.get('status')}: {payload.get('description')}"
    if payload.get("error"):
        line += f"\n> {payload['error']}"
    output = payload.get("output")
    if output:
        line += "\n```" + "\n".join(str(o) for o in output)[:2500] + "```"
    return line
