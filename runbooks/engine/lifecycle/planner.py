"""Planning from live state: validate a request, ask its runbook for the plan, run readiness
checks. Nothing here changes an execution; refusals of bad input are audited."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbooks.engine.audit import AuditLog
from runbooks.engine.background.readiness_watch import plan_warnings, summary_line
from runbooks.engine.clock import Clock, parse_iso
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.lifecycle.journal import past_runs
from runbooks.engine.models import Actor, Execution
from runbooks.engine.params import RunbookParams, validate_params
from runbooks.engine.plan import Adapters, PastRun, Plan, PlanContext
from runbooks.engine.readiness import Finding, ReadinessReport, select_checks
from runbooks.engine.registry import Registry, RunbookSpec
from runbooks.engine.store.base import Store


@dataclass(frozen=True)
class Prepared:
    """A validated request with its plan, ready to show and submit."""

    spec: RunbookSpec[Any]
    params: RunbookParams
    plan: Plan


class LazyAdapters:
    """The front end's adapters, built on first use (a dry run of ``selftest`` needs none)
    and shared by every part that plans or runs; closed with the engine."""

    def __init__(self, factory: Callable[[], Adapters]) -> None:
        self._factory = factory
        self._adapters: Adapters | None = None

    def get(self) -> Adapters:
        if self._adapters is None:
            self._adapters = self._factory()
        return self._adapters

    def close(self) -> None:
        if self._adapters is not None:
            self._adapters.close()
            self._adapters = None


class Planner:
    """Plans and readiness reports from live state, for the request path, the decisions that
    re-plan (an approval completing the gate, the start) and ``readiness``."""

    def __init__(
        self,
        *,
        config: Config,
        registry: Registry,
        store: Store,
        audit: AuditLog,
        clock: Clock,
        adapters: LazyAdapters,
        state_dir: Path,
    ) -> None:
        self._config = config
        self._registry = registry
        self._store = store
        self._audit = audit
        self._clock = clock
        self._adapters = adapters
        self._state_dir = state_dir

    def history(self) -> list[PastRun]:
        return past_runs(self._store)

    def plan(
        self,
        spec: RunbookSpec[Any],
        params: RunbookParams,
        *,
        break_glass: bool = False,
        preview: bool = False,
        automatic: bool = False,
    ) -> Plan:
        config = self._config
        env = config.environment(params.environment)
        ctx = PlanContext(
            config=config,
            env=env,
            params=params,
            clock=self._clock,
            adapters=self._adapters.get(),
            state_dir=self._state_dir,
            break_glass=break_glass,
            # Read once a plan (a planner may ask twice); the store's finished runs, parsed.
            history=functools.cache(self.history),
            preview=preview,
            automatic=automatic,
            readiness=lambda: summary_line(
                self._store,
                params.environment,
                now=self._clock.now(),
                interval=config.schedules.readiness.interval,
            ),
        )
        draft = spec.make_plan(ctx)
        return Plan(
            runbook=spec.name,
            environment=params.environment,
            tier=env.tier,
            region=_region(params),
            lock_key=spec.lock_key(params),
            locks=spec.lock_keys(params),
            params=params.model_dump(mode="json"),
            steps=[step.to_spec() for step in draft.steps],
            summary=draft.summary or spec.summary,
            notes=list(draft.notes),
            read_only=spec.read_only,
            config_hash=config.environment_hash(params.environment),
            warnings=[]
            if spec.read_only
            else plan_warnings(self._store, params.environment, spec.name),
            refused_now=list(ctx.refused_now),
        )

    def replan(self, execution: Execution) -> Plan:
        """The execution's plan computed again from live state (its parameters as stored)."""
        spec = self._registry.get(execution.runbook)
        params = validate_params(spec.params, execution.plan.params, self._config)
        return self.plan(
            spec,
            params,
            break_glass=execution.break_glass,
            automatic=execution.requester.automatic,
        )

    def prepare(
        self,
        name: str,
        raw_params: dict[str, Any],
        *,
        actor: Actor,
        break_glass: bool = False,
        preview: bool = False,
        before_planning: Callable[[RunbookSpec[Any], RunbookParams], None] | None = None,
    ) -> Prepared:
        """Validate parameters and compute the plan from live state; change nothing.

        ``preview`` (a dry run) lets planners describe what is not possible right now (a
        maintenance window that is not open) instead of refusing. Invalid input is audited
        as a rejected request and raised as InvalidInput. ``before_planning`` sees the
        validated request before anything live is read (the request path refuses a person
        who may not request there; it audits its own refusals).
        """
        with self._audited(name, raw_params, actor=actor):
            spec = self._registry.get(name)
            params = validate_params(spec.params, raw_params, self._config)
        if before_planning is not None:
            before_planning(spec, params)
        with self._audited(name, raw_params, actor=actor):
            plan = self.plan(
                spec, params, break_glass=break_glass, preview=preview, automatic=actor.automatic
            )
        return Prepared(spec, params, plan)

    @contextlib.contextmanager
    def _audited(self, name: str, raw_params: dict[str, Any], *, actor: Actor) -> Iterator[None]:
        """Audit invalid input as a rejected request, and a refusal, then raise them on."""
        try:
            yield
        except InvalidInput as exc:
            self._audit.record(
                "request.rejected",
                actor=actor,
                outcome="invalid_input",
                target={"runbook": name},
                params=raw_params,
                detail={"error": exc.message},
            )
            raise
        except Refused as exc:
            # A refusal is a decision someone must be able to find: the planner's (the live
            # state forbids it: an unhealthy target, a reconciler the bot may not suspend) as
            # much as an automatic requester's (NeedsPerson).
            self._audit.record(
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
        config = self._config
        if not actor.automatic and actor.id not in config.policy.people:
            self._audit.record(
                "readiness.refused",
                actor=actor,
                outcome="not_allowed",
                target={"environment": environment or "*", "runbook": runbook or "*"},
                detail={"why": f"{actor.id} is not a person of policy.yaml"},
            )
            raise Refused(f"{actor.name} may not check readiness: not a person of policy.yaml")
        names = [environment] if environment else config.environment_names()
        registry = self._registry
        checks = select_checks(registry.checks, runbook=runbook, known=registry.names())
        findings: list[Finding] = []
        shared = [c for c in checks if c.scope == "installation"]
        for index, name in enumerate(names):
            params = validate_params(RunbookParams, {"environment": name}, config)
            ctx = PlanContext(
                config=config,
                env=config.environment(name),
                params=params,
                clock=self._clock,
                adapters=self._adapters.get(),
                state_dir=self._state_dir,
                history=self.history,
                installed_at=self._installed_at,
            )
            for check in checks if index == 0 else [c for c in checks if c not in shared]:
                findings.extend(check.run(ctx))
        report = ReadinessReport(self._clock.now(), tuple(findings))
        self._audit.record(
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
        rows = self._store.iter_audit()
        try:
            first = next(rows, None)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
        return None if first is None else parse_iso(str(json.loads(first.body)["time"]))


def _region(params: RunbookParams) -> str | None:
    """The region a request names (None: all of the environment's)."""
    return getattr(params, "region", None) or None


def request_target(spec: RunbookSpec[Any], params: RunbookParams) -> dict[str, Any]:
    """What an audit record names as the target of a validated request that has no plan yet:
    the same as ``journal.plan_target`` of the plan it would get."""
    return {
        "runbook": spec.name,
        "environment": params.environment,
        "region": _region(params),
        "lock": spec.lock_key(params),
    }
