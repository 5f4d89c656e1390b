"""Decisions on executions: approve, deny, confirm, cancel, resume, answer a step's question,
acknowledge a review.

Each is authorised here by policy, for every front end alike; refusals are audited. What a
decision sets going is another part's: re-planning the ``Planner``'s, running the ``Runner``'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock
from runbooks.engine.errors import (
    ConcurrentUpdate,
    InvalidInput,
    NotFound,
    PlanChanged,
    RefusalKind,
    Refused,
    RunbookError,
)
from runbooks.engine.lifecycle.journal import (
    DECISION_RETRIES,
    QUESTION_KEY,
    Journal,
    T,
    clean_reason,
    gate_satisfied,
    plan_target,
)
from runbooks.engine.lifecycle.planner import Planner
from runbooks.engine.lifecycle.runner import Runner
from runbooks.engine.models import (
    Actor,
    Approval,
    Execution,
    State,
    StopReason,
)
from runbooks.engine.policy import ConfigPolicy
from runbooks.engine.store.base import Store


class Decisions:
    """The engine's decision verbs, each authorised by policy for every front end alike."""

    def __init__(
        self,
        *,
        journal: Journal,
        planner: Planner,
        runner: Runner,
        policy: ConfigPolicy,
        store: Store,
        audit: AuditLog,
        clock: Clock,
    ) -> None:
        self._journal = journal
        self._planner = planner
        self._runner = runner
        self._policy = policy
        self._store = store
        self._audit = audit
        self._clock = clock

    def _refusal(
        self,
        action: str,
        actor: Actor,
        execution: Execution,
        why: str,
        *,
        outcome: str,
        kind: RefusalKind = RefusalKind.STATE,
    ) -> Refused:
        """Audit the refusal of a decision on ``execution`` and return it for raising."""
        self._audit.record(
            action,
            actor=actor,
            outcome=outcome,
            execution_id=execution.id,
            target=plan_target(execution.plan),
            incident=execution.incident,
            detail={"why": why, "kind": str(kind)},
        )
        return Refused(why, kind=kind)

    def _authorise(self, verb: str, actor: Actor, execution: Execution) -> None:
        """Refuse (audited) a decision verb this person may not take on this execution."""
        why = self._policy.operator_refusal(
            verb,
            actor,
            execution_id=execution.id,
            runbook=execution.runbook,
            environment=execution.environment,
            requester=execution.requester,
        )
        if why is None:
            return
        raise self._refusal(
            f"{verb}.refused",
            actor,
            execution,
            why,
            outcome="not_allowed",
            kind=RefusalKind.NOT_ALLOWED,
        )

    def resume(self, execution_id: str, *, actor: Actor) -> Execution:
        """Continue a running execution whose process died (or start an approved one nobody
        started), if ``actor`` may (``Runner.resume``)."""
        execution = self._journal.get(execution_id)
        self._authorise("resume", actor, execution)
        return self._runner.resume(execution, actor=actor)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Re-read and retry a decision that lost an optimistic-concurrency race."""
        for _ in range(DECISION_RETRIES):
            try:
                return attempt()
            except ConcurrentUpdate:
                continue
        raise ConcurrentUpdate("the execution kept changing underneath; try again")

    def approve(
        self, execution_id: str, *, actor: Actor, plan_hash: str | None = None
    ) -> Execution:
        """Record an approval bound to the current plan; approve the execution when enough.

        ``plan_hash`` (or a prefix of it) is the plan the approver saw; a mismatch is refused.
        The approval that completes the gate also re-plans from live state: if the plan no
        longer holds, the approvals are void at once and the approver is told so (raised as
        ``PlanChanged``), instead of an "approved" that the first step then silently voids.
        """
        execution = self._retrying(
            lambda: self._approve(execution_id, actor=actor, plan_hash=plan_hash)
        )
        if execution.state == State.APPROVED and not execution.plan.read_only:
            self._check_live_plan(execution, actor=actor)
        return execution

    def _check_live_plan(self, execution: Execution, *, actor: Actor) -> None:
        try:
            fresh = self._planner.replan(execution)
        except RunbookError:
            return  # cannot plan now: the re-plan before the first step decides
        if fresh.hash == execution.plan.hash:
            return
        try:
            self._journal.void_for_plan_change(execution, fresh)
        except ConcurrentUpdate:
            return  # started or changed meanwhile: that path decides
        raise PlanChanged(
            f"your approval of {execution.id} was recorded, but the live state changed since "
            f"the plan was shown, so the plan changed and every approval is void; "
            f"{execution.requester.name} must confirm the new plan, then approve again "
            f"(`runs.show {execution.id}`)"
        )

    def _approve(self, execution_id: str, *, actor: Actor, plan_hash: str | None) -> Execution:
        execution = self._load_for_decision(execution_id, actor=actor)
        gate = self._policy.gate(
            execution.runbook, execution.environment, read_only=execution.plan.read_only
        )
        # The approver groups were fixed when the request was made; the rest is current policy.
        gate = dataclasses.replace(
            gate, approver_groups=tuple(execution.approver_groups) or gate.approver_groups
        )
        refusal = None
        if actor.id == execution.requester.id:
            refusal = f"you requested {execution.id}; someone else must approve it"
        elif why := self._policy.approval_refusal(
            actor, gate, runbook=execution.runbook, environment=execution.environment
        ):
            refusal = why
        elif plan_hash is not None and plan_hash != execution.plan.hash[: len(plan_hash)]:
            refusal = (
                f"the plan of {execution.id} changed since you saw it; "
                f"review it again (`runs.show {execution.id}`)"
            )
        elif any(a.actor.id == actor.id for a in execution.valid_approvals()):
            refusal = f"{actor.name} has already approved {execution.id}"
        if refusal:
            raise self._refusal("approval.refused", actor, execution, refusal, outcome="refused")
        execution.approvals.append(
            Approval(
                actor=actor,
                decision="approved",
                plan_hash=execution.plan.hash,
                at=self._clock.now(),
            )
        )
        if gate_satisfied(execution):
            # One write: the last approval and the transition land together or not at all.
            execution.state = State.APPROVED
            try:
                self._journal.save(execution)
            except ConcurrentUpdate:
                execution.state = State.AWAITING_APPROVAL
                raise
            self._record_approval(execution, actor)
            self._journal.after_transition(execution, State.AWAITING_APPROVAL, actor=actor)
        else:
            self._journal.save(execution)
            self._record_approval(execution, actor)
        return execution

    def _record_approval(self, execution: Execution, actor: Actor) -> None:
        self._audit.record(
            "approval.granted",
            actor=actor,
            outcome="granted",
            execution_id=execution.id,
            target=plan_target(execution.plan),
            detail={
                "plan_hash": execution.plan.hash,
                "count": len(execution.valid_approvals()),
                "required": execution.required_approvals,
            },
        )
        self._journal.publish(execution, "approval.granted", approver=actor.name)

    def deny(self, execution_id: str, *, actor: Actor, reason: str) -> Execution:
        """End a pending request at once, with a reason.

        Anyone who may approve it can deny it; the requester can withdraw it the same way.
        """
        if not reason.strip():
            raise InvalidInput("a denial needs --reason TEXT so the requester knows why")
        cleaned = clean_reason(reason) or reason
        return self._retrying(lambda: self._deny(execution_id, actor=actor, reason=cleaned))

    def _deny(self, execution_id: str, *, actor: Actor, reason: str) -> Execution:
        execution = self._load_for_decision(execution_id, actor=actor)
        if actor.id != execution.requester.id and not self._policy.member_of(
            actor, execution.approver_groups or ["*"]
        ):
            why = (
                f"{actor.name} may not deny {execution.runbook} in {execution.environment}; "
                f"approvers: {', '.join(execution.approver_groups)}"
            )
            raise self._refusal("approval.refused", actor, execution, why, outcome="refused")
        if actor.id == execution.requester.id:
            # The requester "denying" their own request withdraws it: a cancellation, shown
            # and audited as one, not a verdict of the approvers.
            execution.cancel_reason = reason
            execution.error = f"withdrawn by {actor.name}: {reason}"
            execution.stop_reason = StopReason.WITHDRAWN
            execution.ended_at = self._clock.now()
            self._journal.transition(
                execution, State.CANCELLED, actor=actor, reason=reason, detail={"withdrawn": True}
            )
            return execution
        execution.approvals.append(
            Approval(
                actor=actor,
                decision="denied",
                plan_hash=execution.plan.hash,
                at=self._clock.now(),
                reason=reason,
            )
        )
        execution.error = f"denied by {actor.name}: {reason}"
        execution.stop_reason = StopReason.DENIED
        self._journal.transition(execution, State.DENIED, actor=actor, reason=reason)
        return execution

    def confirm(self, execution_id: str, *, actor: Actor, plan_hash: str) -> Execution:
        """The requester confirms a (changed) plan again."""
        return self._retrying(lambda: self._confirm(execution_id, actor=actor, plan_hash=plan_hash))

    def _confirm(self, execution_id: str, *, actor: Actor, plan_hash: str) -> Execution:
        execution = self._load_for_decision(execution_id, actor=actor)
        if actor.id != execution.requester.id:
            raise Refused(f"only {execution.requester.name} can confirm {execution.id}")
        if plan_hash != execution.plan.hash:
            raise Refused(f"the plan of {execution.id} changed again; review it once more")
        execution.confirmed_hash = plan_hash
        self._journal.save(execution)
        self._audit.record(
            "request.confirmed",
            actor=actor,
            outcome="confirmed",
            execution_id=execution.id,
            detail={"plan_hash": plan_hash},
        )
        if gate_satisfied(execution):
            self._journal.transition(execution, State.APPROVED, actor=actor)
        return execution

    def _load_for_decision(self, execution_id: str, *, actor: Actor) -> Execution:
        execution = self._journal.get(execution_id)
        self._journal.expire_if_due(execution)
        if execution.state != State.AWAITING_APPROVAL:
            why = f"{execution.id} is {execution.state}; it is not waiting for a decision"
            # Often the second of two approvers clicking at once: audited like any refusal.
            raise self._refusal("decision.refused", actor, execution, why, outcome="not_pending")
        return execution

    def reviews(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        """Break-glass review items, oldest first."""
        return self._store.list_reviews(open_only=open_only)

    def ack_review(self, execution_id: str, *, actor: Actor, note: str = "") -> None:
        """Close a break-glass review; the person who broke the glass cannot close it."""
        items = {r["execution_id"]: r for r in self._store.list_reviews(open_only=False)}
        item = items.get(execution_id)
        if item is None:
            raise NotFound(f"no break-glass review for {execution_id!r}; see `approvals.reviews`")
        if item["acknowledged_by"] is not None:
            raise Refused(
                f"the review of {execution_id} was already acknowledged by "
                f"{item['acknowledged_by']['name']}"
            )
        if item["doc"]["requester"]["id"] == actor.id:
            raise Refused(f"you broke the glass on {execution_id}; someone else must review it")
        reviewed = self._store.get_execution(execution_id)
        if reviewed is not None:
            why = self._policy.operator_refusal(
                "acknowledge the break-glass review of",
                actor,
                execution_id=execution_id,
                runbook=reviewed.runbook,
                environment=reviewed.environment,
                requester=reviewed.requester,
                requester_may=False,
            )
            if why is not None:
                raise self._refusal(
                    "break_glass.review_refused", actor, reviewed, why, outcome="not_allowed"
                )
        if not self._store.ack_review(execution_id, actor.to_doc(), self._clock.now()):
            raise Refused(f"the review of {execution_id} was acknowledged just now by someone else")
        self._audit.record(
            "break_glass.reviewed",
            actor=actor,
            outcome="acknowledged",
            execution_id=execution_id,
            reason=clean_reason(note),
            incident=item["doc"].get("incident"),
            target={"runbook": item["doc"]["runbook"], "environment": item["doc"]["environment"]},
        )

    def question(self, execution_id: str) -> dict[str, Any] | None:
        """The question the execution's running step waits on, or None."""
        found = self._store.kv_get(QUESTION_KEY.format(execution_id))
        return dict(found) if isinstance(found, dict) else None

    def answer(
        self,
        execution_id: str,
        choice: str,
        *,
        actor: Actor,
        reason: str = "",
        question_key: str | None = None,
    ) -> dict[str, Any]:
        """Answer the question a running step asked (the first answer wins, once).

        Whoever may cancel the execution may answer (its requester or the rule's operators).
        Returns the question answered.
        """
        execution = self._journal.get(execution_id)
        self._authorise("answer", actor, execution)

        def refused(outcome: str, error: RunbookError) -> RunbookError:
            """Audit a refused answer of a known person (as the policy refusal is)."""
            self._audit.record(
                "answer.refused",
                actor=actor,
                outcome=outcome,
                execution_id=execution.id,
                target=plan_target(execution.plan),
                incident=execution.incident,
                detail={"why": str(error), "choice": choice[:40]},
            )
            return error

        question = self.question(execution_id)
        if execution.terminal or question is None:
            raise refused(
                "not_waiting",
                Refused(
                    f"{execution.id} is not waiting for an answer ({execution.state})",
                    hint=f"`runs.show {execution.id}` shows where it is",
                ),
            )
        if question_key is not None and question_key != question["answer_key"]:
            raise refused(
                "closed",
                Refused(
                    f"the question you answered (on an older card) was closed; step "
                    f"{question['step']} of {execution.id} asks again now",
                    hint=f"`runs.show {execution.id}` shows the question",
                ),
            )
        choices = [str(c) for c in question["choices"]]
        picked = choice.strip().lower()
        if picked not in choices:
            raise refused(
                "invalid_choice",
                InvalidInput(
                    f"{choice!r} is not an answer to step {question['step']} of "
                    f"{execution.id}; answer one of: {', '.join(choices)}"
                ),
            )
        now = self._clock.now()
        if now >= float(question["until"]):
            raise refused(
                "expired",
                Refused(f"the question of {execution.id} expired; the step goes on without it"),
            )
        key = str(question["answer_key"])
        said = clean_reason(reason)
        doc = {"choice": picked, "actor": actor.to_doc(), "reason": said, "at": now}
        if not self._store.kv_insert(key, doc):
            first = self._store.kv_get(key) or {}
            raise refused(
                "already_answered",
                Refused(
                    f"step {question['step']} of {execution.id} was already answered "
                    f"{first.get('choice')} by {(first.get('actor') or {}).get('name')}"
                ),
            )
        detail = {"step": question["step"], "question": question["text"], "choice": picked}
        self._audit.record(
            "execution.answered",
            actor=actor,
            outcome=picked,
            execution_id=execution.id,
            reason=said,
            target=plan_target(execution.plan),
            incident=execution.incident,
            detail=detail,
        )
        self._journal.publish(
            execution, "execution.answered", by=actor.name, by_id=actor.id, **detail
        )
        return question

    def cancel(self, execution_id: str, *, actor: Actor, reason: str = "") -> Execution:
        """Stop a request: at once if not started, else between steps or inside a wait."""
        reason = clean_reason(reason) or ""
        execution = self._journal.get(execution_id)
        self._authorise("cancel", actor, execution)
        if execution.terminal:
            raise Refused(f"{execution.id} already ended ({execution.state})")
        if execution.state in {State.AWAITING_APPROVAL, State.APPROVED}:
            execution.cancel_reason = reason or None
            execution.stop_reason = StopReason.CANCELLED
            self._journal.transition(execution, State.CANCELLED, actor=actor, reason=reason)
            return execution
        self._store.request_cancel(
            execution.id, {"actor": actor.to_doc(), "reason": reason, "at": self._clock.now()}
        )
        self._audit.record(
            "execution.cancel_requested",
            actor=actor,
            outcome="requested",
            execution_id=execution.id,
            reason=reason,
            target=plan_target(execution.plan),
        )
        self._journal.publish(execution, "execution.cancel_requested", by=actor.name, reason=reason)
        # Nobody running it (the process died): the runner compensates here and now.
        return self._runner.take_over_cancelled(execution, actor=actor)
