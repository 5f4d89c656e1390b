"""The engine's journal: every transition saved, audited and published, in that order.

``Journal`` is the part every other part of the engine writes through (``Locks``,
``Planner``, ``Runner``, ``Decisions``, ``Requests``; the ``Engine`` facade composes them):
it is given the store, the audit log, the event bus and the clock, and nothing else.
"""

from __future__ import annotations

import builtins
import logging
from typing import Any, TypeVar

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock
from runbooks.engine.counters import count_transition
from runbooks.engine.errors import ConcurrentUpdate, NotFound
from runbooks.engine.events import EventBus
from runbooks.engine.models import (
    SYSTEM,
    TERMINAL_STATES,
    TRANSITIONS,
    Actor,
    Execution,
    State,
    StepRecord,
    StopReason,
)
from runbooks.engine.plan import PastRun, Plan, diff_plans, with_run_id
from runbooks.engine.redact import redact_text
from runbooks.engine.store.base import Store
from runbooks.engine.verdicts import execution_measures


def clean_reason(reason: str | None) -> str | None:
    """Reasons are free text people paste into: mask anything credential-shaped at once."""
    return redact_text(reason.strip()) or None if reason else None


def _masked(text: str | None) -> str | None:
    return redact_text(text) if text else text


def scrub_execution(execution: Execution) -> None:
    """Mask credential-shaped text in an execution's free text before it is stored: reasons,
    errors (an adapter's exception may quote a URL with its password) and step output. The
    store is an edge like the log: what it holds reaches reports, Slack and PagerDuty."""
    execution.reason = _masked(execution.reason)
    execution.cancel_reason = _masked(execution.cancel_reason)
    execution.error = _masked(execution.error)
    for approval in execution.approvals:
        approval.reason = _masked(approval.reason)
    for record in execution.steps:
        record.error = _masked(record.error)
        record.progress = _masked(record.progress)
        record.output = [redact_text(line) for line in record.output]


CANCEL_POLL_S = 0.5
#: kv: the question an execution's running step waits on (``RunContext.ask``), and where its
#: first answer goes (inserted once: the first answer wins, across replicas).
QUESTION_KEY = "question:{}"
ANSWER_KEY = "answer:{}:{}:{}"
#: Retry budgets of the compare-and-set loops: how many times a write that lost a race to
#: another replica or thread looks again before giving up with a clear refusal.
DECISION_RETRIES = 50
#: Tries to take one lock key while its holders change hands (expired, released, stolen).
LOCK_TRIES = 40
#: Fresh execution ids drawn when a new one clashes with a stored one.
ID_CLASH_TRIES = 20
#: Swaps of the shared list of deferred steps (replicas and terminals change it).
DEFERRED_SWAP_TRIES = 100
#: How long a lock holder whose execution is not stored yet is presumed to be mid-submit.
LOCK_UNBORN_CHECKS = 20
LOCK_UNBORN_WAIT_S = 0.05
#: How far back planners can look (``PlanContext.history``).
HISTORY_LIMIT = 500
T = TypeVar("T")
_log = logging.getLogger(__name__)


def step_records(plan: Plan, execution_id: str | None = None) -> list[StepRecord]:
    """Fresh (pending) step records for every step of a plan; with the execution's id, each
    description names it where the plan could only say ``RUN_ID`` (a revert branch)."""
    return [
        StepRecord(
            index=i,
            kind=s["kind"],
            description=s["description"]
            if execution_id is None
            else with_run_id(s["description"], execution_id),
            reversible=s["reversible"],
        )
        for i, s in enumerate(plan.steps)
    ]


def plan_target(plan: Plan) -> dict[str, Any]:
    """What an audit record names as its target: the plan's runbook, place and lock."""
    return {
        "runbook": plan.runbook,
        "environment": plan.environment,
        "region": plan.region,
        "lock": plan.lock_key,
    }


def past_runs(store: Store) -> builtins.list[PastRun]:
    """Finished executions as planners see them (``PlanContext.history``), newest first."""
    finished = store.list_executions(
        limit=HISTORY_LIMIT, states=sorted(s.value for s in TERMINAL_STATES)
    )
    return [
        PastRun(
            id=e.id,
            runbook=e.runbook,
            environment=e.environment,
            params=dict(e.plan.params),
            state=e.state.value,
            ended_at=e.ended_at,
            summary=e.plan.summary,
            steps=tuple(e.plan.steps),
            requester=e.requester.name,
            started_at=e.started_at,
            drill=e.drill,
            config_hash=e.plan.config_hash,
            measures=tuple(execution_measures(e)),
        )
        for e in finished
    ]


def gate_satisfied(execution: Execution) -> bool:
    """Waiting for approval, its plan confirmed, and approved by enough people."""
    return (
        execution.state == State.AWAITING_APPROVAL
        and execution.confirmed_hash == execution.plan.hash
        and len(execution.valid_approvals()) >= execution.required_approvals
    )


