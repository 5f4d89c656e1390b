"""Property: an execution reaches ``running`` only when the required number of distinct,
authorised, non-requester approvals exist for the current plan and nothing has expired.

Random sequences of request / approve (with the shown or a stale plan hash) / deny / time
passing / live state changing / confirm / start run against the engine, while an independent
model tracks what the rules allow. Safety: whenever the engine runs the steps, the model agrees
the gate was satisfied. Liveness: whenever the model says the gate is satisfied, start runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import FakeClock
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, LockHeld, PlanChanged, Refused
from runbooks.engine.models import Actor, Origin, State
from runbooks.engine.registry import Registry
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import AUDIT_KEY
from tests.engine import world
from tests.support.rules import RULES_2_IN_PRODUCTION, config_with

PEOPLE = {
    "alice": Actor("alice", "Alice", Origin.CLI),
    "bob": Actor("bob", "Bob", Origin.SLACK),
    "dave": Actor("dave", "Dave", Origin.CLI),
    "carol": Actor("carol", "Carol", Origin.CLI),
    "mallory": Actor("mallory", "Mallory", Origin.SLACK),
}
AUTHORISED = {"alice", "bob", "dave"}  # group sre in the sandbox policy
REQUIRED, EXPIRY = 2, 1800.0
CONFIG = config_with(rules=RULES_2_IN_PRODUCTION)

# Hypothesis favours the first element of sampled_from: valid approvers come first.
_approve = st.tuples(
    st.just("approve"),
    st.sampled_from(["bob", "dave", "carol", "alice", "mallory"]),
    st.sampled_from([False, False, False, True]),
)  # mostly the shown hash
noise = st.one_of(
    _approve,
    st.tuples(st.just("start")),
    st.tuples(st.just("request"), st.sampled_from(["alice", "bob", "dave"])),
    # mostly people who may not deny, so that some sequences live long enough to run
    st.tuples(st.just("deny"), st.sampled_from(["carol", "mallory", "carol", "bob"])),
    st.tuples(st.just("advance"), st.sampled_from([30.0, 30.0, 600.0, 1700.0])),
    st.tuples(st.just("change")),
    st.tuples(st.just("confirm")),
)
#: Every scenario holds what a successful run needs (two valid approvals, a confirmation, a
#: start), shuffled among random noise: otherwise satisfied gates are too rare to test.
CORE: list[tuple[object, ...]] = [
    ("approve", "bob", False),
    ("approve", "dave", False),
    ("confirm",),
    ("start",),
    ("start",),
]
actions = st.lists(noise, max_size=15).flatmap(lambda extra: st.permutations(CORE + extra))


@dataclass
class Model:
    execution_id: str | None = None
    requester: str = ""
    expires_at: float = 0.0
    plan_world: int = 0
    confirmed: bool = True
    approvers: set[str] = field(default_factory=set)
    ended: bool = False

    def gate_satisfied(self, now: float, world_value: int) -> bool:
        return (
            self.execution_id is not None
            and not self.ended
            and now <= self.expires_at
            and self.confirmed
            and len(self.approvers) >= REQUIRED
            and world_value == self.plan_world
        )


@settings(max_examples=200)
@given(actions)
def test_running_only_with_enough_valid_approvals(steps: list[tuple[object, ...]]) -> None:
    world.reset()
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "p.db")
        engine = Engine(
            config=CONFIG,
            store=store,
            registry=Registry(world.SPECS),
            audit=AuditLog(store, AUDIT_KEY.encode(), clock),
            clock=clock,
            state_dir=Path(tmp),
        )
        model = Model()
        try:
            for step in [("request", "alice"), *steps]:
                _apply(engine, model, clock, step)
        finally:
            store.close()
    world.reset()


def _apply(engine: Engine, model: Model, clock: FakeClock, step: tuple[object, ...]) -> None:
    kind, now = step[0], clock.now()
    if model.execution_id is not None and not model.ended and now > model.expires_at:
        model.ended = True  # the engine expires it at its next look
    if kind == "request":
        who = str(step[1])
        prepared = engine.prepare(
            "test.set", {"environment": "production", "keys": "a"}, actor=PEOPLE[who]
        )
        try:
            execution = engine.submit(prepared, actor=PEOPLE[who])
        except LockHeld:
            assert model.execution_id is not None and not model.ended
            return
        assert model.execution_id is None or model.ended, "a second request got the lock"
        model.__init__()  # type: ignore[misc]
        model.execution_id, model.requester = execution.id, who
        model.expires_at, model.plan_world = now + EXPIRY, world.STATE.get("a", 0)
    elif model.execution_id is None:
        return
    elif kind == "approve":
        who, stale = str(step[1]), bool(step[2])
        current = engine.get(model.execution_id)
        shown = "0" * 64 if stale else current.plan.hash
        try:
            engine.approve(model.execution_id, actor=PEOPLE[who], plan_hash=shown)
        except PlanChanged:
            # The approval completed the gate, but the live plan had moved: every approval
            # is void at once and the requester must confirm the new plan.
            assert world.STATE.get("a", 0) != model.plan_world
            model.approvers.clear()
            model.confirmed, model.plan_world = False, world.STATE.get("a", 0)
            event("approval voided at once: plan changed")
            return
        except Refused:
            event("approval refused")
            return
        # Accepted: the model counts it only if the rules say it should count.
        valid = (
            who in AUTHORISED
            and who != model.requester
            and not stale
            and not model.ended
            and now <= model.expires_at
        )
        assert valid, f"engine accepted an approval the rules refuse: {who}, stale={stale}"
        event("approval accepted")
        model.approvers.add(who)
    elif kind == "deny":
        try:
            engine.deny(model.execution_id, actor=PEOPLE[str(step[1])], reason="no")
        except Refused:
            return
        model.ended = True
    elif kind == "advance":
        clock.advance(float(step[1]))  # type: ignore[arg-type]
    elif kind == "change":
        world.STATE["a"] = world.STATE.get("a", 0) + 1
    elif kind == "confirm":
        current = engine.get(model.execution_id)
        try:
            engine.confirm(
                model.execution_id, actor=PEOPLE[model.requester], plan_hash=current.plan.hash
            )
        except Refused:
            return
        model.confirmed = True  # confirms the stored plan; only a re-plan at start moves it
    elif kind == "start":
        expected = model.gate_satisfied(now, world.STATE.get("a", 0))
        runs_before = len(world.RUNS)
        try:
            execution = engine.start(model.execution_id, actor=PEOPLE[model.requester])
        except (Refused, InvalidInput):
            assert not expected, "the gate was satisfied but start was refused"
            event("start refused")
            return
        if execution.state == State.AWAITING_APPROVAL:  # plan changed: approvals void
            assert world.STATE.get("a", 0) != model.plan_world
            model.approvers.clear()
            model.confirmed, model.plan_world = False, world.STATE.get("a", 0)
            assert not expected
            event("plan changed: approvals void")
            return
        assert expected, "steps ran without the model's gate being satisfied"
        event("steps ran")
        assert execution.state == State.SUCCEEDED and len(world.RUNS) >= runs_before
        model.ended = True
