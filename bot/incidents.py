"""PagerDuty from the outbox: timeline notes on linked incidents, pages for failures.

``IncidentFeed`` is an outbox consumer (on the ``pagerduty`` leader lease, one replica):

- **Notes.** An execution linked to an incident (``--incident ID`` in the CLI, ``--incident``
  or ``/incident ID <command>`` in Slack) gets a note on that incident when it is requested,
  approved, started and finished, with the plan summary and the outcome, ``From:`` the
  acting person's email in policy.yaml (the requester; the approver for an approval; for the
  scheduler and Alertmanager, ``PAGERDUTY_FROM``). Each event is noted once: a mark in the
  store after the note; a note whose sending was interrupted (a crash, a lost lease) is looked
  for on the incident by its marker before it is sent again.
- **Pages.** A failed drill or a failed production runbook triggers an Events API v2 alert
  with the dedup key ``runbook-bot:<drill or runbook>:<environment>`` (a retry, or the next
  failure, adds to the same incident instead of paging again); the next success of the same
  resolves it through the same routing key.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import structlog

from runbooks.engine import FollowerThread, QueuedConsumer, execution_verdict, with_run_id
from runbooks.engine.errors import RunbookError
from runbooks.engine.models import TERMINAL_STATES, State, StepStatus

if TYPE_CHECKING:
    from runbooks.adapters.pagerduty import PagerDuty
    from runbooks.engine.models import Event, Execution
    from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.pagerduty")
NOTED_KEY = "pagerduty.noted.{}"
SENDING_KEY = "pagerduty.sending.{}"
PAGED_KEY = "pagerduty.paged.{}"
FAILED = {State.FAILED, State.COMPENSATED, State.COMPENSATION_FAILED}
NOTED_STATES = {str(State.RUNNING), *(str(s) for s in TERMINAL_STATES)}
#: A step's question to people (the rollback gate's "unverified"), its answer or its expiry.
QUESTION_EVENTS = ("execution.question", "execution.answered", "execution.question_expired")
#: What the GitOps watch says about a run after it ended (docs/gitops.md).
GITOPS_EVENTS = ("gitops.resumed", "gitops.expired")


def marker(execution_id: str, event_id: int) -> str:
    return f"[runbook-bot {execution_id} #{event_id}]"


def dedup_key(execution: Execution) -> str:
    what = f"drill:{execution.drill}" if execution.drill else execution.runbook
    return f"runbook-bot:{what}:{execution.environment}"


def subject(execution: Execution) -> str:
    """What a run is called in pages and notes: the drill (and its runbook) for a drill's run,
    scheduled or by hand; else the runbook."""
    if execution.drill:
        return f"drill {execution.drill} ({execution.runbook})"
    return execution.runbook


class IncidentFeed(QueuedConsumer):
    def __init__(self, runtime: Runtime, pagerduty: PagerDuty) -> None:
        super().__init__()
        self.runtime = runtime
        self.engine = runtime.engine
        self.store = runtime.engine.store
        self.pagerduty = pagerduty
        self.default_from = os.environ.get("PAGERDUTY_FROM") or None

    # --- the consumer --------------------------------------------------------------------

    def wants(self, event: Event) -> bool:
        if event.execution_id is None:
            return False
        noted = (
            event.type in QUESTION_EVENTS
            or event.type in GITOPS_EVENTS
            or event.type
            in (
                "execution.created",
                "approval.granted",
            )
        )
        return noted or (
            event.type == "execution.state" and event.payload.get("state") in NOTED_STATES
        )

    def deliver(self, event: Event) -> None:
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        execution = self.store.get_execution(str(event.execution_id))
        if execution is None:
            return
        if execution.incident and self.pagerduty._rest is not None:
            self._note(event, execution)
        state = event.payload.get("state")
        if event.type == "execution.state" and state in {str(s) for s in TERMINAL_STATES}:
            self._page(event, execution)

    # --- notes ---------------------------------------------------------------------------

    def _email(self, actor_id: str | None) -> str | None:
        person = self.engine.config.policy.people.get(actor_id or "")
        email = getattr(person, "email", None) if person is not None else None
        return email or self.default_from

    def _text(self, event: Event, execution: Execution) -> str:
        plan = execution.plan
        head = f"{subject(execution)} {execution.environment} ({execution.id})"
        if event.type == "execution.created":
            gate = (
                f"awaiting {execution.required_approvals} approval(s)"
                if execution.required_approvals
                else "no approval needed"
            )
            lines = [
                f"Requested by {execution.requester.name}: {head}; {gate}.",
                f"Plan: {plan.summary or 'see the run'}",
                *[
                    f"{i + 1}. {with_run_id(step['description'], execution.id)}"
                    for i, step in enumerate(plan.steps[:10])
                ],
            ]
            if execution.reason:
                lines.append(f"Reason: {execution.reason}")
            return "\n".join(lines)
        if event.type == "approval.granted":
            return f"Approved by {event.payload.get('approver')}: {head}."
        if event.type == "execution.question":
            choices = "|".join(str(c) for c in event.payload.get("choices") or [])
            return (
                f"Step {event.payload.get('step')} of {head} asks: "
                f"{event.payload.get('question')} (answer: runs.answer {execution.id} {choices}, "
                "or the Slack card)"
            )
        if event.type == "execution.answered":
            return (
                f"Answered {event.payload.get('choice')} by {event.payload.get('by')}: "
                f"step {event.payload.get('step')} of {head}."
            )
        if event.type == "execution.question_expired":
            return f"Nobody answered step {event.payload.get('step')} of {head} in time."
        if event.type in GITOPS_EVENTS:
            return f"{event.payload.get('text')} ({head})"
        state = str(event.payload.get("state"))
        if state == str(State.RUNNING):
            return f"Started: {head}."
        outcome = f"Finished: {head}: {state}"
        verdict = execution_verdict(execution)
        if verdict is not None:
            outcome += f"; verdict: {verdict}"
        if execution.error:
            outcome += f": {execution.error}"
        took = (
            f" in {round(execution.ended_at - execution.started_at)} s"
            if execution.ended_at and execution.started_at
            else ""
        )
        # The revert branch a person has to merge (docs/gitops.md), where one was pushed.
        reverts = [
            line
            for step in execution.steps
            if step.kind == "gitops.revert" and step.status == StepStatus.SUCCEEDED
            for line in step.output
        ]
        return outcome + took + "." + "".join(f"\n{line}" for line in reverts)

    def _note(self, event: Event, execution: Execution) -> None:
        from runbooks.engine import redact_text

        noted = NOTED_KEY.format(event.id)
        if self.store.kv_get(noted):
            return
        incident = str(execution.incident)
        tag = marker(execution.id, event.id)
        interrupted = not self.store.kv_insert(SENDING_KEY.format(event.id), True)
        if interrupted and any(
            tag in str(n.get("content", "")) for n in self.pagerduty.notes(incident)
        ):
            self.store.kv_set(noted, True)  # sent before the interruption
            return
        actor = execution.requester.id
        if event.type == "approval.granted":
            approvals = execution.valid_approvals()
            actor = approvals[-1].actor.id if approvals else actor
        elif event.type == "execution.answered":
            actor = str(event.payload.get("by_id") or actor)
        sender = self._email(actor)
        if sender is None:
            log.warning(
                "pagerduty: no From address for a note; set PAGERDUTY_FROM or people.*.email",
                execution_id=execution.id,
            )
            self.store.kv_set(noted, "skipped: no From address")
            return
        content = redact_text(f"{self._text(event, execution)}\n{tag}")
        self.pagerduty.add_note(incident, content, from_email=sender)
        self.store.kv_set(noted, True)

    # --- pages ---------------------------------------------------------------------------

    def _pages(self, execution: Execution) -> bool:
        if execution.drill:
            return True
        try:
            tier = self.engine.config.environment(execution.environment).tier
        except RunbookError:
            return False
        return tier == "production"

    def _page(self, event: Event, execution: Execution) -> None:
        if not self.pagerduty.can_page or not self._pages(execution):
            return
        from runbooks.engine import redact_text

        key = dedup_key(execution)
        paged = PAGED_KEY.format(key)
        if execution.state in FAILED:
            if self.store.kv_get(NOTED_KEY.format(f"page.{event.id}")):
                return
            self.pagerduty.trigger(
                redact_text(
                    f"runbook-bot: {subject(execution)} in {execution.environment} "
                    f"{execution.state}: {execution.error or 'see the run'}"
                ),
                key,
                details={
                    "execution_id": execution.id,
                    "reason": redact_text(execution.reason or ""),
                    "drill": execution.drill,
                    "state": str(execution.state),
                },
            )
            self.store.kv_set(paged, execution.id)
            self.store.kv_set(NOTED_KEY.format(f"page.{event.id}"), True)
        elif execution.state == State.SUCCEEDED and self.store.kv_get(paged):
            self.pagerduty.resolve(key)
            self.store.kv_set(paged, None)


class IncidentFollower(FollowerThread):
    """The feed on its own thread, on the ``pagerduty`` leader lease."""

    def __init__(self, runtime: Runtime, pagerduty: PagerDuty, *, poll: float = 1.0) -> None:
        engine = runtime.engine
        self.feed = IncidentFeed(runtime, pagerduty)
        super().__init__(
            engine.store, engine.clock, self.feed, name="pagerduty", owner=engine.owner, poll=poll
        )


def page_callback(pagerduty: PagerDuty | None) -> Any:
    """What the alert follower calls to page (None when PagerDuty's Events API is off)."""
    if pagerduty is None or not pagerduty.can_page:
        return None

    def page(summary: str, key: str, details: dict[str, Any]) -> None:
        pagerduty.trigger(summary, key, severity="critical", details=details)

    return page
