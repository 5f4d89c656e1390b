"""The engine's state machine, on a fake clock, with runbooks acting on an in-memory world."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from runbooks.engine.clock import FakeClock
from runbooks.engine.errors import InvalidInput, LeaseHeld, LockHeld, NotFound, Refused
from runbooks.engine.models import (
    Actor,
    Origin,
    State,
    StepStatus,
    StopReason,
    Trigger,
    TriggerKind,
)
from tests.engine import world
from tests.support.people import ALICE, BOB, CAROL, DAVE


def submit(engine, environment="development", actor=ALICE, **params):
    prepared = engine.prepare("test.set", {"environment": environment, **params}, actor=actor)
    return engine.submit(prepared, actor=actor)


def actions(engine):
    return [r["action"] for r in engine.audit.export()]


def test_zero_approval_request_runs_every_step_and_verifies_effects(engine):
    execution = submit(engine)
    assert execution.state == State.APPROVED
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED
    assert world.STATE == {"a": 1, "b": 1, "c": 1}
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 3
    stored = engine.get(execution.id)
    assert stored.state == State.SUCCEEDED and stored.steps[0].output == ["a=1"]
    assert engine.store.lock_holder("development:test") is None
    assert "request" in actions(engine) and "execution.succeeded" in actions(engine)
    assert engine.audit.verify().ok


def test_invalid_parameters_are_refused_with_a_human_message_and_change_nothing(engine):
    with pytest.raises(
        InvalidInput,
        match=r"unknown environment 'prod'; known: development, "
        r"staging, production",
    ):
        engine.prepare("test.set", {"environment": "prod"}, actor=ALICE)
    with pytest.raises(InvalidInput, match=r"--value: must be at most 20 \(got 50\)"):
        engine.prepare("test.set", {"environment": "development", "value": "50"}, actor=ALICE)
    with pytest.raises(InvalidInput, match="unknown parameter --colour"):
        engine.prepare("test.set", {"environment": "development", "colour": "red"}, actor=ALICE)
    with pytest.raises(NotFound, match="unknown runbook 'rollbak'"):
        engine.prepare("rollbak", {"environment": "development"}, actor=ALICE)
    assert engine.list() == [] and world.STATE == {}
    assert actions(engine) == ["request.rejected"] * 4


def test_dry_run_changes_nothing_but_is_audited(engine):
    prepared = engine.prepare("test.set", {"environment": "production"}, actor=ALICE)
    plan = engine.dry_run(prepared, actor=ALICE, reason="looking")
    assert [s["description"] for s in plan.steps] == [
        "set a: 0 → 1",
        "set b: 0 → 1",
        "set c: 0 → 1",
    ]
    assert world.STATE == {} and engine.list() == []
    assert engine.store.lock_holder("production:test") is None
    assert actions(engine) == ["request.dry_run"]


def test_plan_hash_is_stable_and_changes_with_live_state(engine):
    first = engine.prepare("test.set", {"environment": "development"}, actor=ALICE).plan
    again = engine.prepare("test.set", {"environment": "development"}, actor=ALICE).plan
    assert first.hash == again.hash
    world.STATE["b"] = 7
    changed = engine.prepare("test.set", {"environment": "development"}, actor=ALICE).plan
    assert changed.hash != first.hash
    assert changed.steps[1]["description"] == "set b: 7 → 1"


def test_production_needs_an_approval_from_someone_other_than_the_requester(engine):
    execution = submit(engine, "production")
    assert execution.state == State.AWAITING_APPROVAL and execution.required_approvals == 1
    with pytest.raises(Refused, match=r"you requested .*someone else must approve"):
        engine.approve(execution.id, actor=Actor("alice", "Alice", Origin.SLACK))
    with pytest.raises(Refused, match="Carol may not approve"):
        engine.approve(execution.id, actor=CAROL)
    with pytest.raises(Refused, match="only an approved execution can start"):
        engine.start(execution.id, actor=ALICE)
    approved = engine.approve(execution.id, actor=BOB)
    assert approved.state == State.APPROVED
    assert engine.start(execution.id, actor=ALICE).state == State.SUCCEEDED
    decisions = [r for r in engine.audit.export() if r["action"].startswith("approval.")]
    assert [(d["action"], d["actor"]["id"]) for d in decisions] == [
        ("approval.refused", "alice"),
        ("approval.refused", "carol"),
        ("approval.granted", "bob"),
    ]


def test_one_person_counts_once_whatever_channel(make_engine, sandbox_config):
    engine = make_engine()
    execution = submit(engine, "production", keys="a")
    execution.required_approvals = 2  # as a DR failover would
    engine.store.save_execution(execution)
    engine.approve(execution.id, actor=BOB)
    with pytest.raises(Refused, match="Bob has already approved"):
        engine.approve(execution.id, actor=Actor("bob", "Bob", Origin.CLI))
    assert engine.get(execution.id).state == State.AWAITING_APPROVAL
    assert engine.approve(execution.id, actor=DAVE).state == State.APPROVED


def test_denial_ends_the_request_and_releases_the_lock(engine):
    execution = submit(engine, "production")
    with pytest.raises(InvalidInput, match="needs --reason"):
        engine.deny(execution.id, actor=BOB, reason=" ")
    denied = engine.deny(execution.id, actor=BOB, reason="not during the sale")
    assert denied.state == State.DENIED and "not during the sale" in (denied.error or "")
    assert engine.store.lock_holder("production:test") is None
    with pytest.raises(Refused, match="not waiting for a decision"):
        engine.approve(execution.id, actor=DAVE)
    assert world.STATE == {}


def test_approval_expires_and_an_expired_request_cannot_be_approved(engine, clock: FakeClock):
    execution = submit(engine, "production")
    clock.advance(30 * 60 + 1)
    with pytest.raises(Refused, match="expired"):
        engine.approve(execution.id, actor=BOB)
    stored = engine.get(execution.id)
    assert stored.state == State.EXPIRED
    assert engine.store.lock_holder("production:test") is None


def test_changed_plan_voids_approvals_and_nothing_runs(engine):
    execution = submit(engine, "production")
    engine.approve(execution.id, actor=BOB)
    world.STATE["a"] = 5  # someone changed production between approval and start
    after = engine.start(execution.id, actor=ALICE)
    assert after.state == State.AWAITING_APPROVAL
    assert world.RUNS == [] and world.STATE == {"a": 5}
    assert after.steps[0].description == "set a: 5 → 1"
    assert all(a.void for a in after.approvals)
    changed = [r for r in engine.audit.export() if r["action"] == "execution.awaiting_approval"]
    assert changed[-1]["detail"]["changes"] == ["- step 1: set a: 0 → 1", "+ step 1: set a: 5 → 1"]
    # An approval bound to the old plan hash is refused; the requester must confirm anew.
    with pytest.raises(Refused, match=r"plan of .* changed"):
        engine.approve(execution.id, actor=DAVE, plan_hash=execution.plan.hash)
    engine.approve(execution.id, actor=DAVE, plan_hash=after.plan.hash)
    assert engine.get(execution.id).state == State.AWAITING_APPROVAL
    engine.confirm(execution.id, actor=ALICE, plan_hash=after.plan.hash)
    assert engine.start(execution.id, actor=ALICE).state == State.SUCCEEDED
    assert world.STATE == {"a": 1, "b": 1, "c": 1}


def test_a_read_only_report_shows_the_state_at_start_without_asking_again(engine):
    """Nothing is approved for a read-only runbook, so a report that changed between the
    request and the start (a status moving under an outage) is simply the newer report."""
    prepared = engine.prepare("test.status", {"environment": "production"}, actor=ALICE)
    assert prepared.plan.notes == ["state: {}"]
    execution = engine.submit(prepared, actor=ALICE)
    world.STATE["a"] = 7
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED
    assert done.plan.notes == ["state: {'a': 7}"]
    assert engine.get(execution.id).plan.notes == ["state: {'a': 7}"]


def test_second_request_on_a_locked_key_is_refused_naming_the_holder(engine):
    first = submit(engine, "production")
    with pytest.raises(LockHeld) as refused:
        submit(engine, "production", actor=DAVE)
    assert refused.value.holder == first.id
    assert first.id in refused.value.message and "awaiting_approval" in refused.value.message
    assert len(engine.list()) == 1
    assert actions(engine)[-1] == "request.refused"
    # a finished holder no longer blocks
    engine.cancel(first.id, actor=ALICE, reason="wrong window")
    assert submit(engine, "production", actor=DAVE).state == State.AWAITING_APPROVAL


def test_concurrent_requests_on_one_lock_key_one_wins(make_engine, tmp_path, sandbox_config):
    from runbooks.engine.store.sqlite import SqliteStore

    engines = [make_engine(store=SqliteStore(tmp_path / "shared.db")) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = [None, None]

    def request(index: int) -> None:
        prepared = engines[index].prepare("test.set", {"environment": "production"}, actor=ALICE)
        barrier.wait()
        try:
            outcomes[index] = engines[index].submit(prepared, actor=ALICE)
        except LockHeld as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=request, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refusals = [o for o in outcomes if isinstance(o, LockHeld)]
    winners = [o for o in outcomes if not isinstance(o, LockHeld)]
    assert len(refusals) == 1 and len(winners) == 1, outcomes
    assert refusals[0].holder == winners[0].id  # type: ignore[attr-defined]


def test_failed_verification_compensates_completed_steps_in_reverse(engine):
    world.FAILING_VERIFY.add("b")
    execution = submit(engine, keys="a,b,c")
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.COMPENSATED
    assert "step 2 failed" in (done.error or "")
    assert world.RUNS == ["a", "b", "undo:b", "undo:a"]
    assert world.STATE == {"a": 0, "b": 0}
    assert [s.status for s in done.steps] == [
        StepStatus.UNDONE,
        StepStatus.UNDONE,
        StepStatus.PENDING,
    ]
    states = [r["action"] for r in engine.audit.export() if r["action"].startswith("execution.")]
    assert states == [
        "execution.approved",
        "execution.running",
        "execution.failed",
        "execution.compensating",
        "execution.compensated",
    ]
    assert engine.store.lock_holder("development:test") is None


def test_failed_undo_ends_in_compensation_failed_naming_the_step(engine):
    world.FAILING_VERIFY.add("b")
    world.FAILING_UNDO.add("a")
    done = engine.start(submit(engine, keys="a,b").id, actor=ALICE)
    assert done.state == State.COMPENSATION_FAILED
    assert "compensation failed at step(s) 1" in (done.error or "")
    assert done.steps[0].status == StepStatus.UNDO_FAILED


def test_irreversible_steps_are_not_undone_and_say_why_in_the_plan(engine):
    world.FAILING_VERIFY.add("a")
    prepared = engine.prepare(
        "test.set", {"environment": "development", "keys": "a", "announce": True}, actor=ALICE
    )
    assert prepared.plan.steps[0]["irreversible_reason"] == "a message cannot be unsent"
    done = engine.start(engine.submit(prepared, actor=ALICE).id, actor=ALICE)
    assert done.state == State.COMPENSATED
    assert world.RUNS == ["announce:setting a", "a", "undo:a"]


def test_cancel_pending_request(engine):
    execution = submit(engine, "production")
    cancelled = engine.cancel(execution.id, actor=ALICE, reason="changed my mind")
    assert cancelled.state == State.CANCELLED
    with pytest.raises(Refused, match="already ended"):
        engine.cancel(execution.id, actor=ALICE)


def test_cancel_inside_a_running_step_compensates(make_engine, tmp_path):
    from runbooks.engine.clock import SystemClock
    from runbooks.engine.store.sqlite import SqliteStore

    runner = make_engine(clock=SystemClock(), store=SqliteStore(tmp_path / "c.db"))
    other = make_engine(clock=SystemClock(), store=SqliteStore(tmp_path / "c.db"))
    world.GATES["b"] = threading.Event()  # step 2 blocks until cancelled
    execution = submit(runner, keys="a,b,c")
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(runner.start(execution.id, actor=ALICE)))
    thread.start()
    while runner.get(execution.id).steps[1].status != StepStatus.RUNNING:
        threading.Event().wait(0.01)
    other.cancel(execution.id, actor=BOB, reason="stop")
    thread.join(timeout=10)
    done = result[0]
    assert done.state == State.CANCELLED  # type: ignore[attr-defined]
    assert world.RUNS == ["a", "undo:b", "undo:a"]
    assert world.STATE == {"a": 0, "b": 0}


def test_resume_continues_at_first_unverified_step_without_repeating(make_engine, clock):
    engine = make_engine(lease_ttl=10)
    execution = submit(engine, keys="a,b,c")
    # Simulate a crash after step 1: mark it running and done, hold an old lease.
    execution.state = State.RUNNING
    execution.steps[0].status = StepStatus.SUCCEEDED
    world.STATE["a"] = 1
    engine.store.save_execution(execution)
    engine.store.claim_lease(execution.id, "dead-process", clock.now() + 10, clock.now())
    with pytest.raises(LeaseHeld, match="dead-process"):
        engine.resume(execution.id, actor=DAVE)
    clock.advance(11)
    assert [e.id for e in engine.resumable()] == [execution.id]
    done = engine.resume(execution.id, actor=DAVE)
    assert done.state == State.SUCCEEDED
    assert world.RUNS == ["b", "c"]
    assert [s.attempts for s in done.steps] == [0, 1, 1]  # the verified step was not re-run
    assert engine.store.get_lease(execution.id) is None


@pytest.mark.parametrize(
    ("error", "ends"),
    [("cancelled by Bob", State.CANCELLED), ("step 2 failed: boom", State.COMPENSATED)],
)
def test_an_execution_stored_before_stop_reasons_and_triggers_loads_and_resumes(
    make_engine, clock, tmp_path, error, ends
):
    from runbooks.engine.store.sqlite import SqliteStore

    engine = make_engine(lease_ttl=10, store=SqliteStore(tmp_path / "old.db"))
    execution = submit(engine, keys="a,b")
    # As an older version left it: compensating (a cancel, or a failure) after step 1,
    # its document without the trigger and stop_reason fields.
    execution.state = State.COMPENSATING
    execution.steps[0].status = StepStatus.SUCCEEDED
    execution.error = error
    world.STATE["a"] = 1
    engine.store.save_execution(execution)
    doc = execution.to_doc()
    del doc["trigger"], doc["stop_reason"]
    with sqlite3.connect(tmp_path / "old.db") as raw:  # an independent writer of the old row
        raw.execute("UPDATE executions SET doc = ? WHERE id = ?", (json.dumps(doc), execution.id))
    loaded = engine.get(execution.id)
    assert loaded.trigger == Trigger(TriggerKind.PERSON, "alice", None, execution.created_at)
    assert loaded.stop_reason == (
        StopReason.CANCELLED if ends == State.CANCELLED else StopReason.FAILED
    )
    done = engine.resume(execution.id, actor=DAVE)
    assert done.state == ends
    assert world.STATE["a"] == 0


def test_a_cancel_is_a_stop_reason_and_a_request_its_trigger(engine):
    execution = submit(engine, "production")
    assert execution.trigger == Trigger(TriggerKind.PERSON, ALICE.id, None, execution.created_at)
    cancelled = engine.cancel(execution.id, actor=ALICE, reason="changed my mind")
    assert cancelled.stop_reason == StopReason.CANCELLED
    assert engine.get(execution.id).stop_reason == StopReason.CANCELLED


def test_read_only_runbook_takes_no_lock_and_needs_no_approval(engine):
    prepared = engine.prepare("test.status", {"environment": "production"}, actor=CAROL)
    assert prepared.plan.lock_key is None
    execution = engine.submit(prepared, actor=CAROL)
    assert execution.state == State.APPROVED
    assert engine.start(execution.id, actor=CAROL).state == State.SUCCEEDED


def test_every_transition_is_published_to_the_outbox(engine):
    execution = submit(engine, keys="a")
    engine.start(execution.id, actor=ALICE)
    events = engine.events.follow(0)
    assert [e.type for e in events] == [
        "execution.created",
        "execution.state",
        "execution.state",
        "step.started",
        "step.succeeded",
        "execution.state",
    ]
    assert events[-1].payload["state"] == "succeeded"
    assert all(e.execution_id == execution.id for e in events)
