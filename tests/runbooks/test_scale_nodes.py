"""``scale.nodes`` against the sandbox's moto server through the real AWS adapter (boto3),
with the AWS CLI as an independent oracle."""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.models import Execution, State
from tests.conftest import AwsWorld
from tests.support.people import ALICE, BOB


def _group(aws: AwsWorld, name: str = "prod-api-use1", region: str = "us-east-1") -> Any:
    return aws.group(name, region)


def _run(engine: Engine, params: dict[str, str], **submit: Any) -> Execution:
    prepared = engine.prepare(
        "scale.nodes", params, actor=ALICE, break_glass=bool(submit.get("break_glass"))
    )
    execution = engine.submit(prepared, actor=ALICE, **submit)
    if execution.state == State.AWAITING_APPROVAL:
        engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)


def test_scale_up_sets_capacity_and_waits_for_instances(kube_engine: Engine, aws: AwsWorld) -> None:
    done = _run(kube_engine, {"environment": "production", "desired": "6"})
    assert done.state == State.SUCCEEDED, done.error
    group = _group(aws)
    assert group["DesiredCapacity"] == 6
    assert sum(1 for i in group["Instances"] if i["LifecycleState"] == "InService") == 6
    assert any(t["Key"] == "runbook-bot:last-scaled-at" for t in group["Tags"])
    assert "prod-api-use1: 6/6 instances in service" in done.steps[0].output
    assert (
        _group(aws, "prod-api-usw2", "us-west-2")["DesiredCapacity"] == 2
    )  # other region untouched


def test_other_region_by_flag(kube_engine: Engine, aws: AwsWorld) -> None:
    done = _run(kube_engine, {"environment": "production", "desired": "4", "region": "us-west-2"})
    assert done.state == State.SUCCEEDED, done.error
    assert _group(aws, "prod-api-usw2", "us-west-2")["DesiredCapacity"] == 4
    assert _group(aws)["DesiredCapacity"] == 4


@pytest.mark.parametrize(
    ("desired", "message"),
    [
        ("25", "--desired: 25 is outside production's bounds 2-20"),
        ("11", "--desired: 11 is outside prod-api-use1's own bounds 4-10"),
        ("3", "--desired: 3 is outside prod-api-use1's own bounds 4-10"),
    ],
)
def test_out_of_bounds_is_refused_and_changes_nothing(
    kube_engine: Engine, aws: AwsWorld, desired: str, message: str
) -> None:
    before = _group(aws)
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare(
            "scale.nodes", {"environment": "production", "desired": desired}, actor=ALICE
        )
    assert message in caught.value.message
    assert _group(aws) == before
    assert kube_engine.list() == []


def test_cooldown_refuses_unless_break_glass(kube_engine: Engine, aws: AwsWorld) -> None:
    assert _run(kube_engine, {"environment": "production", "desired": "6"}).state == State.SUCCEEDED
    with pytest.raises(Refused) as caught:
        kube_engine.prepare(
            "scale.nodes", {"environment": "production", "desired": "5"}, actor=ALICE
        )
    assert "the scale-down cooldown is 10m" in caught.value.message
    assert "--break-glass" in (caught.value.hint or "")
    with pytest.raises(Refused) as caught:
        kube_engine.prepare(
            "scale.nodes", {"environment": "production", "desired": "8"}, actor=ALICE
        )
    assert "the scale-up cooldown is 3m" in caught.value.message
    assert _group(aws)["DesiredCapacity"] == 6
    done = _run(
        kube_engine,
        {"environment": "production", "desired": "8"},
        break_glass=True,
        reason="traffic spike, pages failing",
        incident="PD1234",
    )
    assert done.state == State.SUCCEEDED, done.error
    assert any("BREAK-GLASS" in note for note in done.plan.notes)
    assert _group(aws)["DesiredCapacity"] == 8


def test_dry_run_changes_nothing(kube_engine: Engine, aws: AwsWorld) -> None:
    before = [_group(aws), _group(aws, "prod-api-usw2", "us-west-2")]
    prepared = kube_engine.prepare(
        "scale.nodes", {"environment": "production", "desired": "7"}, actor=ALICE
    )
    plan = kube_engine.dry_run(prepared, actor=ALICE)
    assert [s["description"] for s in plan.steps] == [
        "set node group prod-api-use1 in production (us-east-1): 4 → 7 instances, wait until "
        "all are in service"
    ]
    assert [_group(aws), _group(aws, "prod-api-usw2", "us-west-2")] == before


def test_no_node_group_configured_is_explained(kube_engine: Engine, aws: AwsWorld) -> None:
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare(
            "scale.nodes", {"environment": "development", "desired": "2"}, actor=ALICE
        )
    assert "development has no node group in us-east-1" in caught.value.message
