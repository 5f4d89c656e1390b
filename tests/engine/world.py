"""Runbooks for engine tests: they act on an in-memory key-value 'world'.

Planning reads the world (live state); steps change it and verify it; undo restores it.
``FAILING_VERIFY`` and ``FAILING_UNDO`` make named keys misbehave.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from runbooks.engine.errors import InvalidInput
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import Measure, PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import RunbookSpec, runbook

STATE: dict[str, int] = {}
RUNS: list[str] = []
FAILING_VERIFY: set[str] = set()
FAILING_UNDO: set[str] = set()
#: Keys whose undo waits (checking for cancellation, as a rollout watch does).
WAITING_UNDO: set[str] = set()
GATES: dict[str, threading.Event] = {}
#: Keys whose live read fails while planning (an unreachable cluster, a missing revision).
UNREADABLE: set[str] = set()
#: What ``test.measure``'s next runs take (RTO, seconds on the engine clock) and lose (RPO).
MEASURED: list[tuple[float, float]] = []


def reset() -> None:
    STATE.clear()
    RUNS.clear()
    FAILING_VERIFY.clear()
    FAILING_UNDO.clear()
    WAITING_UNDO.clear()
    GATES.clear()
    MEASURED.clear()
    UNREADABLE.clear()


@dataclass(frozen=True, kw_only=True)
class SetValue(Step, kind="test.set"):
    key: str
    before: int
    after: int
    timeout: float = 10.0

    def describe(self) -> str:
        return f"set {self.key}: {self.before} → {self.after}"

    def run(self, ctx: RunContext) -> str | None:
        gate = GATES.get(self.key)
        if gate is not None:
            while not gate.is_set():
                ctx.check_cancelled()
                gate.wait(0.01)
        if STATE.get(self.key, 0) == self.after:
            return "already set"
        RUNS.append(self.key)
        STATE[self.key] = self.after
        return f"{self.key}={self.after}"

    def verify(self, ctx: RunContext) -> bool:
        return self.key not in FAILING_VERIFY and STATE.get(self.key, 0) == self.after

    def undo(self, ctx: RunContext) -> str | None:
        if self.key in FAILING_UNDO:
            raise RuntimeError(f"cannot restore {self.key}")
        if self.key in WAITING_UNDO:
            for _ in range(3):  # like an undo that watches its rollout
                ctx.clock.sleep(1.0)
                ctx.check_cancelled()
        RUNS.append(f"undo:{self.key}")
        STATE[self.key] = self.before
        return f"{self.key}={self.before}"


@dataclass(frozen=True, kw_only=True)
class Announce(Step, kind="test.announce"):
    text: str
    irreversible_reason = "a message cannot be unsent"

    def describe(self) -> str:
        return f"announce: {self.text}"

    def run(self, ctx: RunContext) -> str | None:
        RUNS.append(f"announce:{self.text}")
        return None


class SetParams(RunbookParams):
    keys: str = Field("a,b,c", description="comma-separated keys to set")
    value: int = Field(1, ge=0, le=20, description="target value (0-20)")
    announce: bool = Field(False, description="start with an announcement")


@runbook("test.set", params=SetParams, lock="{environment}:test")
def set_values(ctx: PlanContext, params: SetParams) -> PlanDraft:
    """Set keys of the test world to a value."""
    steps: list[Step] = []
    if params.announce:
        steps.append(Announce(text=f"setting {params.keys}"))
    for key in params.keys.split(","):
        if key in UNREADABLE:
            raise InvalidInput(f"cannot read {key} in {params.environment}: unreachable")
        current = STATE.get(key, 0)
        if current != params.value:
            steps.append(SetValue(key=key, before=current, after=params.value))
    return PlanDraft(steps=steps, summary=f"set {params.keys} to {params.value}")


@runbook("test.status", params=RunbookParams, read_only=True)
def status(ctx: PlanContext, params: RunbookParams) -> PlanDraft:
    """Read-only: show the world."""
    return PlanDraft(steps=[], notes=[f"state: {dict(sorted(STATE.items()))}"])


@runbook("test.everything", params=SetParams, lock="{environment}:*")
def set_everything(ctx: PlanContext, params: SetParams) -> PlanDraft:
    """Set keys like test.set, locking the whole environment (as DR does)."""
    return set_values.planner(ctx, params)  # type: ignore[return-value]


@dataclass(frozen=True, kw_only=True)
class Measured(Step, kind="test.measured"):
    """A drill-like step: takes the next ``MEASURED`` duration, then measures RTO and RPO
    against 10-minute and 5-minute targets (fails when ``MEASURED`` says ``-1``)."""

    timeout: float = 7200.0
    irreversible_reason = "a drill's measurement is what it is"

    def describe(self) -> str:
        return "restore and measure RTO/RPO"

    def run(self, ctx: RunContext) -> str | None:
        took, lost = MEASURED.pop(0) if MEASURED else (60.0, 30.0)
        if took < 0:
            raise RuntimeError("the restore failed")
        ctx.clock.sleep(took)
        ctx.measure(Measure("RTO", ctx.clock.now() - ctx.started_at, target=600.0))
        ctx.measure(Measure("RPO", lost, target=300.0, detail="test"))
        return "measured"


@runbook("test.measure", params=RunbookParams, lock="{environment}:measure")
def measure(ctx: PlanContext, params: RunbookParams) -> PlanDraft:
    """A drill that measures RTO and RPO (the next MEASURED values)."""
    return PlanDraft(steps=[Measured()], summary="restore and measure")


SPECS: list[RunbookSpec[Any]] = [set_values, status, set_everything, measure]
