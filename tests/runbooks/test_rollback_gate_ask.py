"""The rollback gate's ``unverified: ask``: when a signal cannot be read, the run asks people
(healthy or failed) instead of failing at once, waits on the engine's clock for the first
answer, and goes by it. Whoever may cancel the run may answer; nobody answering in time fails.
The rollback stays done either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.config.environments import RollbackGate
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, NotFound, Refused
from runbooks.engine.models import Execution, State, StepStatus
from tests.conftest import KubeSandbox
from tests.support.gate import REGIONS, assert_kept, gate_engine
from tests.support.kube_runs import actions, image
from tests.support.people import ALICE, BOB, CAROL, DAVE
from tests.support.waiting import wait_for


@pytest.fixture
def asking(
    kube: KubeSandbox, health: Any, sandbox_config: Config, tmp_path: Path
) -> Iterator[Engine]:
    gate = RollbackGate(
        settle=2.0, interval=1.0, min_window=1.0, unverified="ask", answer_within=120.0
    )
    with gate_engine(kube, sandbox_config, tmp_path, gate) as engine:
        yield engine


class Running:
    """A production rollback, approved, started on a thread (as the bot's worker would)."""

    def __init__(self, engine: Engine) -> None:
        prepared = engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
        execution = engine.submit(prepared, actor=ALICE)
        engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
        self.engine, self.id = engine, execution.id
        self.done: list[Execution] = []
        self.thread = threading.Thread(
            target=lambda: self.done.append(engine.start(self.id, actor=ALICE))
        )
        self.thread.start()

    def question(self) -> dict[str, Any]:
        """Wait until the gate asks (the step records it, runs.show shows it)."""
        wait_for(lambda: self.engine.question(self.id) or self.done, what="the question")
        assert not self.done, f"ended without asking: {self.done[0].error}"
        found = self.engine.question(self.id)
        assert isinstance(found, dict)
        return found

    def result(self) -> Execution:
        self.thread.join(60)
        assert self.done, "still running"
        return self.done[0]


def test_no_data_asks_and_a_healthy_answer_passes_on_their_word(kube, asking, health) -> None:
    health.set_signal("latency_p95", "us-west-2", None)
    run = Running(asking)
    question = run.question()
    assert question["choices"] == ["healthy", "failed"]
    assert "unverified: no data for p95 response time in us-west-2" in question["text"]
    # runs.show in another terminal: the running step shows the question and how to answer.
    shown = asking.get(run.id).steps[-1]
    assert shown.status == StepStatus.RUNNING
    assert shown.question is not None and shown.question["text"] == question["text"]
    assert f"runs.answer {run.id} CHOICE" in (shown.progress or "")

    asking.answer(run.id, "Healthy", actor=BOB, reason="dashboards fine; exporter restarting")
    done = run.result()
    assert done.state == State.SUCCEEDED, done.error
    assert [s.status for s in done.steps] == [StepStatus.SUCCEEDED] * 3
    assert done.steps[-1].question is None
    output = " ".join(done.steps[-1].output)
    assert "unverified: no data for p95 response time in us-west-2" in output
    assert "Bob answered healthy (dashboards fine; exporter restarting)" in output
    assert "passes on their word" in output
    for region in REGIONS:
        assert image(kube, region) == "app-api:1.4.1"
    trail = actions(asking, run.id)
    assert trail.index("execution.question") < trail.index("execution.answered")
    answered = [r for r in asking.audit.export() if r["action"] == "execution.answered"]
    assert [(r["actor"]["id"], r["outcome"]) for r in answered] == [("bob", "healthy")]
    assert asking.question(run.id) is None  # the question is closed with the step


def test_a_failed_answer_fails_and_keeps_the_rollback(kube, asking, health) -> None:
    health.set_up(False)  # Prometheus errors: unverified, as with no data
    run = Running(asking)
    assert "could not be read" in run.question()["text"]
    asking.answer(run.id, "failed", actor=ALICE, reason="error rate up on the dashboard")
    done = run.result()
    assert_kept(done, kube, asking)
    error = done.steps[-1].error or ""
    assert "unverified: error rate in us-east-1 could not be read" in error
    assert "Alice answered failed (error rate up on the dashboard)" in error


def test_nobody_answering_in_time_fails(kube, health, sandbox_config, tmp_path) -> None:
    gate = RollbackGate(
        settle=2.0, interval=1.0, min_window=1.0, unverified="ask", answer_within=1.0
    )
    health.set_signal("error_rate", "us-east-1", float("nan"))
    with gate_engine(kube, sandbox_config, tmp_path, gate) as engine:
        run = Running(engine)
        done = run.result()
        assert_kept(done, kube, engine)
        assert "nobody answered within 1.0s" in (done.steps[-1].error or "")
        trail = actions(engine, run.id)
        assert "execution.question" in trail
        assert "execution.question_expired" in trail
        assert "execution.answered" not in trail
        with pytest.raises(Refused, match="is not waiting for an answer"):
            engine.answer(run.id, "healthy", actor=BOB)


def test_bad_answers_are_refused_and_change_nothing(kube, asking, health) -> None:
    with pytest.raises(NotFound):
        asking.answer("rb-000000", "healthy", actor=BOB)
    health.set_signal("health_failures", "us-east-1", None)
    run = Running(asking)
    question = run.question()
    before = len(list(asking.audit.export()))
    with pytest.raises(InvalidInput, match="answer one of: healthy, failed"):
        asking.answer(run.id, "maybe", actor=BOB)
    with pytest.raises(Refused, match="Carol may not answer"):
        asking.answer(run.id, "healthy", actor=CAROL)
    with pytest.raises(Refused, match="was closed"):
        asking.answer(run.id, "healthy", actor=BOB, question_key="answer:rb-x:3:0")
    refusals = [
        (r["outcome"], r["actor"]["id"])
        for r in list(asking.audit.export())[before:]
        if r["action"] == "answer.refused"
    ]
    # Every refusal of a known person is audited, saying which it was.
    assert refusals == [("invalid_choice", "bob"), ("not_allowed", "carol"), ("closed", "bob")]
    assert asking.question(run.id) == question  # still asking

    asking.answer(run.id, "failed", actor=DAVE)
    with pytest.raises(Refused, match="already answered failed by Dave"):
        asking.answer(run.id, "healthy", actor=BOB)
    [late] = [
        r
        for r in asking.audit.export()
        if r["action"] == "answer.refused" and r["outcome"] == "already_answered"
    ]
    assert late["actor"]["id"] == "bob" and "answered failed by Dave" in late["detail"]["why"]
    done = run.result()
    assert done.state == State.FAILED
    assert "Dave answered failed" in (done.steps[-1].error or "")


def test_a_cancel_stops_the_wait(kube, asking, health) -> None:
    health.set_signal("latency_p95", "us-east-1", None)
    run = Running(asking)
    run.question()
    asking.cancel(run.id, actor=BOB, reason="rolling forward by hand")
    done = run.result()
    # A cancel compensates, as everywhere (the card's Cancel says so): the wait stops and the
    # rollback is undone; answering "failed" is what keeps it.
    assert done.state == State.CANCELLED, done.error
    assert [s.status for s in done.steps] == [StepStatus.UNDONE] * 2 + [StepStatus.CANCELLED]
    for region in REGIONS:
        assert image(kube, region) == "app-api:1.4.2"
    assert "cancelled by Bob" in (done.steps[-1].error or "")
    assert asking.question(run.id) is None
    assert "execution.question_expired" not in actions(asking, run.id)
