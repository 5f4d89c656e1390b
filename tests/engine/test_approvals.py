"""Approval and access rules, enforced by the engine, against both store backends.

MongoDB runs through mongomock: no MongoDB server can be installed on these machines.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mongomock
import pytest

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.models import Actor, Origin, State
from runbooks.engine.policy import ConfigPolicy, terminal_actor
from runbooks.engine.registry import Registry
from runbooks.engine.store.base import Store
from runbooks.engine.store.mongo import MongoStore
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import AUDIT_KEY, ROOT
from tests.engine import world
from tests.support.people import ALICE, BOB, CAROL, DAVE
from tests.support.rules import RULES_2_IN_PRODUCTION, config_with

MALLORY = Actor("mallory", "Mallory", Origin.CLI)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Store = (
        SqliteStore(tmp_path / "s.db")
        if request.param == "sqlite"
        else MongoStore(mongomock.MongoClient(), "approvals")
    )
    yield backend
    backend.close()


@pytest.fixture
def build(store: Store, clock: FakeClock, tmp_path: Path):
    def make(config: Config | None = None, **policy_kw: Any) -> Engine:
        config = config or load_config(ROOT / "config")
        return Engine(
            config=config,
            store=store,
            registry=Registry(world.SPECS),
            audit=AuditLog(store, AUDIT_KEY.encode(), clock),
            clock=clock,
            policy=ConfigPolicy(config, **policy_kw),
            state_dir=tmp_path,
        )

    return make


def request(engine: Engine, actor: Actor = ALICE, env: str = "production", **kw: Any):
    prepared = engine.prepare("test.set", {"environment": env, "keys": "a"}, actor=actor)
    return engine.submit(prepared, actor=actor, **kw)


def decisions(engine: Engine) -> list[tuple[str, str, str]]:
    return [
        (r["action"], r["actor"]["id"], r["outcome"])
        for r in engine.audit.export()
        if r["action"].startswith(("approval.", "request.refused", "break_glass."))
    ]


def test_self_approval_is_refused_and_audited(build) -> None:
    engine = build()
    execution = request(engine)
    with pytest.raises(Refused, match="someone else must approve"):
        engine.approve(execution.id, actor=Actor("alice", "Alice", Origin.SLACK))
    assert engine.get(execution.id).state == State.AWAITING_APPROVAL
    assert decisions(engine) == [("approval.refused", "alice", "refused")]


def test_the_same_person_counts_once_across_front_ends(build) -> None:
    engine = build(config_with(rules=RULES_2_IN_PRODUCTION))
    execution = request(engine)
    assert execution.required_approvals == 2
    engine.approve(execution.id, actor=BOB)
    with pytest.raises(Refused, match="already approved"):
        engine.approve(execution.id, actor=Actor("bob", "Bob", Origin.CLI))
    assert engine.get(execution.id).state == State.AWAITING_APPROVAL
    assert engine.approve(execution.id, actor=DAVE).state == State.APPROVED


def test_expired_request_cannot_be_approved_or_started(build, clock: FakeClock) -> None:
    engine = build()
    execution = request(engine)
    other = request(engine, env="staging")
    clock.advance(1799)
    engine.approve(execution.id, actor=BOB)  # in time
    clock.advance(2)
    with pytest.raises(Refused, match="expired"):
        engine.start(execution.id, actor=ALICE)
    with pytest.raises(Refused, match="expired"):
        engine.approve(other.id, actor=BOB)
    assert engine.get(execution.id).state == State.EXPIRED
    assert engine.get(other.id).state == State.EXPIRED
    assert world.RUNS == []


def test_denial_ends_at_once_with_reason_and_only_approvers_may_deny(build) -> None:
    engine = build()
    execution = request(engine)
    with pytest.raises(Refused, match="Carol may not deny"):
        engine.deny(execution.id, actor=CAROL, reason="no")
    denied = engine.deny(execution.id, actor=DAVE, reason="freeze for the launch")
    assert denied.state == State.DENIED and "freeze for the launch" in (denied.error or "")
    events = [e for e in engine.events.follow(0) if e.payload.get("state") == "denied"]
    assert events and events[-1].payload["execution_id"] == execution.id


def test_plan_change_voids_approvals(build) -> None:
    engine = build(config_with(rules=RULES_2_IN_PRODUCTION))
    execution = request(engine)
    engine.approve(execution.id, actor=BOB)
    engine.approve(execution.id, actor=DAVE)
    world.STATE["a"] = 9
    after = engine.start(execution.id, actor=ALICE)
    assert after.state == State.AWAITING_APPROVAL and after.valid_approvals() == []
    assert world.RUNS == []
    engine.confirm(execution.id, actor=ALICE, plan_hash=after.plan.hash)
    engine.approve(execution.id, actor=BOB, plan_hash=after.plan.hash[:12])
    assert engine.approve(execution.id, actor=DAVE).state == State.APPROVED
    assert engine.start(execution.id, actor=ALICE).state == State.SUCCEEDED


def test_break_glass_runs_without_approvals_and_opens_a_review(build) -> None:
    engine = build()
    with pytest.raises(InvalidInput, match="--reason TEXT and --incident ID"):
        request(engine, break_glass=True, reason="site down")
    execution = request(engine, break_glass=True, reason="site down", incident="PD-1234")
    assert execution.state == State.APPROVED and execution.break_glass
    assert engine.start(execution.id, actor=ALICE).state == State.SUCCEEDED
    [review] = engine.reviews()
    assert review["execution_id"] == execution.id and review["doc"]["incident"] == "PD-1234"
    with pytest.raises(Refused, match="someone else must review"):
        engine.ack_review(execution.id, actor=ALICE)
    engine.ack_review(execution.id, actor=BOB, note="checked the rollback")
    assert engine.reviews() == []
    with pytest.raises(Refused, match="already acknowledged by Bob"):
        engine.ack_review(execution.id, actor=DAVE)
    assert [d[0] for d in decisions(engine)] == ["break_glass.used", "break_glass.reviewed"]


def test_break_glass_only_where_policy_allows(build) -> None:
    engine = build()
    with pytest.raises(Refused, match=r"break-glass is not allowed for test.set in staging"):
        request(engine, env="staging", break_glass=True, reason="x", incident="PD-1")
    assert engine.reviews() == []


def test_freeze_refuses_all_but_break_glass(build, clock: FakeClock) -> None:
    now = clock.now()
    engine = build(
        config_with(
            freezes=[
                {
                    "environments": ["production"],
                    "start": iso(now - 60),
                    "end": iso(now + 3600),
                    "reason": "Black Friday",
                }
            ]
        )
    )
    with pytest.raises(Refused, match=r"change freeze until .*Black Friday"):
        request(engine)
    assert request(engine, env="staging").state == State.AWAITING_APPROVAL  # other envs run
    assert (
        request(engine, break_glass=True, reason="outage", incident="PD-9").state == State.APPROVED
    )
    assert ("request.refused", "alice", "not_allowed") in decisions(engine)


def test_channel_restriction_applies_to_slack_requests(build) -> None:
    rules = [
        {
            "runbooks": "*",
            "environments": ["production"],
            "requesters": ["sre"],
            "approvers": ["sre"],
            "approvals": 1,
            "channels": ["C0OPS"],
        }
    ]
    engine = build(config_with(rules=rules))
    slack_alice = Actor("alice", "Alice", Origin.SLACK)
    with pytest.raises(Refused, match="only be requested from <#C0OPS>, not from <#C0RANDOM>"):
        request(engine, actor=slack_alice, channel="C0RANDOM")
    assert request(engine, actor=slack_alice, channel="C0OPS").state == State.AWAITING_APPROVAL


def test_terminal_requests_and_terminal_approvals_can_be_forbidden(build) -> None:
    rules = [
        {
            "runbooks": "*",
            "environments": ["production"],
            "requesters": ["sre"],
            "approvers": ["sre"],
            "approvals": 1,
            "terminal_requests": False,
            "slack_approvals_only": True,
        }
    ]
    engine = build(config_with(rules=rules))
    with pytest.raises(Refused, match="cannot be requested from a terminal"):
        request(engine)
    execution = request(engine, actor=Actor("alice", "Alice", Origin.SLACK), channel="C0OPS")
    with pytest.raises(Refused, match="must come from Slack"):
        engine.approve(execution.id, actor=DAVE)
    assert engine.approve(execution.id, actor=BOB).state == State.APPROVED


def test_unknown_or_unauthorised_people_are_refused(build) -> None:
    engine = build()
    with pytest.raises(Refused, match=r"Carol may not request test.set in production"):
        request(engine, actor=CAROL)
    assert request(engine, actor=CAROL, env="development").state == State.APPROVED
    execution = request(engine)
    with pytest.raises(Refused, match="Mallory may not approve"):
        engine.approve(execution.id, actor=MALLORY)
    with pytest.raises(Refused, match="Carol may not approve"):
        engine.approve(execution.id, actor=CAROL)
    config = load_config(ROOT / "config")
    with pytest.raises(InvalidInput, match="unknown user 'mallory'"):
        terminal_actor(config, override="mallory")
    real = config_with(allow_user_override=False)
    with pytest.raises(InvalidInput, match="does not allow overriding"):
        terminal_actor(real, override="alice")
    assert terminal_actor(real, override=None, login="bob").id == "bob"


def test_slack_usergroups_can_approve(build) -> None:
    rules = [
        {
            "runbooks": "*",
            "environments": ["production"],
            "requesters": ["sre"],
            "approvers": ["slack:S0ONCALL"],
            "approvals": 1,
        }
    ]
    engine = build(
        config_with(rules=rules), usergroups=lambda gid: {"U0CAROL"} if gid == "S0ONCALL" else set()
    )
    execution = request(engine)
    with pytest.raises(Refused, match="Bob may not approve"):
        engine.approve(execution.id, actor=BOB)
    assert (
        engine.approve(execution.id, actor=Actor("carol", "Carol", Origin.SLACK)).state
        == State.APPROVED
    )


def test_read_only_runbooks_have_no_gate(build) -> None:
    engine = build()
    prepared = engine.prepare("test.status", {"environment": "production"}, actor=CAROL)
    assert engine.submit(prepared, actor=CAROL).state == State.APPROVED


def test_explain_says_who_may_do_what(build, clock: FakeClock) -> None:
    engine = build()
    text = "\n".join(
        engine.policy.explain(
            "dr.failover", "production", "carol", read_only=False, now=clock.now()
        )
    )
    assert "Carol (developers) may NOT request it" in text
    assert "needs 2 approval(s) from sre" in text
    assert "Alice (alice), Bob (bob), Dave (dave)" in text
    text = "\n".join(
        engine.policy.explain("rollback", "development", "carol", read_only=False, now=clock.now())
    )
    assert "Carol (developers) MAY request it" in text and "needs no approval" in text
    with pytest.raises(InvalidInput, match="unknown person 'eve'"):
        engine.policy.explain("rollback", "production", "eve", read_only=False, now=0)
