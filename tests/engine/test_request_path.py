"""The one request path and the engine's decision verbs (issue 11), on a fake clock.

Each test here failed before the engine owned the lifecycle: cancel, resume and ack-review
had no authorisation, a blank incident let break-glass through, a crash between ``failed``
and ``compensating`` stranded done steps, an undo's wait aborted on the cancel it was
serving, lock keys did not overlap, and orphans were resumed only at bot start.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.audit import AuditLog
from runbooks.engine.background.supervisor import Supervisor
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, LeaseHeld, LockHeld, PlanChanged, Refused
from runbooks.engine.lifecycle.requests import Outcome, Request
from runbooks.engine.models import Actor, Execution, State, StepStatus
from runbooks.engine.policy import ConfigPolicy, Gate, Refusal
from runbooks.engine.registry import Registry
from tests.conftest import AUDIT_KEY, EngineFactory
from tests.engine import world
from tests.support.crash import CrashingStore, Killed, run_inline
from tests.support.people import ALICE, BOB, CAROL, DAVE, SCHEDULER


def stored_midway(engine: Engine, state: State, keys: str = "a,b") -> Execution:
    """An execution as a process that died after step 1 left it (``a`` set, in ``state``)."""
    execution = engine.submit(
        engine.prepare("test.set", {"environment": "development", "keys": keys}, actor=ALICE),
        actor=ALICE,
    )
    execution.state = state
    execution.steps[0].status = StepStatus.SUCCEEDED
    world.STATE["a"] = 1
    engine.store.save_execution(execution)
    return execution


def submit(engine: Engine, environment: str = "production", actor: Any = ALICE, **kw: Any):
    prepared = engine.prepare("test.set", {"environment": environment, "keys": "a"}, actor=actor)
    return engine.submit(prepared, actor=actor, **kw)


def actions(engine: Engine) -> list[str]:
    return [r["action"] for r in engine.audit.export()]


# authorisation of the decision verbs -------------------------------------------------------
def test_cancel_is_decided_by_policy_in_the_engine_for_every_front_end(engine: Engine) -> None:
    execution = submit(engine)
    with pytest.raises(Refused, match=r"Carol may not cancel .* only the requester or sre"):
        engine.cancel(execution.id, actor=CAROL, reason="mine now")
    assert engine.get(execution.id).state == State.AWAITING_APPROVAL
    assert "cancel.refused" in actions(engine)
    assert engine.cancel(execution.id, actor=BOB, reason="not now").state == State.CANCELLED
    own = submit(engine)
    assert engine.cancel(own.id, actor=ALICE).state == State.CANCELLED


def test_operators_in_policy_decide_who_else_may_cancel(
    make_engine: EngineFactory, sandbox_config: Config
) -> None:
    doc = sandbox_config.policy.model_dump()
    doc["rules"] = [
        {**rule, "operators": ["dave"]} if rule["environments"] == ["production"] else rule
        for rule in doc["rules"]
    ]
    from runbooks.engine.config.policy_file import PolicyFile

    config = Config(sandbox_config.directory, sandbox_config.environments, PolicyFile(**doc))
    engine = make_engine(config=config)
    execution = submit(engine)
    with pytest.raises(Refused, match="Bob may not cancel"):
        engine.cancel(execution.id, actor=BOB)
    assert engine.cancel(execution.id, actor=DAVE).state == State.CANCELLED


def test_resume_of_someone_elses_run_needs_an_operator(engine: Engine) -> None:
    execution = submit(engine)
    engine.approve(execution.id, actor=BOB)
    with pytest.raises(Refused, match="Carol may not resume"):
        engine.resume(execution.id, actor=CAROL)
    assert engine.get(execution.id).state == State.APPROVED and world.STATE == {}
    assert engine.resume(execution.id, actor=DAVE).state == State.SUCCEEDED


def test_ack_review_needs_an_operator_and_break_glass_needs_a_real_incident(
    engine: Engine,
) -> None:
    with pytest.raises(InvalidInput, match="--incident ID"):
        submit(engine, break_glass=True, reason="site down", incident="   ")
    with pytest.raises(InvalidInput, match="--incident ID"):
        engine.request(
            Request(
                "test.set",
                {"environment": "production"},
                ALICE,
                break_glass=True,
                reason="site down",
                incident=" ",
                assume_yes=True,
            )
        )
    assert engine.list() == [] and world.STATE == {}
    execution = submit(engine, break_glass=True, reason="site down", incident=" PD-1 ")
    assert execution.incident == "PD-1"
    engine.start(execution.id, actor=ALICE)
    with pytest.raises(Refused, match="Carol may not acknowledge"):
        engine.ack_review(execution.id, actor=CAROL)
    assert len(engine.reviews()) == 1
    engine.ack_review(execution.id, actor=BOB)
    assert engine.reviews() == []


# crash points ------------------------------------------------------------------------------
def _crash_world(tmp_path: Path, sandbox_config: Config, clock: FakeClock, kill_after: int | None):
    store = CrashingStore(tmp_path / f"crash-{kill_after}.db", kill_after=kill_after)

    def engine_for(owner: str) -> Engine:
        return Engine(
            config=sandbox_config,
            store=store,
            registry=Registry(world.SPECS),
            audit=AuditLog(store, AUDIT_KEY.encode(), clock),
            clock=clock,
            state_dir=tmp_path / "home",
            owner=owner,
        )

    return store, engine_for


def _run_until_killed(engine: Engine) -> str | None:
    prepared = engine.prepare(
        "test.set", {"environment": "development", "keys": "a,b,c"}, actor=ALICE
    )
    execution_id = None
    try:
        execution = engine.submit(prepared, actor=ALICE)
        execution_id = execution.id
        engine.start(execution.id, actor=ALICE)
    except Killed:
        pass
    return execution_id or (engine.list()[0].id if engine.list() else None)


@pytest.mark.parametrize("failing", [False, True], ids=["succeeds", "fails-at-step-3"])
def test_a_run_killed_after_any_write_is_finished_or_compensated_by_the_supervisor(
    tmp_path: Path, sandbox_config: Config, clock: FakeClock, failing: bool
) -> None:
    store, engine_for = _crash_world(tmp_path, sandbox_config, clock, None)
    if failing:
        world.FAILING_VERIFY.add("c")
    _run_until_killed(engine_for("first"))
    writes = store.saves
    expected = world.STATE.copy()
    assert writes >= 8 and expected == (
        {"a": 0, "b": 0, "c": 0} if failing else dict.fromkeys("abc", 1)
    )
    store.close()
    for kill_after in range(1, writes + 1):
        world.reset()
        if failing:
            world.FAILING_VERIFY.add("c")
        store, engine_for = _crash_world(tmp_path, sandbox_config, clock, kill_after)
        execution_id = _run_until_killed(engine_for("dies"))
        assert execution_id is not None
        store.kill_after = None
        clock.advance(31)  # past any lease the dead process held
        successor = Supervisor(engine_for(f"successor-{kill_after}"), spawn=run_inline)
        for _ in range(3):
            successor.sweep()
        final = successor.engine.get(execution_id)
        where = f"killed after write {kill_after} of {writes} ({store.states[kill_after - 1]})"
        assert final.state == (State.COMPENSATED if failing else State.SUCCEEDED), where
        assert expected == world.STATE, where
        store.close()


def test_an_execution_stranded_as_failed_is_compensated_on_resume(engine: Engine) -> None:
    # What an engine that saved ``failed`` and died before ``compensating`` left behind.
    world.FAILING_VERIFY.add("b")
    execution = stored_midway(engine, State.FAILED)
    assert [e.id for e in engine.resumable()] == [execution.id]
    assert engine.resume(execution.id, actor=ALICE).state == State.COMPENSATED
    assert world.STATE == {"a": 0}


def test_cancel_during_a_step_compensates_even_when_the_undo_waits(
    engine: Engine, clock: FakeClock
) -> None:
    world.WAITING_UNDO.add("a")
    world.GATES["b"] = threading.Event()
    execution = engine.submit(
        engine.prepare("test.set", {"environment": "development", "keys": "a,b"}, actor=ALICE),
        actor=ALICE,
    )
    done: list[Any] = []
    runner = threading.Thread(target=lambda: done.append(engine.start(execution.id, actor=ALICE)))
    runner.start()
    for _ in range(500):
        if engine.get(execution.id).steps[1].status == StepStatus.RUNNING:
            break
        time.sleep(0.01)
    engine.cancel(execution.id, actor=ALICE, reason="wrong service")
    clock.advance(1)  # the step's cancel poll runs on the engine's clock
    runner.join(timeout=30)
    assert done and done[0].state == State.CANCELLED, done and done[0].error
    assert world.STATE == {"a": 0, "b": 0}
    assert [s.status for s in done[0].steps] == [StepStatus.UNDONE, StepStatus.UNDONE]


# lock sets ---------------------------------------------------------------------------------
def test_a_whole_environment_lock_excludes_every_other_lock_of_it(engine: Engine) -> None:
    dr_like = engine.submit(
        engine.prepare("test.everything", {"environment": "production"}, actor=ALICE),
        actor=ALICE,
    )
    assert dr_like.plan.locks == ["production:*"]
    with pytest.raises(LockHeld, match=rf"production:\* is locked by {dr_like.id} \(test.every"):
        submit(engine, actor=DAVE)
    assert engine.store.lock_holder("production:test") is None  # the refused one took nothing
    other_env = submit(engine, environment="staging")
    assert other_env.state == State.AWAITING_APPROVAL
    engine.cancel(dr_like.id, actor=ALICE)
    scaling_like = submit(engine, actor=DAVE)
    with pytest.raises(LockHeld, match=rf"production:test is locked by {scaling_like.id}"):
        engine.submit(
            engine.prepare("test.everything", {"environment": "production"}, actor=ALICE),
            actor=ALICE,
        )
    assert engine.store.lock_holder("production:*") is None
    refusals = [r for r in engine.audit.export() if r["outcome"] == "lock_held"]
    assert len(refusals) == 2


# the supervisor ----------------------------------------------------------------------------
def test_the_supervisor_resumes_a_dead_processs_run_once_its_lease_expires(
    engine: Engine, clock: FakeClock
) -> None:
    world.GATES["b"] = threading.Event()
    # A terminal that started the run and was killed mid-step: state running, lease live.
    execution = stored_midway(engine, State.RUNNING)
    now = clock.now()
    assert engine.store.claim_lease(execution.id, "dead-cli", now + 30, now)
    world.GATES["b"].set()
    supervisor = Supervisor(engine, spawn=run_inline)
    assert supervisor.sweep().resumed == []
    clock.advance(31)
    assert supervisor.sweep().resumed == [execution.id]
    assert engine.get(execution.id).state == State.SUCCEEDED
    assert world.STATE == {"a": 1, "b": 1} and world.RUNS == ["b"]


# the request path --------------------------------------------------------------------------
def test_request_shows_the_plan_then_submits_exactly_what_was_confirmed(engine: Engine) -> None:
    ask = Request("test.set", {"environment": "production"}, ALICE)
    shown = engine.request(ask)
    assert shown.outcome == Outcome.CONFIRM and shown.approvals == 1
    assert engine.list() == [] and engine.store.lock_holder("production:test") is None
    world.STATE["b"] = 5  # the live state moves while the requester reads
    moved = engine.request(Request(**{**ask.__dict__, "confirmed_hash": shown.plan.hash}))
    assert moved.outcome == Outcome.CHANGED and engine.list() == []
    assert moved.plan.steps[1]["description"] == "set b: 5 → 1"
    confirmed = engine.request(Request(**{**ask.__dict__, "confirmed_hash": moved.plan.hash}))
    assert confirmed.outcome == Outcome.SUBMITTED and confirmed.execution is not None
    assert confirmed.execution.plan.hash == moved.plan.hash
    assert confirmed.execution.state == State.AWAITING_APPROVAL


def test_a_dry_run_says_whether_the_real_request_would_be_allowed(engine: Engine) -> None:
    looked = engine.request(Request("test.set", {"environment": "production"}, CAROL, dry_run=True))
    assert looked.outcome == Outcome.DRY_RUN
    assert looked.would_refuse and "Carol may not request test.set in production" in (
        looked.would_refuse
    )
    fine = engine.request(Request("test.set", {"environment": "production"}, ALICE, dry_run=True))
    assert fine.would_refuse is None
    assert actions(engine) == ["request.dry_run", "request.dry_run"]


def test_a_person_who_may_not_request_is_told_so_before_the_plan_reads_live_state(
    engine: Engine,
) -> None:
    """The walkthrough: Carol's production request met the plan's error (a live read that
    failed), not "Carol may not request ...": planning came before the permission check."""
    world.UNREADABLE.add("a")
    params = {"environment": "production", "keys": "a"}
    asked = Request("test.set", params, CAROL, reason=" mine ", incident="PD-9", assume_yes=True)
    with pytest.raises(Refused) as refused:
        engine.request(asked)
    rule = engine.policy.gate("test.set", "production", read_only=False).rule
    assert refused.value.message == (
        f"Carol may not request test.set in production; requesters: sre ({rule})"
    )
    # Audited as the check after planning audited it: the plan's target and parameters.
    [record] = engine.audit.export()
    assert record["action"] == "request.refused" and record["outcome"] == "not_allowed"
    assert record["actor"] == CAROL.to_doc() and record["incident"] == "PD-9"
    assert record["reason"] == "mine"
    assert record["target"] == {
        "runbook": "test.set",
        "environment": "production",
        "region": None,
        "lock": "production:test",
    }
    assert record["params"] == {
        "environment": "production",
        "keys": "a",
        "value": 1,
        "announce": False,
    }
    assert record["detail"] == {
        "why": refused.value.message,
        "kind": "not_allowed",
        "channel": None,
        "break_glass": False,
    }
    # The same refusal where the plan can be made: the record is the same.
    world.UNREADABLE.clear()
    with pytest.raises(Refused, match=r"^Carol may not request test\.set in production"):
        engine.request(asked)
    again = list(engine.audit.export())[-1]
    assert {k: again[k] for k in ("action", "outcome", "target", "params", "detail")} == {
        k: record[k] for k in ("action", "outcome", "target", "params", "detail")
    }
    # Someone who may request it meets the plan's error, as before.
    world.UNREADABLE.add("a")
    with pytest.raises(InvalidInput, match="cannot read a in production"):
        engine.request(Request("test.set", params, ALICE, assume_yes=True))
    assert engine.list() == []


def test_a_dry_run_by_someone_who_may_not_request_shows_the_plan_and_says_why_not(
    engine: Engine,
) -> None:
    world.STATE["a"] = 3
    looked = engine.request(
        Request("test.set", {"environment": "production", "keys": "a"}, CAROL, dry_run=True)
    )
    assert looked.outcome == Outcome.DRY_RUN
    assert [s["description"] for s in looked.plan.steps] == ["set a: 3 → 1"]
    assert looked.dry_run_verdict.startswith(
        "the real request would be refused now: Carol may not request test.set in production"
    )
    assert actions(engine) == ["request.dry_run"]


def scheduler_fire(engine: Engine, drill: dict[str, Any]) -> Any:
    """A stub of the drill scheduler's entry point: a translator, nothing more."""
    return engine.request(
        Request(
            runbook=drill["runbook"],
            params=drill["params"],
            actor=SCHEDULER,
            reason=f"drill {drill['name']}",
            assume_yes=True,
        )
    )


