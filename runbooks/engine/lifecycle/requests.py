"""The one request path every requester takes: CLI, Slack, the scheduler, webhooks.

A front end translates what it received into a ``Request`` and calls ``Engine.request``; the
engine validates, plans from live state, applies policy, and either answers with the plan to
show (``CONFIRM``: nothing stored), the newer plan when the live state moved since the
requester saw one (``CHANGED``), a dry run, the report of a read-only runbook it just ran
(``REPORTED``), or the submitted execution (``SUBMITTED``). The front end renders the answer
and decides nothing: refusals are raised (and audited) here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from runbooks.engine.errors import InvalidInput, RunbookError
from runbooks.engine.models import Actor, Execution, Trigger

if TYPE_CHECKING:
    from runbooks.engine.config.schedules import Drill
    from runbooks.engine.engine import Engine, Prepared
    from runbooks.engine.plan import Plan
    from runbooks.engine.policy import Gate


class DrillRuns(Protocol):
    """What the request path needs of the drills (``requesters.drills.DrillScheduler``, given
    to the engine by its composer as ``Engine(drill_runs=...)``: the lifecycle does not import
    the requesters above it)."""

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


def handle(engine: Engine, request: Request, *, prepared: Prepared | None = None) -> RequestResult:
    """Take one request through validation, policy, planning and submission.

    ``prepared`` is a plan this process computed and showed a moment ago for the same
    request (the terminal's y/N question): it is submitted as shown, without planning again;
    ``Engine.start`` re-plans before the first step all the same.
    """
    if request.break_glass and not (
        (request.reason or "").strip() and (request.incident or "").strip()
    ):
        raise InvalidInput(
            "--break-glass needs --reason TEXT and --incident ID (the PagerDuty incident "
            "this emergency belongs to)"
        )
    drills = _drills(engine, request)
    if prepared is None or prepared.plan.hash != request.confirmed_hash:
        prepared = engine.prepare(
            request.runbook,
            request.params,
            actor=request.actor,
            break_glass=request.break_glass,
            preview=request.dry_run,
        )
    plan = prepared.plan
    gate = engine.policy.gate(plan.runbook, plan.environment, read_only=plan.read_only)

    def result(outcome: Outcome, **extra: Any) -> RequestResult:
        return RequestResult(
            outcome, plan, gate, prepared, break_glass=request.break_glass, **extra
        )

    if request.dry_run:
        engine.dry_run(prepared, actor=request.actor, reason=request.reason)
        return result(Outcome.DRY_RUN, would_refuse=_would_refuse(engine, prepared, request))
    if plan.read_only:
        # A report keeps its reason and incident too (a drill's name, the incident it serves).
        execution = engine.submit(
            prepared,
            actor=request.actor,
            reason=request.reason,
            incident=request.incident,
            channel=request.channel,
            drill=request.drill,
            trigger=request.trigger,
        )
        if drills is not None:
            drills.fired_by_hand(request.drill or "", execution, actor=request.actor, report=True)
        return result(Outcome.REPORTED, execution=engine.start(execution.id, actor=request.actor))
    engine.preflight(
        prepared,
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
    execution = engine.submit(
        prepared,
        actor=request.actor,
        reason=request.reason,
        incident=request.incident,
        break_glass=request.break_glass,
        channel=request.channel,
        drill=request.drill,
        trigger=request.trigger,
    )
    if drills is not None:
        drills.fired_by_hand(request.drill or "", execution, actor=request.actor)
    return result(Outcome.SUBMITTED, execution=execution)


def _drills(engine: Engine, request: Request) -> DrillRuns | None:
    """For a person's drill run (``drills.run``): the scheduler that records and announces it,
    once ``drills.operators`` allowed it; None for any other request (the scheduler records
    its own fires)."""
    if request.drill is None or request.actor.origin == "scheduler":
        return None
    if engine.drill_runs is None:
        raise InvalidInput(
            f"drill {request.drill}: this engine runs no drills by hand",
            hint="build the engine with runbooks.engine.wiring (it gives the engine its drills)",
        )
    drills = engine.drill_runs(engine)
    drill = drills.authorise("run", request.drill, actor=request.actor)
    if drill.runbook != request.runbook:
        raise InvalidInput(
            f"drill {drill.name} runs {drill.runbook}, not {request.runbook}",
            hint=f"drills.run {drill.name}",
        )
    return drills


def _would_refuse(engine: Engine, prepared: Prepared, request: Request) -> str | None:
    """What policy would say to the real request now, without auditing a refusal."""
    plan = prepared.plan
    if plan.read_only:
        return None
    gate = engine.policy.gate(plan.runbook, plan.environment, read_only=False)
    try:
        return engine.policy.request_refusal(
            request.actor,
            gate,
            runbook=plan.runbook,
            environment=plan.environment,
            channel=request.channel,
            break_glass=request.break_glass,
            now=engine.clock.now(),
        )
    except RunbookError as exc:
        return exc.message
