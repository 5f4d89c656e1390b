"""The engine: turn a request into a plan, an execution, a gate, and a run with compensation.

Every transition is saved to the store, appended to the audit log and published as an event
before the next action. One process at a time runs an execution (a lease with heartbeat);
one execution at a time holds a lock key. A crashed process leaves a lease that expires, and
``resume`` continues at the first step not verified.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbooks.engine.audit import AuditLog
from runbooks.engine.background.readiness_watch import plan_warnings, summary_line
from runbooks.engine.clock import Clock, SystemClock, parse_iso
from runbooks.engine.config.loader import Config
from runbooks.engine.counters import count_transition
from runbooks.engine.errors import (
    ConcurrentUpdate,
    InvalidInput,
    NeedsPerson,
    RefusalKind,
    Refused,
)
from runbooks.engine.events import EventBus
from runbooks.engine.ids import new_execution_id, process_owner
from runbooks.engine.lifecycle.decisions import Decisions
from runbooks.engine.lifecycle.journal import SYSTEM_ACTOR, clean_reason, step_records
from runbooks.engine.lifecycle.locks import Locks
from runbooks.engine.lifecycle.runner import Runner
from runbooks.engine.models import (
    Actor,
    Execution,
    State,
    Trigger,
)
from runbooks.engine.params import RunbookParams, validate_params
from runbooks.engine.plan import (
    Adapters,
    Plan,
    PlanContext,
)
from runbooks.engine.policy import ConfigPolicy, Refusal
from runbooks.engine.readiness import Finding, ReadinessReport, select_checks
from runbooks.engine.registry import Registry, RunbookSpec
from runbooks.engine.store.base import Store

if TYPE_CHECKING:
    from runbooks.engine.lifecycle.requests import DrillRuns, Request, RequestResult


@dataclass(frozen=True)
class Prepared:
    """A validated request with its plan, ready to show and submit."""

    spec: RunbookSpec[Any]
    params: RunbookParams
    plan: Plan


class Engine(Locks, Decisions, Runner):
    """What every front end and the scheduler share: the facade over the engine's parts."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        registry: Registry,
        audit: AuditLog,
        clock: Clock | None = None,
        policy: ConfigPolicy | None = None,
        adapters_factory: Callable[[], Adapters] = Adapters,
        state_dir: Path,
        state_description: str = "",
        lease_ttl: float = 30.0,
        owner: str | None = None,
        drill_runs: Callable[[Engine], DrillRuns] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.audit = audit
        self.clock = clock or SystemClock()
        self.policy = policy or ConfigPolicy(config)
        self.events = EventBus(store, self.clock)
        self._adapters_factory = adapters_factory
        self._adapters: Adapters | None = None
        self.state_dir = state_dir
        self.state_description = state_description or store.description
        self.lease_ttl = lease_ttl
        self.owner = owner or process_owner()
        #: A person's drill run on the request path (``requesters.drills.drill_runs``; the
        #: composer passes it: the facade does not import the requesters above it).
        self.drill_runs = drill_runs
        #: Executions a thread of this process is driving now. A lease claim by our own
        #: owner succeeds ("already ours"), so this is what keeps a second thread out.
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()

    @property
    def adapters(self) -> Adapters:
        if self._adapters is None:
            self._adapters = self._adapters_factory()
        return self._adapters

    def close(self) -> None:
        """Release the adapters' connections (the store is the runtime's to close)."""
        if self._adapters is not None:
            self._adapters.close()
            self._adapters = None

    def _plan(
        self,
        spec: RunbookSpec[Any],
        params: RunbookParams,
        *,
        break_glass: bool = False,
        preview: bool = False,
        automatic: bool = False,
    ) -> Plan:
        env = self.config.environment(params.environment)
        ctx = PlanContext(
            config=self.config,
            env=env,
            params=params,
            clock=self.clock,
            adapters=self.adapters,
            state_dir=self.state_dir,
            break_glass=break_glass,
            history=self._history,
            preview=preview,
            automatic=automatic,
            readiness=lambda: summary_line(
                self.store,
                params.environment,
                now=self.clock.now(),
                interval=self.config.schedules.readiness.interval,
            ),
        )
        draft = spec.make_plan(ctx)
        region = getattr(params, "region", None) or None
        return Plan(
            runbook=spec.name,
            environment=params.environment,
            tier=env.tier,
            region=region,
            lock_key=spec.lock_key(params),
            locks=spec.lock_keys(params),
            params=params.model_dump(mode="json"),
            steps=[step.to_spec() for step in draft.steps],
            summary=draft.summary or spec.summary,
            notes=list(draft.notes),
            read_only=spec.read_only,
            config_hash=self.config.environment_hash(params.environment),
            warnings=[]
            if spec.read_only
            else plan_warnings(self.store, params.environment, spec.name),
        )

    def prepare(
        self,
        name: str,
        raw_params: dict[str, Any],
        *,
        actor: Actor,
        break_glass: bool = False,
        preview: bool = False,
    ) -> Prepared:
        """Validate parameters and compute the plan from live state; change nothing.

        ``preview`` (a dry run) lets planners describe what is not possible right now (a
        maintenance window that is not open) instead of refusing. Invalid input is audited
        as a rejected request and raised as InvalidInput.
        """
        try:
            spec = self.registry.get(name)
            params = validate_params(spec.params, raw_params, self.config)
            plan = self._plan(
                spec, params, break_glass=break_glass, preview=preview, automatic=actor.automatic
            )
            return Prepared(spec, params, plan)
        except InvalidInput as exc:
            self.audit.record(
                "request.rejected",
                actor=actor,
                outcome="invalid_input",
                target={"runbook": name},
                params=raw_params,
                detail={"error": exc.message},
            )
            raise
        except NeedsPerson as exc:
            # An automatic requester's refusal is a decision someone must be able to find.
            self.audit.record(
                "request.refused",
                actor=actor,
                outcome=exc.code,
                target={"runbook": name},
                params=raw_params,
                detail={"error": exc.message},
            )
            raise

    def readiness(
        self, *, actor: Actor, environment: str | None = None, runbook: str | None = None
    ) -> ReadinessReport:
        """Run the runbooks' readiness checks (one runbook's, or all) against live state in
        one environment (or all), read-only; audited as ``readiness.checked``.

        For people of policy.yaml (any of them: it only reads, and says what would fail) and
        the bot's own watch; anyone else is refused, audited as ``readiness.refused``.
        """
        if not actor.automatic and actor.id not in self.config.policy.people:
            self.audit.record(
                "readiness.refused",
                actor=actor,
                outcome="not_allowed",
                target={"environment": environment or "*", "runbook": runbook or "*"},
                detail={"why": f"{actor.id} is not a person of policy.yaml"},
            )
            raise Refused(f"{actor.name} may not check readiness: not a person of policy.yaml")
        names = [environment] if environment else self.config.environment_names()
        checks = select_checks(self.registry.checks, runbook=runbook, known=self.registry.names())
        findings: list[Finding] = []
        shared = [c for c in checks if c.scope == "installation"]
        for index, name in enumerate(names):
            params = validate_params(RunbookParams, {"environment": name}, self.config)
            ctx = PlanContext(
                config=self.config,
                env=self.config.environment(name),
                params=params,
                clock=self.clock,
                adapters=self.adapters,
                state_dir=self.state_dir,
                history=self._history,
                installed_at=self._installed_at,
            )
            for check in checks if index == 0 else [c for c in checks if c not in shared]:
                findings.extend(check.run(ctx))
        report = ReadinessReport(self.clock.now(), tuple(findings))
        self.audit.record(
            "readiness.checked",
            actor=actor,
            outcome="ready" if report.ready else "findings",
            target={"environment": environment or "*", "runbook": runbook or "*"},
            detail={
                "checked": len(report.findings),
                "problems": [f"{f.key}: {f.detail}" for f in report.problems][:50],
            },
        )
        return report

    def _installed_at(self) -> float | None:
        """When this installation started: its first audit record (None before one)."""
        rows = self.store.iter_audit()
        try:
            first = next(rows, None)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
        return None if first is None else parse_iso(str(json.loads(first.body)["time"]))

    def request(self, request: Request, *, prepared: Prepared | None = None) -> RequestResult:
        """The one request path for every front end (see ``runbooks.engine.lifecycle.requests``)."""
        from runbooks.engine.lifecycle.requests import handle

        return handle(self, request, prepared=prepared)

    def dry_run(self, prepared: Prepared, *, actor: Actor, reason: str | None = None) -> Plan:
        """Record that a plan was shown without being submitted."""
        reason = clean_reason(reason)
        self.audit.record(
            "request.dry_run",
            actor=actor,
            outcome="planned",
            target=self._target(prepared.plan),
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
        plan = prepared.plan
        reason = clean_reason(reason)
        incident = (incident or "").strip() or None
        gate = self.policy.gate(plan.runbook, plan.environment, read_only=plan.read_only)
        now = self.clock.now()
        if break_glass and not (reason and incident):
            raise InvalidInput(
                "--break-glass needs --reason TEXT and --incident ID (the "
                "PagerDuty incident this emergency belongs to)"
            )
        self.preflight(
            prepared,
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
        for _ in range(20):
            try:
                self._acquire_locks(plan.locks, execution, actor=actor)
                self.store.create_execution(execution)
                break
            except ConcurrentUpdate:  # id clash: draw another
                for key in plan.locks:
                    self.store.release_lock(key, execution.id)
                execution.id = new_execution_id()
        count_transition(self.store, plan.runbook, plan.environment, str(execution.state))
        self.audit.record(
            "request",
            actor=actor,
            outcome=str(execution.state),
            target=self._target(plan),
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
        self._publish(
            execution,
            "execution.created",
            break_glass=break_glass,
            channel=channel,
            drill=drill,
            trigger=trigger.to_doc(),
        )
        if break_glass:
            self.audit.record(
                "break_glass.used",
                actor=actor,
                outcome="approvals_bypassed",
                target=self._target(plan),
                params=plan.params,
                reason=reason,
                execution_id=execution.id,
                incident=incident,
                detail={"bypassed_approvals": gate.required, "rule": gate.rule},
            )
            self.store.create_review(
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
            self._transition(
                execution,
                State.APPROVED,
                actor=actor,
                detail={"why": "BREAK-GLASS: approvals bypassed", "break_glass": True},
            )
        elif self._gate_satisfied(execution):
            self._transition(
                execution,
                State.APPROVED,
                actor=SYSTEM_ACTOR,
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
        plan = prepared.plan
        if plan.read_only:
            return
        gate = self.policy.gate(plan.runbook, plan.environment, read_only=plan.read_only)
        refusal = self.policy.check_request(
            actor,
            gate,
            runbook=plan.runbook,
            environment=plan.environment,
            channel=channel,
            break_glass=break_glass,
            now=self.clock.now(),
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
            self.audit.record(
                "request.refused",
                actor=actor,
                outcome="not_allowed",
                target=self._target(plan),
                params=plan.params,
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