def test_a_new_requester_is_only_a_translator(engine: Engine) -> None:
    world.STATE["a"] = 3
    result = scheduler_fire(
        engine, {"name": "look", "runbook": "test.status", "params": {"environment": "staging"}}
    )
    assert result.outcome == Outcome.REPORTED and result.execution is not None
    assert result.execution.state == State.SUCCEEDED
    assert result.execution.plan.notes == ["state: {'a': 3}"]
    [request] = [r for r in engine.audit.export() if r["action"] == "request"]
    assert request["actor"] == SCHEDULER.to_doc()
    # Policy applies to it like to anyone: the scheduler is no requester of test.set.
    with pytest.raises(Refused, match=r"scheduler may not request test\.set in production"):
        scheduler_fire(
            engine, {"name": "x", "runbook": "test.set", "params": {"environment": "production"}}
        )
    assert actions(engine)[-1] == "request.refused"


def test_the_requester_denying_is_a_withdrawal_and_a_late_decision_is_audited(
    engine: Engine,
) -> None:
    execution = submit(engine)
    withdrawn = engine.deny(execution.id, actor=ALICE, reason="wrong service")
    assert withdrawn.state == State.CANCELLED
    assert withdrawn.error == "withdrawn by Alice: wrong service"
    assert withdrawn.approvals == []  # no verdict of an approver
    with pytest.raises(Refused, match="not waiting for a decision"):
        engine.approve(execution.id, actor=BOB)  # the losing (late) approver
    late = [r for r in engine.audit.export() if r["action"] == "decision.refused"]
    assert [(r["actor"]["id"], r["outcome"]) for r in late] == [("bob", "not_pending")]
    record = [r for r in engine.audit.export() if r["action"] == "execution.cancelled"][-1]
    assert record["detail"]["withdrawn"] is True


