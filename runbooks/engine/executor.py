"""The engine: turn a request into a plan, an execution, a gate, and a run with compensation.

Every transition is saved to the store, appended to the audit log and published as an event
before the next action. One process at a time runs an execution (a lease with heartbeat);
one execution at a time holds a lock key. A crashed process leaves a lease that expires, and
``resume`` continues at the first step not verified.
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from runbooks.engine.approvals import ConfigPolicy
from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock, SystemClock, format_duration
from runbooks.engine.config import Config
from runbooks.engine.errors import (
    Cancelled,
    ConcurrentUpdate,
    InvalidInput,
    LeaseHeld,
    LeaseLost,
    LockHeld,
    NotFound,
    Refused,
    RunbookError,
)
from runbooks.engine.events import EventBus
from runbooks.engine.ids import new_execution_id, process_owner
from runbooks.engine.models import (
    TERMINAL_STATES,
    TRANSITIONS,
    Actor,
    Approval,
    Execution,
    State,
    StepRecord,
    StepStatus,
)
from runbooks.engine.params import RunbookParams, validate_params
from runbooks.engine.plan import (
    Adapters,
    PastRun,
    Plan,
    PlanContext,
    RunContext,
    Step,
    diff_plans,
)
from runbooks.engine.redact import redact_text
from runbooks.engine.registry import Registry, RunbookSpec
from runbooks.engine.store.base import Store

if TYPE_CHECKING:
    from runbooks.engine.requests import Request, RequestResult

SYSTEM_ACTOR = Actor(id="runbook-bot", name="runbook-bot", origin="system")


def clean_reason(reason: str | None) -> str | None:
    """Reasons are free text people paste into: mask anything credential-shaped at once."""
    return redact_text(reason.strip()) or None if reason else None


CANCEL_POLL_S = 0.5
DECISION_RETRIES = 50
#: How long a lock holder whose execution is not stored yet is presumed to be mid-submit.
LOCK_UNBORN_CHECKS = 20
LOCK_UNBORN_WAIT_S = 0.05
T = TypeVar("T")
_log = logging.getLogger(__name__)


def step_records(plan: Plan) -> list[StepRecord]:
    """Fresh (pending) step records for every step of a plan."""
    return [
        StepRecord(
            index=i, kind=s["kind"], description=s["description"], reversible=s["reversible"]
        )
        for i, s in enumerate(plan.steps)
    ]


@dataclass(frozen=True)
class Prepared:
    """A validated request with its plan, ready to show and submit."""

    spec: RunbookSpec[Any]
    params: RunbookParams
    plan: Plan


class _Heartbeat:
    """Renew an execution's lease from a background thread; note if it is lost."""

    def __init__(self, store: Store, execution_id: str, owner: str, ttl: float, clock: Clock):
        self._store, self._id, self._owner, self._ttl, self._clock = (
            store,
            execution_id,
            owner,
            ttl,
            clock,
        )
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._loop, name=f"lease-{execution_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(max(0.05, self._ttl / 3)):
            try:
                if not self._store.renew_lease(
                    self._id, self._owner, self._clock.now() + self._ttl
                ):
                    self.lost = True
                    return
            except Exception:  # a transient store error: try again next beat
                _log.warning("lease renewal failed for %s; retrying", self._id, exc_info=True)