class Journal:
    """Save, audit and publish every transition, in that order; read executions back."""

    def __init__(self, *, store: Store, audit: AuditLog, events: EventBus, clock: Clock) -> None:
        self._store = store
        self._audit = audit
        self._events = events
        self._clock = clock

    def get(self, execution_id: str) -> Execution:
        execution = self._store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id!r}; list them with `runs.list`")
        return execution

    def list(self, *, limit: int = 50, states: list[str] | None = None) -> list[Execution]:
        return self._store.list_executions(limit=limit, states=states)

    def release_lock(self, execution: Execution) -> None:
        if execution.terminal:
            for key in execution.plan.locks:
                self._store.release_lock(key, execution.id)

    def void_for_plan_change(self, execution: Execution, fresh: Plan) -> None:
        """Put the fresh plan on the execution, void its approvals, and wait for them again."""
        old = execution.plan
        for approval in execution.approvals:
            approval.void = True
        execution.plan = fresh
        execution.confirmed_hash = None
        execution.steps = step_records(fresh, execution.id)
        changes = diff_plans(old, fresh)
        self.transition(
            execution,
            State.AWAITING_APPROVAL,
            actor=SYSTEM,
            detail={
                "why": "plan changed before the first step; approvals void",
                "old_plan_hash": old.hash,
                "new_plan_hash": fresh.hash,
                "changes": changes,
            },
            event_type="plan.changed",
        )

    def save(self, execution: Execution) -> None:
        execution.updated_at = self._clock.now()
        scrub_execution(execution)
        self._store.save_execution(execution)

    def transition(
        self,
        execution: Execution,
        state: State,
        *,
        actor: Actor,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        event_type: str = "execution.state",
        release: bool = True,
    ) -> None:
        allowed = TRANSITIONS.get(execution.state, frozenset())
        if state not in allowed:
            raise RuntimeError(f"illegal transition {execution.state} -> {state} ({execution.id})")
        previous = execution.state
        execution.state = state
        try:
            self.save(execution)
        except ConcurrentUpdate:
            execution.state = previous
            raise
        self.after_transition(
            execution,
            previous,
            actor=actor,
            reason=reason,
            detail=detail,
            event_type=event_type,
            release=release,
        )

    def after_transition(
        self,
        execution: Execution,
        previous: State,
        *,
        actor: Actor,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
        event_type: str = "execution.state",
        release: bool = True,
    ) -> None:
        """Count, audit, publish and (at the end) release the lock for a saved transition.

        One batch (one commit on SQLite): the saved state stays its own commit before it, so
        a crash between the two leaves the state as a crash right after a save always did."""
        state = execution.state
        with self._store.batch():
            count_transition(self._store, execution.runbook, execution.environment, str(state))
            self._audit.record(
                f"execution.{state}",
                actor=actor,
                outcome=str(state),
                execution_id=execution.id,
                target=plan_target(execution.plan),
                reason=reason or execution.reason,
                incident=execution.incident,
                detail={
                    "from": str(previous),
                    **(
                        {"error": execution.error} if execution.error and execution.terminal else {}
                    ),
                    **(detail or {}),
                },
            )
            self.publish(execution, event_type, previous=str(previous), **(detail or {}))
            if release:
                self.release_lock(execution)

    def step_transition(
        self, execution: Execution, record: StepRecord, event_type: str, *, actor: Actor
    ) -> None:
        with self._store.batch():  # the step's state, its audit record and its event: one commit
            self.save(execution)
            self._audit.record(
                event_type,
                actor=actor,
                outcome=str(record.status),
                execution_id=execution.id,
                target=plan_target(execution.plan),
                incident=execution.incident,
                detail={
                    "step": record.index + 1,
                    "kind": record.kind,
                    "description": record.description,
                    **({"error": record.error} if record.error else {}),
                    **({"output": record.output} if record.output else {}),
                },
            )
            self.publish(
                execution,
                event_type,
                step=record.index + 1,
                description=record.description,
                status=str(record.status),
                error=record.error,
                output=record.output,
            )

    def publish(self, execution: Execution, type_: str, **extra: Any) -> None:
        self._events.publish(
            execution.id,
            type_,
            {
                "execution_id": execution.id,
                "runbook": execution.runbook,
                "environment": execution.environment,
                "state": str(execution.state),
                "requester": execution.requester.name,
                **extra,
            },
        )

    def expire_if_due(self, execution: Execution) -> bool:
        if (
            execution.state in {State.AWAITING_APPROVAL, State.APPROVED}
            and execution.expires_at is not None
            and self._clock.now() > execution.expires_at
        ):
            execution.error = "approval window expired before the run started"
            execution.stop_reason = StopReason.EXPIRED
            self.transition(execution, State.EXPIRED, actor=SYSTEM)
            return True
        return False

    def expire_due(self) -> builtins.list[str]:
        """Expire every pending request past its deadline (the bot runs this periodically)."""
        expired = []
        for execution in self._store.list_executions(
            limit=1000, states=[State.AWAITING_APPROVAL, State.APPROVED]
        ):
            try:
                if self.expire_if_due(execution):
                    expired.append(execution.id)
            except ConcurrentUpdate:
                continue
        return expired