def test_an_approval_whose_live_plan_changed_is_told_at_once(engine: Engine) -> None:
    execution = submit(engine)
    world.STATE["a"] = 7  # the live state moves after the request was made
    with pytest.raises(PlanChanged, match=r"your approval of .* was recorded, but the live"):
        engine.approve(execution.id, actor=BOB)
    now = engine.get(execution.id)
    assert now.state == State.AWAITING_APPROVAL and now.confirmed_hash is None
    assert all(a.void for a in now.approvals)
    assert now.plan.steps[0]["description"] == "set a: 7 → 1"
    assert world.RUNS == []


class RacingStore(CrashingStore):
    """Another process writes the execution just before our next save (it resumed it too)."""

    race_next = False

    def save_execution(self, execution: Execution) -> None:
        if self.race_next:
            self.race_next = False
            stored = self.get_execution(execution.id)
            assert stored is not None
            super().save_execution(stored)  # the other process's write lands first
        super().save_execution(execution)


def test_a_resume_that_loses_a_race_says_another_process_has_it(
    tmp_path: Path, sandbox_config: Config, clock: FakeClock
) -> None:
    store = RacingStore(tmp_path / "race.db")
    engine = Engine(
        config=sandbox_config,
        store=store,
        registry=Registry(world.SPECS),
        audit=AuditLog(store, AUDIT_KEY.encode(), clock),
        clock=clock,
        state_dir=tmp_path / "home",
    )
    execution = engine.submit(
        engine.prepare("test.set", {"environment": "development"}, actor=ALICE), actor=ALICE
    )
    store.race_next = True
    with pytest.raises(LeaseHeld, match="started or resumed by another process just now"):
        engine.resume(execution.id, actor=ALICE)
    store.close()