class Engine:
    """What every front end and the scheduler share."""

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
        #: Executions a thread of this process is driving now. A lease claim by our own
        #: owner succeeds ("already ours"), so this is what keeps a second thread out.
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()

    # planning -----------------------------------------------------------------------------
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
        self, spec: RunbookSpec[Any], params: RunbookParams, *, break_glass: bool = False
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
        )

    def prepare(
        self, name: str, raw_params: dict[str, Any], *, actor: Actor, break_glass: bool = False
    ) -> Prepared:
        """Validate parameters and compute the plan from live state; change nothing.

        Invalid input is audited as a rejected request and raised as InvalidInput.
        """
        try:
            spec = self.registry.get(name)
            params = validate_params(spec.params, raw_params, self.config)
            return Prepared(spec, params, self._plan(spec, params, break_glass=break_glass))
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

    def request(self, request: Request, *, prepared: Prepared | None = None) -> RequestResult:
        """The one request path for every front end (see ``runbooks.engine.requests``)."""
        from runbooks.engine.requests import handle

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

    # submission and approvals -------------------------------------------------------------
    def submit(
        self,
        prepared: Prepared,
        *,
        actor: Actor,
        reason: str | None = None,
        incident: str | None = None,
        break_glass: bool = False,
        channel: str | None = None,
    ) -> Execution:
        """Create an execution for the plan the requester saw (and thereby confirmed).

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
            },
        )
        self._publish(execution, "execution.created", break_glass=break_glass, channel=channel)
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
                detail={"why": "no approvals required"},
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
        refusal = self.policy.request_refusal(
            actor,
            gate,
            runbook=plan.runbook,
            environment=plan.environment,
            channel=channel,
            break_glass=break_glass,
            now=self.clock.now(),
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
                detail={"why": refusal, "channel": channel, "break_glass": break_glass},
            )
            raise Refused(refusal)

    def _acquire_locks(self, keys: list[str], execution: Execution, *, actor: Actor) -> None:
        """Take every key of the lock set, or none: overlapping sets exclude each other.

        ``ENV:*`` overlaps every key of ENV. Each side takes its own keys first and then
        looks for the other (the wildcard holder for ``ENV:*``, or any ``ENV:`` key), so of
        two overlapping requests racing, at least one sees the other and steps back.
        """
        taken: list[str] = []
        try:
            for key in sorted(keys):
                self._acquire_lock(key, execution, actor=actor)
                taken.append(key)
            for key in keys:
                environment, _, resource = key.partition(":")
                if resource == "*":
                    others = self.store.lock_holders(f"{environment}:")
                else:
                    wildcard = f"{environment}:*"
                    holder = self.store.lock_holder(wildcard)
                    others = {wildcard: holder} if holder else {}
                for other_key, holder in sorted(others.items()):
                    if holder == execution.id:
                        continue
                    held = self.store.get_execution(holder)
                    if held is not None:
                        self._expire_if_due(held)
                        if held.terminal:
                            continue  # finished: its keys are on their way out
                    # A holder not stored yet is mid-submit (or died there): treating it as
                    # live is what keeps two racing requests from both going ahead.
                    raise self._lock_refusal(other_key, holder, held, execution, actor=actor)
        except BaseException:
            for key in taken:
                self.store.release_lock(key, execution.id)
            raise

    def _acquire_lock(self, key: str, execution: Execution, *, actor: Actor) -> None:
        unborn_checks = 0
        for _ in range(40):
            holder = self.store.try_lock(key, execution.id)
            if holder is None:
                return
            held = self.store.get_execution(holder)
            if held is not None:
                # Expiring a stale holder releases its lock; the next try then takes it.
                self._expire_if_due(held)
            elif unborn_checks < LOCK_UNBORN_CHECKS:
                # A concurrent submit takes the lock just before it stores its execution: give
                # it a moment. Only a holder still missing after that is an orphan (a process
                # died between the two writes) whose lock may be taken over.
                unborn_checks += 1
                time.sleep(LOCK_UNBORN_WAIT_S)
                continue
            if held is None or held.terminal:
                if self.store.steal_lock(key, execution.id, holder):
                    return
                continue  # released or taken meanwhile: look again
            break
        else:
            raise Refused(f"{key} kept changing hands; try again")
        raise self._lock_refusal(key, holder, held, execution, actor=actor)

    def _lock_refusal(
        self,
        key: str,
        holder: str,
        held: Execution | None,
        execution: Execution,
        *,
        actor: Actor,
    ) -> LockHeld:
        state = (
            f"{held.state}, requested by {held.requester.name}"
            if held
            else "being submitted right now; try again in a moment"
        )
        if held is not None and held.runbook != execution.runbook:
            state = f"{held.runbook}, {state}"
        hint = f"see `runs.show {holder}`"
        if held is not None and held.state in {State.RUNNING, State.COMPENSATING}:
            lease = self.store.get_lease(holder)
            if lease is None or lease.until <= self.clock.now():
                hint = (
                    f"its process is gone: resume it with `runs.resume {holder}` or stop it "
                    f"with `runs.cancel {holder}`"
                )
        self.audit.record(
            "request.refused",
            actor=actor,
            outcome="lock_held",
            target=self._target(execution.plan),
            params=execution.plan.params,
            reason=execution.reason,
            detail={"lock": key, "holder": holder},
        )
        return LockHeld(f"{key} is locked by {holder} ({state})", holder=holder, hint=hint)

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
        """
        return self._retrying(lambda: self._approve(execution_id, actor=actor, plan_hash=plan_hash))

    def _approve(self, execution_id: str, *, actor: Actor, plan_hash: str | None) -> Execution:
        execution = self._load_for_decision(execution_id, actor=actor)
        gate = self.policy.gate(
            execution.runbook, execution.environment, read_only=execution.plan.read_only
        )
        # The approver groups were fixed when the request was made; the rest is current policy.
        gate = dataclasses.replace(
            gate, approver_groups=tuple(execution.approver_groups) or gate.approver_groups
        )
        refusal = None
        if actor.id == execution.requester.id:
            refusal = f"you requested {execution.id}; someone else must approve it"
        elif why := self.policy.approval_refusal(
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
            self.audit.record(
                "approval.refused",
                actor=actor,
                outcome="refused",
                execution_id=execution.id,
                target=self._target(execution.plan),
                detail={"why": refusal},
            )
            raise Refused(refusal)
        execution.approvals.append(
            Approval(
                actor=actor, decision="approved", plan_hash=execution.plan.hash, at=self.clock.now()
            )
        )
        if self._gate_satisfied(execution):
            # One write: the last approval and the transition land together or not at all.
            execution.state = State.APPROVED
            try:
                self._save(execution)
            except ConcurrentUpdate:
                execution.state = State.AWAITING_APPROVAL
                raise
            self._record_approval(execution, actor)
            self._after_transition(execution, State.AWAITING_APPROVAL, actor=actor)
        else:
            self._save(execution)
            self._record_approval(execution, actor)
        return execution

    def _record_approval(self, execution: Execution, actor: Actor) -> None:
        self.audit.record(
            "approval.granted",
            actor=actor,
            outcome="granted",
            execution_id=execution.id,
            target=self._target(execution.plan),
            detail={
                "plan_hash": execution.plan.hash,
                "count": len(execution.valid_approvals()),
                "required": execution.required_approvals,
            },
        )
        self._publish(execution, "approval.granted", approver=actor.name)

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
        if actor.id != execution.requester.id and not self.policy.member_of(
            actor, execution.approver_groups or ["*"]
        ):
            why = (
                f"{actor.name} may not deny {execution.runbook} in {execution.environment}; "
                f"approvers: {', '.join(execution.approver_groups)}"
            )
            self.audit.record(
                "approval.refused",
                actor=actor,
                outcome="refused",
                execution_id=execution.id,
                target=self._target(execution.plan),
                detail={"why": why},
            )
            raise Refused(why)
        execution.approvals.append(
            Approval(
                actor=actor,
                decision="denied",
                plan_hash=execution.plan.hash,
                at=self.clock.now(),
                reason=reason,
            )
        )
        execution.error = f"denied by {actor.name}: {reason}"
        self._transition(execution, State.DENIED, actor=actor, reason=reason)
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
        self._save(execution)
        self.audit.record(
            "request.confirmed",
            actor=actor,
            outcome="confirmed",
            execution_id=execution.id,
            detail={"plan_hash": plan_hash},
        )
        if self._gate_satisfied(execution):
            self._transition(execution, State.APPROVED, actor=actor)
        return execution

    def _load_for_decision(self, execution_id: str, *, actor: Actor) -> Execution:
        execution = self.get(execution_id)
        self._expire_if_due(execution)
        if execution.state != State.AWAITING_APPROVAL:
            raise Refused(f"{execution.id} is {execution.state}; it is not waiting for a decision")
        return execution

    def _gate_satisfied(self, execution: Execution) -> bool:
        return (
            execution.state == State.AWAITING_APPROVAL
            and execution.confirmed_hash == execution.plan.hash
            and len(execution.valid_approvals()) >= execution.required_approvals
        )

    def _expire_if_due(self, execution: Execution) -> bool:
        if (
            execution.state in {State.AWAITING_APPROVAL, State.APPROVED}
            and execution.expires_at is not None
            and self.clock.now() > execution.expires_at
        ):
            execution.error = "approval window expired before the run started"
            self._transition(execution, State.EXPIRED, actor=SYSTEM_ACTOR)
            return True
        return False

    def expire_due(self) -> list[str]:
        """Expire every pending request past its deadline (the bot runs this periodically)."""
        expired = []
        for execution in self.store.list_executions(
            limit=1000, states=[State.AWAITING_APPROVAL, State.APPROVED]
        ):
            try:
                if self._expire_if_due(execution):
                    expired.append(execution.id)
            except ConcurrentUpdate:
                continue
        return expired

    @contextmanager
    def hold(self, execution_id: str) -> Iterator[None]:
        """Hold the execution's lease while a requester waits for approval in this process.

        The bot starts approved executions that nobody holds; a waiting terminal holds its
        own, so exactly one process starts it. Released on exit (Ctrl-C included).
        """
        now = self.clock.now()
        if not self.store.claim_lease(execution_id, self.owner, now + self.lease_ttl, now):
            raise LeaseHeld(f"{execution_id} is held by another process")
        heartbeat = _Heartbeat(self.store, execution_id, self.owner, self.lease_ttl, self.clock)
        try:
            with heartbeat:
                yield
        finally:
            if not heartbeat.lost:
                self.store.release_lease(execution_id, self.owner)

    def startable(self) -> list[Execution]:
        """Approved executions that nobody is about to start (no live lease)."""
        now = self.clock.now()
        found = []
        for execution in self.store.list_executions(limit=1000, states=[State.APPROVED]):
            lease = self.store.get_lease(execution.id)
            if lease is None or lease.until <= now:
                found.append(execution)
        return found

    def reviews(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        """Break-glass review items, oldest first."""
        return self.store.list_reviews(open_only=open_only)

    def ack_review(self, execution_id: str, *, actor: Actor, note: str = "") -> None:
        """Close a break-glass review; the person who broke the glass cannot close it."""
        items = {r["execution_id"]: r for r in self.store.list_reviews(open_only=False)}
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
        reviewed = self.store.get_execution(execution_id)
        if reviewed is not None:
            why = self.policy.operator_refusal(
                "acknowledge the break-glass review of",
                actor,
                execution_id=execution_id,
                runbook=reviewed.runbook,
                environment=reviewed.environment,
                requester=SYSTEM_ACTOR,  # nobody is exempt: the requester was refused above
            )
            if why is not None:
                self.audit.record(
                    "break_glass.review_refused",
                    actor=actor,
                    outcome="not_allowed",
                    execution_id=execution_id,
                    target=self._target(reviewed.plan),
                    detail={"why": why},
                )
                raise Refused(why)
        if not self.store.ack_review(execution_id, actor.to_doc(), self.clock.now()):
            raise Refused(f"the review of {execution_id} was acknowledged just now by someone else")
        self.audit.record(
            "break_glass.reviewed",
            actor=actor,
            outcome="acknowledged",
            execution_id=execution_id,
            reason=clean_reason(note),
            incident=item["doc"].get("incident"),
            target={"runbook": item["doc"]["runbook"], "environment": item["doc"]["environment"]},
        )

    # running ------------------------------------------------------------------------------
    def start(self, execution_id: str, *, actor: Actor) -> Execution:
        """Run an approved execution in this process, re-planning first.

        If the live plan differs from the approved one, approvals are void and the execution
        returns to ``awaiting_approval`` with the new plan; nothing runs.
        """
        execution = self.get(execution_id)
        if self._expire_if_due(execution):
            raise Refused(
                f"{execution.id} expired: approvals must be given and the run started "
                "within the approval window"
            )
        if execution.state != State.APPROVED:
            raise Refused(
                f"{execution.id} is {execution.state}; only an approved execution can start"
            )
        spec = self.registry.get(execution.runbook)
        params = validate_params(spec.params, execution.plan.params, self.config)
        fresh = self._plan(spec, params, break_glass=execution.break_glass)
        if fresh.hash != execution.plan.hash and execution.plan.read_only:
            # Nothing was approved: a read-only report is simply the newer one.
            execution.plan = fresh
            execution.confirmed_hash = fresh.hash
            execution.steps = step_records(fresh)
        elif fresh.hash != execution.plan.hash:
            self._void_for_plan_change(execution, fresh)
            return execution
        if not self.store.claim_lease(
            execution.id, self.owner, self.clock.now() + self.lease_ttl, self.clock.now()
        ):
            raise LeaseHeld(f"{execution.id} is already being started by another process")
        try:
            execution.started_at = self.clock.now()
            self._transition(execution, State.RUNNING, actor=actor)
        except ConcurrentUpdate:
            self.store.release_lease(execution.id, self.owner)
            raise Refused(f"{execution.id} was started by someone else just now") from None
        return self._drive(execution, actor=actor)

    def _void_for_plan_change(self, execution: Execution, fresh: Plan) -> None:
        old = execution.plan
        for approval in execution.approvals:
            approval.void = True
        execution.plan = fresh
        execution.confirmed_hash = None
        execution.steps = step_records(fresh)
        changes = diff_plans(old, fresh)
        self._transition(
            execution,
            State.AWAITING_APPROVAL,
            actor=SYSTEM_ACTOR,
            detail={
                "why": "plan changed before the first step; approvals void",
                "old_plan_hash": old.hash,
                "new_plan_hash": fresh.hash,
                "changes": changes,
            },
            event_type="plan.changed",
        )

    def resume(self, execution_id: str, *, actor: Actor) -> Execution:
        """Continue a running execution whose process died, at the first step not verified.

        An approved execution that nobody started (its requester stopped waiting) is started.
        """
        execution = self.get(execution_id)
        self._authorise("resume", actor, execution)
        if execution.state == State.APPROVED:
            return self.start(execution_id, actor=actor)
        if self._stranded(execution):
            # Saved as failed with steps left to undo by an engine that died before it could
            # record ``compensating`` (older versions wrote the two states separately).
            pass
        elif execution.state not in {State.RUNNING, State.COMPENSATING}:
            raise Refused(
                f"{execution.id} is {execution.state}; only a running execution whose "
                "process died can be resumed"
            )
        now = self.clock.now()
        if self._driven_here(execution.id) or not self.store.claim_lease(
            execution.id, self.owner, now + self.lease_ttl, now
        ):
            lease = self.store.get_lease(execution.id)
            left = format_duration(max(0.0, lease.until - now)) if lease else "?"
            raise LeaseHeld(
                f"{execution.id} is being run by {lease.owner if lease else 'another process'} "
                f"(lease valid for {left} more)",
                hint="if that process is gone, wait for the lease to expire and resume again",
            )
        self.audit.record(
            "execution.resumed",
            actor=actor,
            outcome=str(execution.state),
            execution_id=execution.id,
            target=self._target(execution.plan),
            detail={"first_pending_step": self._first_pending(execution)},
        )
        self._publish(execution, "execution.resumed", by=actor.name)
        if self._stranded(execution):
            self._transition(execution, State.COMPENSATING, actor=actor)
        return self._drive(execution, actor=actor)

    def _stranded(self, execution: Execution) -> bool:
        """Failed, still holding its lock, with reversible steps not undone."""
        return (
            execution.state == State.FAILED
            and execution.ended_at is None
            and bool(self._to_undo(execution))
        )

    def resumable(self) -> list[Execution]:
        """Running (or stranded) executions whose lease has expired (their process died)."""
        now = self.clock.now()
        found = []
        for execution in self.store.list_executions(
            limit=1000, states=[State.RUNNING, State.COMPENSATING, State.FAILED]
        ):
            if execution.state == State.FAILED and not self._stranded(execution):
                continue
            lease = self.store.get_lease(execution.id)
            if lease is None or lease.until <= now:
                found.append(execution)
        return found

    def _authorise(self, verb: str, actor: Actor, execution: Execution) -> None:
        """Refuse (audited) a decision verb this person may not take on this execution."""
        why = self.policy.operator_refusal(
            verb,
            actor,
            execution_id=execution.id,
            runbook=execution.runbook,
            environment=execution.environment,
            requester=execution.requester,
        )
        if why is None:
            return
        self.audit.record(
            f"{verb}.refused",
            actor=actor,
            outcome="not_allowed",
            execution_id=execution.id,
            target=self._target(execution.plan),
            incident=execution.incident,
            detail={"why": why},
        )
        raise Refused(why)

    def cancel(self, execution_id: str, *, actor: Actor, reason: str = "") -> Execution:
        """Stop a request: at once if not started, else between steps or inside a wait."""
        execution = self.get(execution_id)
        self._authorise("cancel", actor, execution)
        if execution.terminal:
            raise Refused(f"{execution.id} already ended ({execution.state})")
        if execution.state in {State.AWAITING_APPROVAL, State.APPROVED}:
            execution.cancel_reason = reason or None
            self._transition(execution, State.CANCELLED, actor=actor, reason=reason)
            return execution
        self.store.request_cancel(
            execution.id, {"actor": actor.to_doc(), "reason": reason, "at": self.clock.now()}
        )
        self.audit.record(
            "execution.cancel_requested",
            actor=actor,
            outcome="requested",
            execution_id=execution.id,
            reason=reason,
            target=self._target(execution.plan),
        )
        self._publish(execution, "execution.cancel_requested", by=actor.name, reason=reason)
        now = self.clock.now()
        if self._driven_here(execution.id):
            return execution  # our own thread runs it and will see the request
        if self.store.claim_lease(execution.id, self.owner, now + self.lease_ttl, now):
            # Nobody is running it (the process died): compensate here and now.
            return self._drive(execution, actor=actor)
        return execution

    def _first_pending(self, execution: Execution) -> int | None:
        for record in execution.steps:
            if record.status != StepStatus.SUCCEEDED:
                return record.index + 1
        return None

    def _driven_here(self, execution_id: str) -> bool:
        with self._driving_lock:
            return execution_id in self._driving

    def _drive(self, execution: Execution, *, actor: Actor) -> Execution:
        """Run (or continue) steps while holding the lease; then compensate if needed."""
        with self._driving_lock:
            if execution.id in self._driving:
                raise LeaseHeld(f"{execution.id} is already running in this process")
            self._driving.add(execution.id)
        try:
            return self._drive_held(execution, actor=actor)
        finally:
            with self._driving_lock:
                self._driving.discard(execution.id)

    def _drive_held(self, execution: Execution, *, actor: Actor) -> Execution:
        steps = execution.plan.build_steps()
        spec = self.registry.get(execution.runbook)
        params = validate_params(spec.params, execution.plan.params, self.config)
        last_poll = [float("-inf")]
        heartbeat = _Heartbeat(self.store, execution.id, self.owner, self.lease_ttl, self.clock)

        def check_lease() -> None:
            if heartbeat.lost:
                raise LeaseLost(f"lost the lease on {execution.id}; another process took over")

        def check_cancelled() -> None:
            check_lease()
            now = self.clock.now()
            if now - last_poll[0] >= CANCEL_POLL_S:
                last_poll[0] = now
                request = self.store.get_cancel(execution.id)
                if request is not None:
                    execution.cancel_reason = request.get("reason") or None
                    raise Cancelled(f"cancelled by {request['actor']['name']}")

        ctx = RunContext(
            config=self.config,
            env=self.config.environment(execution.environment),
            params=params,
            clock=self.clock,
            adapters=self.adapters,
            state_dir=self.state_dir,
            execution_id=execution.id,
            started_at=execution.started_at or self.clock.now(),
            check_cancelled=check_cancelled,
            check_lease=check_lease,
            break_glass=execution.break_glass,
        )
        try:
            with heartbeat:
                if execution.state == State.RUNNING:
                    self._run_steps(execution, steps, ctx, actor=actor)
                if execution.state == State.COMPENSATING:
                    self._compensate(execution, steps, ctx, actor=actor)
        except LeaseLost:
            return execution  # another process owns it now; touch nothing
        finally:
            if not heartbeat.lost:
                self.store.release_lease(execution.id, self.owner)
        return execution

    def _run_steps(
        self, execution: Execution, steps: list[Step], ctx: RunContext, *, actor: Actor
    ) -> None:
        for record, step in zip(execution.steps, steps, strict=True):
            if record.status == StepStatus.SUCCEEDED:
                continue
            try:
                ctx.check_cancelled()
            except Cancelled as exc:
                self._after_stop(execution, State.CANCELLED, str(exc), actor=actor)
                return
            record.status = StepStatus.RUNNING
            record.started_at = self.clock.now()
            record.attempts += 1
            record.error = None
            self._step_transition(execution, record, "step.started", actor=actor)
            ctx.notes = []
            try:
                output = step.run(ctx)
                step.wait(ctx, self.clock.now() + step.timeout)
            except Cancelled as exc:
                record.status = StepStatus.CANCELLED
                record.ended_at = self.clock.now()
                record.error = str(exc)
                self._step_transition(execution, record, "step.cancelled", actor=actor)
                self._after_stop(execution, State.CANCELLED, str(exc), actor=actor)
                return
            except LeaseLost:
                raise
            except Exception as exc:
                message = (
                    exc.message
                    if isinstance(exc, RunbookError)
                    else (f"{type(exc).__name__}: {exc}")
                )
                record.status = StepStatus.FAILED
                record.ended_at = self.clock.now()
                record.output = [*ctx.notes]
                record.error = message
                self._step_transition(execution, record, "step.failed", actor=actor)
                self._after_stop(
                    execution,
                    State.FAILED,
                    f"step {record.index + 1} failed: {message}",
                    actor=actor,
                )
                return
            record.status = StepStatus.SUCCEEDED
            record.ended_at = self.clock.now()
            record.output = [line for line in [output, *ctx.notes] if line]
            self._step_transition(execution, record, "step.succeeded", actor=actor)
        execution.ended_at = self.clock.now()
        self._transition(execution, State.SUCCEEDED, actor=actor)

    def _to_undo(self, execution: Execution) -> list[StepRecord]:
        ran = {
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CANCELLED,
            StepStatus.UNDOING,
            StepStatus.UNDO_FAILED,
        }
        return [r for r in reversed(execution.steps) if r.status in ran and r.reversible]

    def _after_stop(self, execution: Execution, state: State, error: str, *, actor: Actor) -> None:
        execution.error = error
        compensate = bool(self._to_undo(execution))
        if compensate:
            # Straight from running to compensating in one write: a process that dies here
            # leaves an execution that resume (and the supervisor) will compensate. (Saving
            # ``failed`` first left a window in which a crash stranded done steps for good.)
            previous = execution.state
            execution.state = State.COMPENSATING
            self._save(execution)
            if state == State.FAILED:
                # The failure keeps its own audit record (written after the one save).
                self.audit.record(
                    "execution.failed",
                    actor=actor,
                    outcome=str(State.FAILED),
                    execution_id=execution.id,
                    target=self._target(execution.plan),
                    reason=execution.reason,
                    incident=execution.incident,
                    detail={"from": str(previous), "error": error, "then": "compensating"},
                )
            self._after_transition(
                execution,
                previous,
                actor=actor,
                detail={"because": "failed" if state == State.FAILED else "cancelled"},
            )
        elif state == State.FAILED:
            execution.ended_at = self.clock.now()
            self._transition(execution, State.FAILED, actor=actor)
        elif state == State.CANCELLED:
            execution.ended_at = self.clock.now()
            self._transition(execution, State.CANCELLED, actor=actor)

    def _compensate(
        self, execution: Execution, steps: list[Step], ctx: RunContext, *, actor: Actor
    ) -> None:
        failed = []
        # Undo is what a cancel asks for: its own waits must not see the stored cancel
        # request and abort themselves. Only a lost lease stops compensation.
        ctx.check_cancelled = ctx.check_lease
        for record in self._to_undo(execution):
            step = steps[record.index]
            record.status = StepStatus.UNDOING
            self._step_transition(execution, record, "step.undoing", actor=actor)
            ctx.notes = []
            try:
                output = step.undo(ctx)
            except Exception as exc:
                message = (
                    exc.message
                    if isinstance(exc, RunbookError)
                    else (f"{type(exc).__name__}: {exc}")
                )
                record.status = StepStatus.UNDO_FAILED
                record.error = f"undo failed: {message}"
                failed.append(record.index + 1)
                self._step_transition(execution, record, "step.undo_failed", actor=actor)
                continue
            record.status = StepStatus.UNDONE
            record.output = [*record.output, *[line for line in [output, *ctx.notes] if line]]
            self._step_transition(execution, record, "step.undone", actor=actor)
        execution.ended_at = self.clock.now()
        kept = [
            f"step {r.index + 1} ({r.description}) stays done: "
            f"{execution.plan.steps[r.index].get('irreversible_reason') or 'it cannot be undone'}"
            for r in execution.steps
            if r.status == StepStatus.SUCCEEDED and not r.reversible
        ]
        if kept:
            execution.error = f"{execution.error}; NOT UNDONE: {' | '.join(kept)}"
        if failed:
            execution.error = (
                f"{execution.error}; compensation failed at step(s) "
                f"{', '.join(map(str, failed))}: manual action needed"
            )
            self._transition(execution, State.COMPENSATION_FAILED, actor=actor)
        elif (execution.error or "").startswith("cancelled"):
            self._transition(execution, State.CANCELLED, actor=actor)
        else:
            self._transition(execution, State.COMPENSATED, actor=actor)

    # persistence helpers ------------------------------------------------------------------
    def get(self, execution_id: str) -> Execution:
        execution = self.store.get_execution(execution_id)
        if execution is None:
            raise NotFound(f"no execution {execution_id!r}; list them with `runs.list`")
        return execution

    def list(self, *, limit: int = 50, states: list[str] | None = None) -> list[Execution]:
        return self.store.list_executions(limit=limit, states=states)

    #: How far back planners can look (``PlanContext.history``).
    HISTORY_LIMIT = 500

    def _history(self) -> builtins.list[PastRun]:
        finished = self.store.list_executions(
            limit=self.HISTORY_LIMIT, states=sorted(s.value for s in TERMINAL_STATES)
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
            )
            for e in finished
        ]

    def _save(self, execution: Execution) -> None:
        execution.updated_at = self.clock.now()
        self.store.save_execution(execution)

    def _release_lock(self, execution: Execution) -> None:
        if execution.terminal:
            for key in execution.plan.locks:
                self.store.release_lock(key, execution.id)

    def _transition(
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
            self._save(execution)
        except ConcurrentUpdate:
            execution.state = previous
            raise
        self._after_transition(
            execution,
            previous,
            actor=actor,
            reason=reason,
            detail=detail,
            event_type=event_type,
            release=release,
        )

    def _after_transition(
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
        """Audit, publish and (at the end) release the lock for a saved transition."""
        state = execution.state
        self.audit.record(
            f"execution.{state}",
            actor=actor,
            outcome=str(state),
            execution_id=execution.id,
            target=self._target(execution.plan),
            reason=reason or execution.reason,
            incident=execution.incident,
            detail={
                "from": str(previous),
                **({"error": execution.error} if execution.error and execution.terminal else {}),
                **(detail or {}),
            },
        )
        self._publish(execution, event_type, previous=str(previous), **(detail or {}))
        if release:
            self._release_lock(execution)

    def _step_transition(
        self, execution: Execution, record: StepRecord, event_type: str, *, actor: Actor
    ) -> None:
        self._save(execution)
        self.audit.record(
            event_type,
            actor=actor,
            outcome=str(record.status),
            execution_id=execution.id,
            target=self._target(execution.plan),
            incident=execution.incident,
            detail={
                "step": record.index + 1,
                "kind": record.kind,
                "description": record.description,
                **({"error": record.error} if record.error else {}),
                **({"output": record.output} if record.output else {}),
            },
        )
        self._publish(
            execution,
            event_type,
            step=record.index + 1,
            description=record.description,
            status=str(record.status),
            error=record.error,
            output=record.output,
        )

    def _publish(self, execution: Execution, type_: str, **extra: Any) -> None:
        self.events.publish(
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

    @staticmethod
    def _target(plan: Plan) -> dict[str, Any]:
        return {
            "runbook": plan.runbook,
            "environment": plan.environment,
            "region": plan.region,
            "lock": plan.lock_key,
        }
