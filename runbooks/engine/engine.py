"""The engine: turn a request into a plan, an execution, a gate, and a run with compensation.

``Engine`` is the facade every front end, requester and worker calls: it builds its parts
(``runbooks.engine.lifecycle``), gives each exactly what it uses, and delegates each verb to
the part that owns it. Every transition is saved to the store, appended to the audit log and
published as an event before the next action (the ``Journal``). One process at a time runs
an execution (a lease with heartbeat); one execution at a time holds a lock key. A crashed
process leaves a lease that expires, and ``resume`` continues at the first step not verified.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from runbooks.engine.audit import AuditLog
from runbooks.engine.background.readiness_watch import WatchStatus, watch_status
from runbooks.engine.clock import Clock, SystemClock
from runbooks.engine.config.loader import Config
from runbooks.engine.counters import transition_counts
from runbooks.engine.events import EventBus
from runbooks.engine.ids import process_owner
from runbooks.engine.lifecycle.decisions import Decisions
from runbooks.engine.lifecycle.journal import Journal
from runbooks.engine.lifecycle.locks import Locks
from runbooks.engine.lifecycle.planner import LazyAdapters, Planner, Prepared
from runbooks.engine.lifecycle.requests import DrillRuns, Request, RequestResult, Requests
from runbooks.engine.lifecycle.runner import Runner
from runbooks.engine.models import Actor, Execution, Trigger
from runbooks.engine.plan import Adapters, Plan
from runbooks.engine.policy import ConfigPolicy
from runbooks.engine.readiness import ReadinessReport
from runbooks.engine.registry import Registry
from runbooks.engine.store.base import Store

__all__ = ["Engine", "Prepared"]


class Engine:
    """What every front end and the scheduler share: the facade over the engine's parts.

    The parts, each given what it uses (docs/architecture.md): the ``Journal`` (store,
    audit, events, clock) that saves, audits and publishes every transition; the
    ``Planner`` (plans and readiness from live state); ``Locks`` (lock sets at submit);
    the ``Runner`` (start, drive, resume, compensate under a lease); ``Decisions``
    (approve, deny, confirm, cancel, resume, answer, reviews: each authorised by policy);
    ``Requests`` (the one request path: gate once, preflight once, submit).
    """

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
        self.state_dir = state_dir
        self.state_description = state_description or store.description
        #: A person's drill run on the request path (``requesters.drills.drill_runs``; the
        #: composer passes it: the facade does not import the requesters above it).
        self.drill_runs = drill_runs
        self._adapters = LazyAdapters(adapters_factory)
        self._journal = Journal(store=store, audit=audit, events=self.events, clock=self.clock)
        self._planner = Planner(
            config=config,
            registry=registry,
            store=store,
            audit=audit,
            clock=self.clock,
            adapters=self._adapters,
            state_dir=state_dir,
        )
        self._locks = Locks(store=store, journal=self._journal, audit=audit, clock=self.clock)
        self._runner = Runner(
            journal=self._journal,
            planner=self._planner,
            registry=registry,
            config=config,
            store=store,
            audit=audit,
            clock=self.clock,
            adapters=self._adapters,
            state_dir=state_dir,
            lease_ttl=lease_ttl,
            owner=owner or process_owner(),
        )
        self._decisions = Decisions(
            journal=self._journal,
            planner=self._planner,
            runner=self._runner,
            policy=self.policy,
            store=store,
            audit=audit,
            clock=self.clock,
        )
        self._requests = Requests(
            planner=self._planner,
            journal=self._journal,
            locks=self._locks,
            runner=self._runner,
            policy=self.policy,
            store=store,
            audit=audit,
            clock=self.clock,
            drill_runs=(lambda: drill_runs(self)) if drill_runs is not None else None,
        )

    @property
    def owner(self) -> str:
        """This process's name on execution leases (and the leader leases built from it)."""
        return self._runner.owner

    @owner.setter
    def owner(self, owner: str) -> None:
        self._runner.owner = owner

    @property
    def lease_ttl(self) -> float:
        return self._runner.lease_ttl

    @property
    def adapters(self) -> Adapters:
        return self._adapters.get()

    def close(self) -> None:
        """Release the adapters' connections (the store is the runtime's to close)."""
        self._adapters.close()

    # The request path (``Requests``, ``Planner``).

    def request(self, request: Request, *, prepared: Prepared | None = None) -> RequestResult:
        """The one request path for every front end (see ``runbooks.engine.lifecycle.requests``)."""
        return self._requests.handle(request, prepared=prepared)

    def prepare(
        self,
        name: str,
        raw_params: dict[str, Any],
        *,
        actor: Actor,
        break_glass: bool = False,
        preview: bool = False,
    ) -> Prepared:
        """Validate parameters and compute the plan from live state; change nothing."""
        return self._planner.prepare(
            name, raw_params, actor=actor, break_glass=break_glass, preview=preview
        )

    def dry_run(self, prepared: Prepared, *, actor: Actor, reason: str | None = None) -> Plan:
        """Record that a plan was shown without being submitted."""
        return self._requests.dry_run(prepared, actor=actor, reason=reason)

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
        """Refuse (audited) what policy forbids this person, front end, channel or moment."""
        self._requests.preflight(
            prepared,
            actor=actor,
            reason=reason,
            incident=incident,
            break_glass=break_glass,
            channel=channel,
        )

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
        """Create an execution for the plan the requester saw (``Requests.submit``)."""
        return self._requests.submit(
            prepared,
            actor=actor,
            reason=reason,
            incident=incident,
            break_glass=break_glass,
            channel=channel,
            drill=drill,
            trigger=trigger,
        )

    def readiness(
        self, *, actor: Actor, environment: str | None = None, runbook: str | None = None
    ) -> ReadinessReport:
        """Run the runbooks' readiness checks against live state (``Planner.readiness``)."""
        return self._planner.readiness(actor=actor, environment=environment, runbook=runbook)

    def readiness_status(self) -> WatchStatus:
        """What the readiness watch last found (its leader's last evaluation, open findings)."""
        return watch_status(self.store)

    def transition_counts(self) -> dict[tuple[str, str, str], int]:
        """(runbook, environment, state) -> how many times an execution entered the state."""
        return transition_counts(self.store)

    # Reading executions, expiring them (``Journal``).

    def get(self, execution_id: str) -> Execution:
        return self._journal.get(execution_id)

    def list(
        self, *, limit: int = 50, states: builtins.list[str] | None = None
    ) -> builtins.list[Execution]:
        return self._journal.list(limit=limit, states=states)

    def expire_due(self) -> builtins.list[str]:
        """Expire every pending request past its deadline (the bot runs this periodically)."""
        return self._journal.expire_due()

    # Decisions, each authorised by policy (``Decisions``).

    def approve(
        self, execution_id: str, *, actor: Actor, plan_hash: str | None = None
    ) -> Execution:
        """Record an approval bound to the current plan; approve the execution when enough."""
        return self._decisions.approve(execution_id, actor=actor, plan_hash=plan_hash)

    def deny(self, execution_id: str, *, actor: Actor, reason: str) -> Execution:
        """End a pending request at once, with a reason (the requester's own: a withdrawal)."""
        return self._decisions.deny(execution_id, actor=actor, reason=reason)

    def confirm(self, execution_id: str, *, actor: Actor, plan_hash: str) -> Execution:
        """The requester confirms a (changed) plan again."""
        return self._decisions.confirm(execution_id, actor=actor, plan_hash=plan_hash)

    def cancel(self, execution_id: str, *, actor: Actor, reason: str = "") -> Execution:
        """Stop a request: at once if not started, else between steps or inside a wait."""
        return self._decisions.cancel(execution_id, actor=actor, reason=reason)

    def resume(self, execution_id: str, *, actor: Actor) -> Execution:
        """Continue a running execution whose process died, at the first step not verified."""
        return self._decisions.resume(execution_id, actor=actor)

    def reviews(self, *, open_only: bool = True) -> builtins.list[dict[str, Any]]:
        """Break-glass review items, oldest first."""
        return self._decisions.reviews(open_only=open_only)

    def ack_review(self, execution_id: str, *, actor: Actor, note: str = "") -> None:
        """Close a break-glass review; the person who broke the glass cannot close it."""
        self._decisions.ack_review(execution_id, actor=actor, note=note)

    def question(self, execution_id: str) -> dict[str, Any] | None:
        """The question the execution's running step waits on, or None."""
        return self._decisions.question(execution_id)

    def answer(
        self,
        execution_id: str,
        choice: str,
        *,
        actor: Actor,
        reason: str = "",
        question_key: str | None = None,
    ) -> dict[str, Any]:
        """Answer the question a running step asked (the first answer wins, once)."""
        return self._decisions.answer(
            execution_id, choice, actor=actor, reason=reason, question_key=question_key
        )

    # Running (``Runner``).

    def start(self, execution_id: str, *, actor: Actor) -> Execution:
        """Run an approved execution in this process, re-planning first."""
        return self._runner.start(execution_id, actor=actor)

    def hold(self, execution_id: str) -> AbstractContextManager[None]:
        """Hold the execution's lease while a requester waits for approval in this process."""
        return self._runner.hold(execution_id)

    def startable(self) -> builtins.list[Execution]:
        """Approved executions that nobody is about to start (no live lease)."""
        return self._runner.startable()

    def resumable(self) -> builtins.list[Execution]:
        """Running (or stranded) executions whose lease has expired (their process died)."""
        return self._runner.resumable()

    def deferred(self) -> builtins.list[dict[str, Any]]:
        """Steps to run again later (a kept scratch database's drop), soonest first."""
        return self._runner.deferred()

    def run_due_deferred(self, *, actor: Actor) -> builtins.list[str]:
        """Run each deferred step that is due now, audited; returns what the steps said."""
        return self._runner.run_due_deferred(actor=actor)