def test_a_long_wait_reports_progress_live_and_in_the_store(engine: Engine) -> None:
    world.FAILING_VERIFY.add("a")  # the postcondition never holds: the wait runs to its end
    execution = engine.submit(
        engine.prepare("test.set", {"environment": "development", "keys": "a"}, actor=ALICE),
        actor=ALICE,
    )
    seen: list[str] = []
    stored: list[str | None] = []

    def watch(event: Any) -> None:
        if event.type == "step.progress":
            seen.append(event.payload["text"])
            now = engine.store.get_execution(execution.id)
            stored.append(now.steps[0].progress if now else None)

    unsubscribe = engine.events.subscribe(watch)
    try:
        done = engine.start(execution.id, actor=ALICE)
    finally:
        unsubscribe()
    assert done.state == State.COMPENSATED
    assert seen[0] == "waiting for: set a: 0 → 1 (0.0s, 1 check(s) so far)"
    assert seen[-1] == "waiting for: set a: 0 → 1 (10.0s, 11 check(s) so far)"
    # Another terminal's `runs.show` sees the wait while it lasts (saved every few seconds).
    assert any(p and p.startswith("waiting for: set a") for p in stored)
    assert done.steps[0].progress is None  # gone once the step ended


class CountingPolicy(ConfigPolicy):
    """The configuration's policy, counting how often the request path asks it."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.gates = 0
        self.checks = 0

    def gate(self, runbook: str, environment: str, *, read_only: bool) -> Gate:
        self.gates += 1
        return super().gate(runbook, environment, read_only=read_only)

    def check_request(self, actor: Actor, gate: Gate, **kw: Any) -> Refusal | None:
        self.checks += 1
        return super().check_request(actor, gate, **kw)


def test_a_request_computes_its_gate_once_and_runs_preflight_once(
    make_engine: EngineFactory, sandbox_config: Config
) -> None:
    policy = CountingPolicy(sandbox_config)
    engine = make_engine(policy=policy)
    result = engine.request(
        Request("test.set", {"environment": "production"}, ALICE, assume_yes=True)
    )
    assert result.outcome == Outcome.SUBMITTED and result.execution is not None
    assert (policy.gates, policy.checks) == (1, 1)
    # A person who may not request it is refused (audited) before anything is stored, and
    # before planning: preflight does not run, the gate is still computed once.
    with pytest.raises(Refused, match=r"Carol may not request test\.set in production"):
        engine.request(Request("test.set", {"environment": "production"}, CAROL, assume_yes=True))
    assert (policy.gates, policy.checks) == (2, 1)
    assert actions(engine)[-1] == "request.refused" and len(engine.list()) == 1
