"""Persisted records: executions with their steps and approvals, actors, events, audit rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from runbooks.engine.plan import Plan


class State(StrEnum):
    """Execution states. See docs/engine.md for the transitions."""

    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset(
    {
        State.DENIED,
        State.EXPIRED,
        State.SUCCEEDED,
        State.FAILED,
        State.COMPENSATED,
        State.COMPENSATION_FAILED,
        State.CANCELLED,
    }
)

#: Allowed transitions; anything else is a bug and raises.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.AWAITING_APPROVAL: frozenset(
        {State.APPROVED, State.DENIED, State.EXPIRED, State.CANCELLED}
    ),
    State.APPROVED: frozenset(
        {State.RUNNING, State.AWAITING_APPROVAL, State.CANCELLED, State.EXPIRED}
    ),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED, State.COMPENSATING, State.CANCELLED}),
    State.FAILED: frozenset({State.COMPENSATING}),
    State.COMPENSATING: frozenset({State.COMPENSATED, State.COMPENSATION_FAILED, State.CANCELLED}),
}


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNDOING = "undoing"
    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


class Origin(StrEnum):
    """Through which front end or requester an actor acts (stored and shown as its value)."""

    CLI = "cli"  # a terminal
    SLACK = "slack"  # a slash command, a button, a dialog
    SCHEDULER = "scheduler"  # the bot's own schedules: drills, the readiness and GitOps watches
    ALERTMANAGER = "alertmanager"  # an alert, under policy
    PAGERDUTY = "pagerduty"  # a PagerDuty webhook
    SYSTEM = "system"  # the engine itself: expiry, resuming a run nobody holds


@dataclass(frozen=True)
class Actor:
    """Who did something, and through which front end."""

    id: str
    name: str
    origin: Origin

    def to_doc(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "origin": str(self.origin)}

    @property
    def automatic(self) -> bool:
        """An automatic requester (an alert, the drill schedule), not a person."""
        return self.origin in AUTOMATIC_ORIGINS

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Actor:
        return Actor(id=doc["id"], name=doc["name"], origin=Origin(doc["origin"]))


#: The engine itself (expiring approvals, resuming and starting what nobody holds).
SYSTEM = Actor(id="runbook-bot", name="runbook-bot", origin=Origin.SYSTEM)
#: Origins of requesters that are not people (see ``Actor.automatic``).
AUTOMATIC_ORIGINS = frozenset({Origin.ALERTMANAGER, Origin.SCHEDULER})


class TriggerKind(StrEnum):
    """What set a request off."""

    PERSON = "person"  # someone asked (CLI, a Slack command, a Confirm button)
    DRILL = "drill"  # a drill's fire, or a person's ``drills.run``
    ALERT = "alert"  # an Alertmanager alert, under policy
    INCIDENT_BUTTON = "incident-button"  # a Run button on a PagerDuty incident card
    SCHEDULE = "schedule"  # another schedule of the bot's (not a drill)


@dataclass(frozen=True)
class Trigger:
    """What set a request off, as typed facts: pages, notes, evidence, ``runs.show`` and the
    audit log read these fields, never the reason's prose.

    ``name`` is who or what triggered it (the person's id, the drill's name, the alert's
    name); ``reference`` what it refers to (the fire it is due for, the alert's target, the
    incident); ``at`` when (epoch seconds).
    """

    kind: TriggerKind
    name: str
    reference: str | None = None
    at: float | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "name": self.name,
            "reference": self.reference,
            "at": self.at,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Trigger:
        return Trigger(
            kind=TriggerKind(doc["kind"]),
            name=str(doc["name"]),
            reference=doc.get("reference"),
            at=doc.get("at"),
        )

    @staticmethod
    def of(actor: Actor, *, drill: str | None, at: float | None) -> Trigger:
        """The trigger of a request that named none (and of executions stored before the
        field): its drill, else what its requester is."""
        if drill:
            return Trigger(TriggerKind.DRILL, drill, at=at)
        if actor.origin == Origin.ALERTMANAGER:
            return Trigger(TriggerKind.ALERT, actor.name, at=at)
        if actor.origin == Origin.SCHEDULER:
            return Trigger(TriggerKind.SCHEDULE, actor.name, at=at)
        return Trigger(TriggerKind.PERSON, actor.id, at=at)

    def words(self) -> str:
        """``drill monthly-dr (due 2027-06-01T03:00:00Z)``, ``person alice``."""
        return f"{self.kind} {self.name}" + (f" ({self.reference})" if self.reference else "")


class StopReason(StrEnum):
    """Why an execution stopped short of success (None while it has not)."""

    FAILED = "failed"  # a step failed (or its verification did not hold)
    CANCELLED = "cancelled"  # someone cancelled it while it ran
    DENIED = "denied"  # an approver denied it
    WITHDRAWN = "withdrawn"  # its requester withdrew it before it ran
    EXPIRED = "expired"  # its approvals did not come in time


def _legacy_stop_reason(doc: dict[str, Any]) -> StopReason | None:
    """The stop reason of an execution stored before the field: read once from the state and
    the error text older versions wrote (they told a cancel by its "cancelled" prefix)."""
    state, error = doc.get("state"), doc.get("error") or ""
    if error.startswith("withdrawn"):
        return StopReason.WITHDRAWN
    if state == "cancelled" or error.startswith("cancelled"):
        return StopReason.CANCELLED
    if state == "expired":
        return StopReason.EXPIRED
    if state == "denied":
        return StopReason.DENIED
    if state in {"failed", "compensating", "compensated", "compensation_failed"}:
        return StopReason.FAILED
    return None


@dataclass
class StepRecord:
    index: int
    kind: str
    description: str
    reversible: bool
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 0
    output: list[str] = field(default_factory=list)
    error: str | None = None
    #: While running: the latest word on a long wait (what it waits for, for how long).
    progress: str | None = None
    #: Objectives the step measured (``Measure.to_doc``): RTO, RPO against their targets.
    measures: list[dict[str, Any]] = field(default_factory=list)
    #: While the step waits for a person's answer (``RunContext.ask``): the question, its
    #: choices, attempt and deadline; None otherwise.
    question: dict[str, Any] | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "measures": [dict(m) for m in self.measures],
            "question": None if self.question is None else dict(self.question),
            "progress": self.progress,
            "index": self.index,
            "kind": self.kind,
            "description": self.description,
            "reversible": self.reversible,
            "status": str(self.status),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "attempts": self.attempts,
            "output": list(self.output),
            "error": self.error,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> StepRecord:
        return StepRecord(**{**doc, "status": StepStatus(doc["status"])})


@dataclass
class Approval:
    actor: Actor
    decision: str  # approved | denied
    plan_hash: str
    at: float
    reason: str | None = None
    void: bool = False

    def to_doc(self) -> dict[str, Any]:
        return {
            "actor": self.actor.to_doc(),
            "decision": self.decision,
            "plan_hash": self.plan_hash,
            "at": self.at,
            "reason": self.reason,
            "void": self.void,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Approval:
        return Approval(**{**doc, "actor": Actor.from_doc(doc["actor"])})


@dataclass
class Execution:
    """One request of a runbook, from approval to its outcome."""

    id: str
    plan: Plan
    state: State
    requester: Actor
    created_at: float
    updated_at: float
    reason: str | None = None
    incident: str | None = None
    break_glass: bool = False
    required_approvals: int = 0
    approver_groups: list[str] = field(default_factory=list)
    expires_at: float | None = None
    confirmed_hash: str | None = None
    approvals: list[Approval] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    cancel_reason: str | None = None
    #: The drill this execution is a run of (a scheduled fire or ``drills.run`` by a
    #: person), else None. A typed fact: pages, notes and evidence read it, never the reason.
    drill: str | None = None
    #: What set the request off (``Trigger.of`` for executions stored before the field).
    trigger: Trigger | None = None
    #: Why it stopped short of success; None while it has not. Compensation reads it.
    stop_reason: StopReason | None = None
    version: int = 0

    @property
    def runbook(self) -> str:
        return self.plan.runbook

    @property
    def environment(self) -> str:
        return self.plan.environment

    @property
    def lock_key(self) -> str | None:
        return self.plan.lock_key

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def valid_approvals(self) -> list[Approval]:
        return [
            a
            for a in self.approvals
            if a.decision == "approved" and not a.void and a.plan_hash == self.plan.hash
        ]

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "runbook": self.runbook,
            "environment": self.environment,
            "state": str(self.state),
            "plan": self.plan.to_doc(),
            "plan_hash": self.plan.hash,
            "requester": self.requester.to_doc(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "reason": self.reason,
            "incident": self.incident,
            "break_glass": self.break_glass,
            "required_approvals": self.required_approvals,
            "approver_groups": self.approver_groups,
            "expires_at": self.expires_at,
            "confirmed_hash": self.confirmed_hash,
            "approvals": [a.to_doc() for a in self.approvals],
            "steps": [s.to_doc() for s in self.steps],
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "error": self.error,
            "cancel_reason": self.cancel_reason,
            "drill": self.drill,
            "trigger": None if self.trigger is None else self.trigger.to_doc(),
            "stop_reason": None if self.stop_reason is None else str(self.stop_reason),
            "version": self.version,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Execution:
        requester = Actor.from_doc(doc["requester"])
        trigger = (
            Trigger.from_doc(doc["trigger"])
            if doc.get("trigger")
            else Trigger.of(requester, drill=doc.get("drill"), at=doc["created_at"])
        )
        stop = (
            StopReason(doc["stop_reason"])
            if doc.get("stop_reason")
            else (None if "stop_reason" in doc else _legacy_stop_reason(doc))
        )
        return Execution(
            id=doc["id"],
            plan=Plan.from_doc(doc["plan"]),
            state=State(doc["state"]),
            requester=requester,
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
            reason=doc.get("reason"),
            incident=doc.get("incident"),
            break_glass=doc.get("break_glass", False),
            required_approvals=doc.get("required_approvals", 0),
            approver_groups=list(doc.get("approver_groups", [])),
            expires_at=doc.get("expires_at"),
            confirmed_hash=doc.get("confirmed_hash"),
            approvals=[Approval.from_doc(a) for a in doc.get("approvals", [])],
            steps=[StepRecord.from_doc(s) for s in doc.get("steps", [])],
            started_at=doc.get("started_at"),
            ended_at=doc.get("ended_at"),
            error=doc.get("error"),
            cancel_reason=doc.get("cancel_reason"),
            drill=doc.get("drill"),  # executions stored before the field have none
            trigger=trigger,
            stop_reason=stop,
            version=doc.get("version", 0),
        )


@dataclass(frozen=True)
class Event:
    """A transition, stored in the outbox for front ends in other processes to render."""

    id: int
    execution_id: str | None
    type: str
    payload: dict[str, Any]
    at: float


@dataclass(frozen=True)
class AuditRow:
    """One stored audit record: the MAC covers seq, prev and the body bytes."""

    seq: int
    prev: str
    body: bytes
    mac: str


@dataclass(frozen=True)
class Lease:
    execution_id: str
    owner: str
    until: float
