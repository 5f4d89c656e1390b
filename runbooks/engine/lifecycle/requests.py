"""The one request path every requester takes: CLI, Slack, the scheduler, webhooks.

A front end translates what it received into a ``Request`` and calls ``Engine.request``; the
engine validates, refuses a person who may not request it there (before any live read), plans
from live state, applies the rest of policy, and either answers with the plan to
show (``CONFIRM``: nothing stored), the newer plan when the live state moved since the
requester saw one (``CHANGED``), a dry run, the report of a read-only runbook it just ran
(``REPORTED``), or the submitted execution (``SUBMITTED``). The front end renders the answer
and decides nothing: refusals are raised (and audited) here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock
from runbooks.engine.counters import count_transition
from runbooks.engine.errors import (
    ConcurrentUpdate,
    InvalidInput,
    RefusalKind,
    Refused,
    RunbookError,
)
from runbooks.engine.ids import new_execution_id
from runbooks.engine.lifecycle.journal import (
    ID_CLASH_TRIES,
    Journal,
    clean_reason,
    gate_satisfied,
    plan_target,
    step_records,
)
from runbooks.engine.lifecycle.locks import Locks
from runbooks.engine.lifecycle.planner import Planner, Prepared, request_target
from runbooks.engine.lifecycle.runner import Runner
from runbooks.engine.models import SYSTEM, Actor, Execution, Origin, State, Trigger
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import Plan
from runbooks.engine.policy import ConfigPolicy, Gate, Refusal, require_break_glass_context
from runbooks.engine.registry import RunbookSpec
from runbooks.engine.store.base import Store

if TYPE_CHECKING:
    from runbooks.engine.config.schedules import Drill


class DrillRuns(Protocol):
    """What the request path needs of the drills (``requesters.drills.DrillScheduler``, given
    to the engine by its composer as ``Engine(drill_runs=...)``, and by the engine to
    ``Requests``: the lifecycle does not import the requesters above it)."""

    def authorise(self, verb: str, name: str, *, actor: Actor) -> Drill: ...

    def fired_by_hand(
        self, name: str, execution: Execution, *, actor: Actor, report: bool = False
    ) -> None: ...


class Outcome(StrEnum):
    DRY_RUN = "dry_run"
    CONFIRM = "confirm"
    CHANGED = "changed"
    REPORTED = "reported"
    SUBMITTED = "submitted"


@dataclass(frozen=True)
class Request:
    """What someone asked for, as any front end received it.

    ``confirmed_hash`` is the hash of the plan the requester saw and confirmed (a Confirm
    button); ``assume_yes`` means they confirmed in advance (``--yes``, a drill that policy
    lets run, a webhook). With neither, the answer is the plan to show (``CONFIRM``).
    """

    runbook: str
    params: dict[str, Any]
    actor: Actor
    channel: str | None = None
    reason: str | None = None
    incident: str | None = None
    break_glass: bool = False
    dry_run: bool = False
    confirmed_hash: str | None = None
    assume_yes: bool = False
    #: The drill this request runs (schedules.yaml's name): set by the scheduler's fire and
    #: by ``drills.run``; a person's drill run is authorised, recorded and announced here.
    drill: str | None = None
    #: What set the request off (a drill's fire, an alert, an incident's Run button); None:
    #: its drill, else its requester (``Trigger.of``).
    trigger: Trigger | None = None


@dataclass
class RequestResult:
    outcome: Outcome
    plan: Plan
    gate: Gate
    prepared: Prepared
    execution: Execution | None = None
    #: For a dry run: why the real request would be refused now (None: it would be accepted).
    would_refuse: str | None = None
    break_glass: bool = False

    @property
    def approvals(self) -> int:
        """Approvals the request needs (none with break-glass: it bypasses them)."""
        return 0 if self.break_glass else self.gate.required

    @property
    def dry_run_verdict(self) -> str:
        """For a dry run, what the real request would meet now, in words: refused and why, or
        allowed and then run at once or wait for approvals (from whom, under which rule)."""
        if self.would_refuse:
            return f"the real request would be refused now: {self.would_refuse}"
        if self.plan.read_only:
            return "the real request would be allowed now (a read-only report: no approval)"
        gate = self.gate
        if self.break_glass:
            return (
                f"the real request would be allowed now and run at once: break-glass bypasses "
                f"the {gate.required} approval(s) of policy.yaml {gate.rule}, reviewed afterwards"
            )
        if self.approvals == 0:
            return (
                "the real request would be allowed now and run without approval: "
                f"policy.yaml {gate.rule}"
            )
        who = ", ".join(gate.approver_groups) or "anyone"
        return (
            f"the real request would be allowed now, then wait for {gate.required} approval(s) "
            f"from {who}: policy.yaml {gate.rule}"
        )


class Requests:
    """The one request path, and its verbs: prepare (the planner's), dry run, preflight,
    submit. Per request the gate is computed once and preflight runs once."""

    def __init__(
        self,
        *,
        planner: Planner,
        journal: Journal,
        locks: Locks,
        runner: Runner,
        policy: ConfigPolicy,
        store: Store,
        audit: AuditLog,
        clock: Clock,
        drill_runs: Callable[[], DrillRuns] | None,
    ) -> None:
        self._planner = planner
        self._journal = journal
        self._locks = locks
        self._runner = runner
        self._policy = policy
        self._store = store
        self._audit = audit
        self._clock = clock
        self._drill_runs = drill_runs

    def _gate(self, plan: Plan) -> Gate:
        return self._policy.gate(plan.runbook, plan.environment, read_only=plan.read_only)

    def _permission(
        self, request: Request, gate: Gate, *, runbook: str, environment: str
    ) -> Refusal | None:
        """Whether the requester may request ``runbook`` in ``environment`` from where they
        asked (``ConfigPolicy.permission_refusal``): the real request's check before planning,
        and the dry run's verdict."""
        return self._policy.permission_refusal(
            request.actor,
            gate,
            runbook=runbook,
            environment=environment,
            channel=request.channel,
            break_glass=request.break_glass,
        )

    def handle(self, request: Request, *, prepared: Prepared | None = None) -> RequestResult:
        """Take one request through validation, policy, planning and submission.

        ``prepared`` is a plan this process computed and showed a moment ago for the same
        request (the terminal's y/N question): it is submitted as shown, without planning
        again; ``Engine.start`` re-plans before the first step all the same.
        """
        if request.break_glass:
            require_break_glass_context(request.reason, request.incident)
        drills = self._drills(request)
        gates: list[Gate] = []

        def permitted(spec: RunbookSpec[Any], params: RunbookParams) -> None:
            # Before planning reads live state: a person who may not request this is told
            # so first (audited), and reads nothing. A dry run plans all the same (it is
            # read-only) and its verdict says the real request would be refused.
            gate = self._policy.gate(spec.name, params.environment, read_only=spec.read_only)
            gates.append(gate)
            if request.dry_run or spec.read_only:
                return
            refusal = self._permission(
                request, gate, runbook=spec.name, environment=params.environment
            )
            if refusal:
                self._refuse(
                    refusal,
                    target=request_target(spec, params),
                    params=params.model_dump(mode="json"),
                    actor=request.actor,
                    reason=request.reason,
                    incident=request.incident,
                    channel=request.channel,
                    break_glass=request.break_glass,
                )

        if prepared is None or prepared.plan.hash != request.confirmed_hash:
            prepared = self._planner.prepare(
                request.runbook,
                request.params,
                actor=request.actor,
                break_glass=request.break_glass,
                preview=request.dry_run,
                before_planning=permitted,
            )
        plan = prepared.plan
        gate = gates[0] if gates else self._gate(plan)

        def result(outcome: Outcome, **extra: Any) -> RequestResult:
            return RequestResult(
                outcome, plan, gate, prepared, break_glass=request.break_glass, **extra
            )

        if request.dry_run:
            self.dry_run(prepared, actor=request.actor, reason=request.reason)
            return result(Outcome.DRY_RUN, would_refuse=self._would_refuse(prepared, gate, request))
        if plan.read_only:
            # A report keeps its reason and incident too (a drill's name, the incident it
            # serves). Policy refuses no report (``preflight`` lets read-only plans through).
            execution = self._submit(
                prepared,
                gate,
                actor=request.actor,
                reason=request.reason,
                incident=request.incident,
                channel=request.channel,
                drill=request.drill,
                trigger=request.trigger,
                checked=True,
            )
            if drills is not None:
                drills.fired_by_hand(
                    request.drill or "", execution, actor=request.actor, report=True
                )
            return result(
                Outcome.REPORTED, execution=self._runner.start(execution.id, actor=request.actor)
            )
        self._check(
            prepared,
            gate,
            actor=request.actor,
            reason=request.reason,
            incident=request.incident,
            break_glass=request.break_glass,
            channel=request.channel,
        )
        if not request.assume_yes:
            if request.confirmed_hash is None:
                return result(Outcome.CONFIRM)
            if request.confirmed_hash != plan.hash:
                return result(Outcome.CHANGED)
        execution = self._submit(
            prepared,
            gate,
            actor=request.actor,
            reason=request.reason,
            incident=request.incident,
            break_glass=request.break_glass,
            channel=request.channel,
            drill=request.drill,
            trigger=request.trigger,
            checked=True,  # just above, at the same moment: once per request
        )
        if drills is not None:
            drills.fired_by_hand(request.drill or "", execution, actor=request.actor)
        return result(Outcome.SUBMITTED, execution=execution)

    def _drills(self, request: Request) -> DrillRuns | None:
        """For a person's drill run (``drills.run``): the scheduler that records and announces
        it, once ``drills.operators`` allowed it; None for any other request (the scheduler
        records its own fires)."""
        if request.drill is None or request.actor.origin == Origin.SCHEDULER:
            return None
        if self._drill_runs is None:
            raise InvalidInput(
                f"drill {request.drill}: this engine runs no drills by hand",
                hint=(
                    "build the engine with runbooks.engine.wiring (it gives the engine its drills)"
                ),
            )
        drills = self._drill_runs()
        drill = drills.authorise("run", request.drill, actor=request.actor)
        if drill.runbook != request.runbook:
            raise InvalidInput(
                f"drill {drill.name} runs {drill.runbook}, not {request.runbook}",
                hint=f"drills.run {drill.name}",
            )
        return drills

    def _would_refuse(self, prepared: Prepared, gate: Gate, request: Request) -> str | None:
        """What policy would say to the real request now, without auditing a refusal."""
        plan = prepared.plan
        if plan.read_only:
            return None
        # In the real request's order: the person's permission (checked before planning),
        # then the planner's (a window not open yet, in this preview), then the moment.
        permission = self._permission(
            request, gate, runbook=plan.runbook, environment=plan.environment
        )
        if permission is not None:
            return permission.message
        if plan.refused_now:
            return "; ".join(plan.refused_now)
        try:
            return self._policy.request_refusal(
                request.actor,
                gate,
                runbook=plan.runbook,
                environment=plan.environment,
                channel=request.channel,
                break_glass=request.break_glass,
                now=self._clock.now(),
            )
        except RunbookError as exc:
            return exc.message

    def dry_run(self, prepared: Prepared, *, actor: Actor, reason: str | None = None) -> Plan:
        """Record that a plan was shown without being submitted."""
        reason = clean_reason(reason)
        self._audit.record(
            "request.dry_run",
            actor=actor,
            outcome="planned",
            target=plan_target(prepared.plan),
            params=prepared.plan.params,
            reason=reason,
            detail={"plan_hash": prepared.plan.hash, "steps": len(prepared.plan.steps)},
        )
        return prepared.plan

    def submit(
        self,
        prepared: Prepared,
        *,
        actor: Actor,
        reason: str | None = None,
        incident: str | None = None,
        break_glass: bool = False,
        channel: str | None = None,
        drill: str | None = None,
        trigger: Trigger | None = None,
    ) -> Execution:
        """Create an execution for the plan the requester saw (and thereby confirmed).

        ``drill`` names the drill this is a run of (the scheduler's fire or ``drills.run``);
        ``trigger`` what set the request off (by default: its drill, else its requester).

        Refuses (audited) when policy forbids this person, front end, channel or moment.
        Break-glass skips the approvals where policy allows it, needs a reason and an incident
        id, and opens a review item that someone else must acknowledge.
        """
        return self._submit(
            prepared,
            self._gate(prepared.plan),
            actor=actor,
            reason=reason,
            incident=incident,
            break_glass=break_glass,
            channel=channel,
            drill=drill,
            trigger=trigger,
            checked=False,
        )

    def _submit(
        self,
        prepared: Prepared,
        gate: Gate,
        *,
        actor: Actor,
        reason: str | None,
        incident: str | None,
        break_glass: bool = False,
        channel: str | None,
        drill: str | None,
        trigger: Trigger | None,
        checked: bool,
    ) -> Execution:
        """``submit`` under ``gate``; ``checked``: preflight already passed for this request."""
        plan = prepared.plan
        reason = clean_reason(reason)
        incident = (incident or "").strip() or None
        now = self._clock.now()
        if break_glass:
            require_break_glass_context(reason, incident)
        if not checked:
            self._check(
                prepared,
                gate,
                actor=actor,
                reason=reason,
                incident=incident,
                break_glass=break_glass,
                channel=channel,
            )
        trigger = trigger or Trigger.of(actor, drill=drill, at=now)
        execution = Execution(
            id=new_execution_id(),
            plan=plan,
            state=State.AWAITING_APPROVAL,
            requester=actor,
            created_at=now,
            updated_at=now,
            reason=reason,
            incident=incident,
            break_glass=break_glass,
            required_approvals=gate.required,
            approver_groups=list(gate.approver_groups),
            expires_at=now + gate.expiry if gate.required else None,
            confirmed_hash=plan.hash,
            steps=step_records(plan),
            drill=drill,
            trigger=trigger,
        )
        for _ in range(ID_CLASH_TRIES):
            try:
                execution.steps = step_records(plan, execution.id)
                self._locks.acquire(plan.locks, execution, actor=actor)
                self._store.create_execution(execution)
                break
            except ConcurrentUpdate:  # id clash: draw another
                for key in plan.locks:
                    self._store.release_lock(key, execution.id)
                execution.id = new_execution_id()
        else:
            raise ConcurrentUpdate(f"no free execution id after {ID_CLASH_TRIES} tries")
        count_transition(self._store, plan.runbook, plan.environment, str(execution.state))
        self._audit.record(
            "request",
            actor=actor,
            outcome=str(execution.state),
            target=plan_target(plan),
            params=plan.params,
            reason=reason,
            execution_id=execution.id,
            incident=incident,
            detail={
                "plan_hash": plan.hash,
                "required_approvals": gate.required,
                "break_glass": break_glass,
                "drill": drill,
                "trigger": trigger.to_doc(),
            },
        )
        self._journal.publish(
            execution,
            "execution.created",
            break_glass=break_glass,
            channel=channel,
            drill=drill,
            trigger=trigger.to_doc(),
        )
        if break_glass:
            self._audit.record(
                "break_glass.used",
                actor=actor,
                outcome="approvals_bypassed",
                target=plan_target(plan),
                params=plan.params,
                reason=reason,
                execution_id=execution.id,
                incident=incident,
                detail={"bypassed_approvals": gate.required, "rule": gate.rule},
            )
            self._store.create_review(
                execution.id,
                {
                    "runbook": plan.runbook,
                    "environment": plan.environment,
                    "requester": actor.to_doc(),
                    "reason": reason,
                    "incident": incident,
                    "bypassed_approvals": gate.required,
                },
                now,
            )
            self._journal.transition(
                execution,
                State.APPROVED,
                actor=actor,
                detail={"why": "BREAK-GLASS: approvals bypassed", "break_glass": True},
            )
        elif gate_satisfied(execution):
            self._journal.transition(
                execution,
                State.APPROVED,
                actor=SYSTEM,
                detail={"why": "no approvals required", "rule": gate.rule},
            )
        return execution

    def preflight(
        self,
        prepared: Prepared,
        *,
        actor: Actor,
        reason: str | None = None,
        incident: str | None = None,
        break_glass: bool = False,
        channel: str | None = None,
    ) -> None:
        """Refuse (audited) what policy forbids this person, front end, channel or moment.

        ``submit`` calls it; a front end may call it before showing a Confirm button, so that
        nobody confirms a plan that would be refused.
        """
        if prepared.plan.read_only:
            return
        self._check(
            prepared,
            self._gate(prepared.plan),
            actor=actor,
            reason=reason,
            incident=incident,
            break_glass=break_glass,
            channel=channel,
        )

    def _check(
        self,
        prepared: Prepared,
        gate: Gate,
        *,
        actor: Actor,
        reason: str | None,
        incident: str | None,
        break_glass: bool,
        channel: str | None,
    ) -> None:
        """``preflight`` under the gate the caller computed."""
        plan = prepared.plan
        if plan.read_only:
            return
        refusal = self._policy.check_request(
            actor,
            gate,
            runbook=plan.runbook,
            environment=plan.environment,
            channel=channel,
            break_glass=break_glass,
            now=self._clock.now(),
        )
        if not refusal and gate.when_not_ready == "refuse" and plan.warnings and not break_glass:
            refusal = Refusal(
                RefusalKind.NOT_READY,
                f"{plan.runbook} in {plan.environment} is not ready ({len(plan.warnings)} open "
                f"readiness finding(s), shown with the plan) and policy ({gate.rule}) refuses "
                "it until they are fixed"
                + (" or under break-glass" if gate.break_glass_allowed else ""),
            )
        if refusal:
            self._refuse(
                refusal,
                target=plan_target(plan),
                params=plan.params,
                actor=actor,
                reason=reason,
                incident=incident,
                channel=channel,
                break_glass=break_glass,
            )

    def _refuse(
        self,
        refusal: Refusal,
        *,
        target: dict[str, Any],
        params: dict[str, Any],
        actor: Actor,
        reason: str | None,
        incident: str | None,
        channel: str | None,
        break_glass: bool,
    ) -> NoReturn:
        """Audit policy's refusal of a request (``request.refused``) and raise it."""
        self._audit.record(
            "request.refused",
            actor=actor,
            outcome="not_allowed",
            target=target,
            params=params,
            reason=clean_reason(reason),
            incident=incident,
            detail={
                "why": refusal.message,
                "kind": str(refusal.kind),
                "channel": channel,
                "break_glass": break_glass,
            },
        )
        raise Refused(refusal.message, kind=refusal.kind)
