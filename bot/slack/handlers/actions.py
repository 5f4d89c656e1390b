"""Buttons and the deny dialog: acked at once, the work on the pool; a value that is not
what our buttons carry, and every refusal, is answered privately by the error mapper
(``errors.py``), which sees what these raise."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import structlog
from slack_bolt import Ack, Respond
from slack_sdk import WebClient

from bot.slack.buttons import (
    ConfirmValue,
    IncidentRunValue,
    execution_value,
)
from bot.slack.commands import (
    Parsed,
)
from bot.slack.handlers.base import (
    Listening,
    channel_of,
    short_banner,
    trigger_of,
)
from bot.slack.handlers.commands import Commands
from bot.slack.render import (
    deny_modal,
    plan_blocks,
    plan_text,
)
from runbooks.engine import Outcome, Request
from runbooks.engine.errors import RunbookError
from runbooks.engine.models import Actor, State, TriggerKind

log = structlog.get_logger("runbook_bot.slack")


class Actions:
    """The button and dialog listeners (a Run button on an incident card plans as a command)."""

    def __init__(self, kit: Listening, commands: Commands) -> None:
        self.kit = kit
        self.commands = commands
        self.runtime = kit.runtime
        self.engine = kit.engine
        self.notifier = kit.notifier

    def on_incident_run(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        """A Run button on a PagerDuty incident card: the clicker's request of the suggested
        runbook, linked to the incident; the plan comes privately first, as for a command."""
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return
        suggestion = IncidentRunValue.read(action)
        try:
            spec = self.engine.registry.get(suggestion.runbook)
        except RunbookError:
            # Kept: a runbook the card names but this catalog no longer has says so in the
            # button's terms, rather than the registry's "unknown runbook" to someone who
            # typed nothing.
            self.kit.whisper(body, "That button no longer names a runbook here.", respond)
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

        self.commands.request(
            parsed, actor, cast("Respond", privately), body["user"]["id"], channel_of(body)
        )

    def on_confirm(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return
        request = ConfirmValue.read(action)
        if body["user"]["id"] != request.requester:
            self.kit.whisper(
                body, "Only the person who asked for this plan can confirm it.", respond
            )
            return
        engine = self.engine
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
                trigger=trigger_of(request.trigger, actor, request.incident),
            )
        )
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
        self.kit.done()

    def _decide(
        self,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: Respond,
        decide: Callable[[str, Actor, str], object],
    ) -> str | None:
        """Run an engine decision for the clicker on ``execution id:plan hash`` (a refusal is
        raised, for the error mapper). Returns the execution id when it went through."""
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return None
        execution_id, plan_hash = execution_value(action)
        decide(execution_id, actor, plan_hash)
        self.kit.done()
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
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return
        execution_id, _ = execution_value(action)
        client.views_open(
            trigger_id=body["trigger_id"], view=deny_modal(execution_id, channel_of(body))
        )

    def on_deny_submitted(self, ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        actor = self.kit.actor((body.get("user") or {}).get("id", ""))
        if actor is None:
            ack(response_action="errors", errors={"reason": "you are not in policy.yaml"})
            return
        meta = json.loads(view.get("private_metadata") or "{}")
        reason = view["state"]["values"]["reason"]["value"].get("value") or ""
        # A refusal is raised before the ack: the error mapper shows it under the reason.
        self.engine.deny(meta["id"], actor=actor, reason=reason)
        ack()
        self.kit.done()

    def on_answer(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        """An answer button on a card: bound to the question it was shown for (its key)."""
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return
        execution_id, rest = execution_value(action)
        key, _, choice = rest.rpartition(":")
        question = self.engine.answer(execution_id, choice, actor=actor, question_key=key or None)
        self.kit.whisper(
            body, f"You answered {choice} to step {question['step']} of `{execution_id}`.", respond
        )
        self.kit.done()

    def on_cancel(
        self, body: dict[str, Any], action: dict[str, Any], respond: Respond, _client: WebClient
    ) -> None:
        actor = self.kit.clicker(body, respond)
        if actor is None:
            return
        execution_id, _ = execution_value(action)
        self.kit.cancel(execution_id, actor, "")
