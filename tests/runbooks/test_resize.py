"""``maintenance.resize`` against the sandbox's moto server (the AWS CLI as oracle)."""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.engine.clock import iso
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.models import Execution, State
from tests.conftest import AwsWorld
from tests.support.people import ALICE, CAROL
from tests.support.windows import _window, run_approved

GROUP = "staging-api-use1"


def _group(aws: AwsWorld) -> Any:
    return aws.group(GROUP)


def _types(aws: AwsWorld) -> list[str]:
    """Instance types as EC2 reports them (not the group's own listing)."""
    ids = [i["InstanceId"] for i in _group(aws)["Instances"]]
    found = aws.cli("ec2", "describe-instances", "--instance-ids", *ids)
    return sorted(i["InstanceType"] for r in found["Reservations"] for i in r["Instances"])


def _run(engine: Engine, params: dict[str, Any]) -> Execution:
    return run_approved(engine, "maintenance.resize", params)


def test_resize_replaces_every_instance_within_the_window(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    done = _run(
        kube_engine,
        {
            "environment": "staging",
            "instance_type": "t3.large",
            "window": _window(600),
            "settle": "0s",
        },
    )
    assert done.state == State.SUCCEEDED, done.error
    assert _types(aws) == ["t3.large", "t3.large"]
    group = _group(aws)
    assert group["LaunchTemplate"]["Version"] == "2" and group["DesiredCapacity"] == 2
    assert "staging-api-use1: all 2 instances are t3.large" in done.steps[1].output
    assert "1 at a time" in done.plan.steps[1]["description"]


def test_window_closing_midway_returns_to_the_previous_template_and_type(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    aws.client("autoscaling").set_desired_capacity(AutoScalingGroupName=GROUP, DesiredCapacity=4)
    # On the engine's FakeClock: the window opens by virtual time, so load cannot close it
    # before the run starts, and the settles cost no wall time.
    done = _run(
        kube_engine,
        # Four instances, one at a time, each settling 1 s: the 2.5 s left cannot hold them all.
        {
            "environment": "staging",
            "instance_type": "t3.large",
            "window": _window(2.5, now=kube_engine.clock.now()),
            "settle": "1s",
        },
    )
    assert done.state == State.COMPENSATED, [(s.status, s.error, s.output) for s in done.steps]
    assert "maintenance window" in (done.error or "")
    assert _types(aws) == ["t3.medium"] * 4  # replaced back
    group = _group(aws)
    assert group["LaunchTemplate"]["Version"] == "1"  # pinned previous version, not $Latest
    versions = aws.cli(
        "ec2", "describe-launch-template-versions", "--launch-template-name", f"{GROUP}-lt"
    )
    # the new version stays as an unused record
    assert sorted(v["VersionNumber"] for v in versions["LaunchTemplateVersions"]) == [1, 2]
    assert "version 2 kept unused; the group uses 1 again" in done.steps[0].output


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"instance_type": "m5.24xlarge"},
            InvalidInput,
            "'m5.24xlarge' is not allowed in staging; allowed: t3.medium, t3.large, t3.xlarge",
        ),
        (
            {"instance_type": "t3.large", "window": "nope"},
            InvalidInput,
            "--window 'nope': no such window; known:",
        ),
        (
            {"instance_type": "t3.large", "window": "tomorrow/4h"},
            InvalidInput,
            "expected START/DURATION",
        ),
        (
            {"instance_type": "t3.large", "window": "2020-01-01T00:00Z/1h"},
            Refused,
            "is not open now",
        ),
    ],
)
def test_bad_resize_requests_change_nothing(
    kube_engine: Engine, aws: AwsWorld, params: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = _group(aws)
    with pytest.raises(error) as caught:
        kube_engine.prepare("maintenance.resize", {"environment": "staging", **params}, actor=ALICE)
    assert message in str(getattr(caught.value, "message", caught.value))
    assert _group(aws) == before


def test_production_resize_needs_an_open_declared_window(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    prepared = kube_engine.prepare(
        "maintenance.resize",
        {"environment": "production", "instance_type": "c5.2xlarge", "window": _window(600)},
        actor=ALICE,
    )
    # An ad hoc window does not satisfy policy: production resizes only in a declared window.
    with pytest.raises(Refused) as caught:
        kube_engine.submit(prepared, actor=ALICE)
    assert "runs only inside a maintenance window" in caught.value.message


def _standalone(aws: AwsWorld, name: str) -> dict[str, Any]:
    """The instance with this Name tag as the AWS CLI describes it."""
    found = aws.cli("ec2", "describe-instances", "--filters", f"Name=tag:Name,Values={name}")
    [instance] = [i for r in found["Reservations"] for i in r["Instances"]]
    return dict(instance)


def test_resize_a_standalone_instance_stops_changes_and_starts_it(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    before = _standalone(aws, "staging-reports-use1")
    assert before["InstanceType"] == "t3.medium" and before["State"]["Name"] == "running"
    params = {
        "environment": "staging",
        "instance_type": "t3.xlarge",
        "instance": "staging-reports-use1",
        "window": _window(600, now=kube_engine.clock.now()),
        "settle": "1s",
    }
    prepared = kube_engine.prepare("maintenance.resize", params, actor=ALICE)
    [step] = prepared.plan.steps
    assert step["description"].startswith(
        f"resize instance staging-reports-use1 ({before['InstanceId']}) in staging (us-east-1): "
        "stop, t3.medium → t3.xlarge, start, wait until its status checks pass, not starting "
        "after "
    )
    assert any("STOPPED while its type changes" in n for n in prepared.plan.notes)
    done = _run(kube_engine, params)
    assert done.state == State.SUCCEEDED, done.error
    after = _standalone(aws, "staging-reports-use1")
    assert after["InstanceId"] == before["InstanceId"]  # the same instance, not a new one
    assert after["InstanceType"] == "t3.xlarge" and after["State"]["Name"] == "running"
    status = aws.cli("ec2", "describe-instance-status", "--instance-ids", after["InstanceId"])
    assert status["InstanceStatuses"][0]["InstanceStatus"]["Status"] == "ok"
    assert _types(aws) == ["t3.medium", "t3.medium"]  # the node group is not touched
    again = kube_engine.prepare("maintenance.resize", params, actor=ALICE)
    assert again.plan.steps == [] and "already t3.xlarge" in again.plan.notes[-1]


def test_resize_a_standalone_instance_refuses_bad_names_and_a_closing_window(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    base = {"environment": "staging", "instance_type": "t3.large", "window": _window(600)}
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare("maintenance.resize", {**base, "instance": "nope"}, actor=ALICE)
    assert caught.value.message == (
        "--instance 'nope' is not a standalone instance of staging; configured: "
        "staging-reports-use1 (us-east-1) (standalone_instances)"
    )
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare(
            "maintenance.resize", {**base, "instance": "prod-reports-use1"}, actor=ALICE
        )
    assert "not a standalone instance of staging" in caught.value.message
    # The window closes before a stop/start fits (the settle time is the margin): the step
    # refuses to stop the instance, which keeps running as it was.
    short = {**base, "instance": "staging-reports-use1", "window": _window(5), "settle": "30s"}
    done = _run(kube_engine, short)
    assert done.state in (State.FAILED, State.COMPENSATED)
    assert "no time to stop staging-reports-use1; not starting" in (done.error or "")
    after = _standalone(aws, "staging-reports-use1")
    assert after["InstanceType"] == "t3.medium" and after["State"]["Name"] == "running"


def test_a_future_window_can_be_previewed_but_not_requested(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    from runbooks.engine.lifecycle.requests import Outcome, Request

    start = kube_engine.clock.now() + 3 * 86400
    window = f"{iso(start).replace('.000', '')}/2h"
    params = {"environment": "staging", "instance_type": "t3.large", "window": window}
    preview = kube_engine.request(Request("maintenance.resize", params, ALICE, dry_run=True))
    assert preview.outcome == Outcome.DRY_RUN and preview.plan.steps
    assert any(
        "NOT OPEN NOW: the real request is refused until it opens" in n
        for n in (preview.plan.notes)
    )
    # The verdict agrees with the note (it said "would be allowed now" beside it before).
    assert preview.would_refuse is not None and "is not open now" in preview.would_refuse
    assert preview.dry_run_verdict.startswith("the real request would be refused now: ")
    assert f"it opens at {iso(start)}" in preview.dry_run_verdict
    assert (
        preview.plan.hash
        == kube_engine.request(Request("maintenance.resize", params, ALICE, dry_run=True)).plan.hash
    )  # the verdict stays outside the plan's hash
    with pytest.raises(Refused, match="is not open now"):
        kube_engine.request(Request("maintenance.resize", params, ALICE))
    # Someone who may not request it sees the plan too, and the verdict says first what the
    # real request would meet first: the permission refusal, before the plan is made.
    theirs = kube_engine.request(Request("maintenance.resize", params, CAROL, dry_run=True))
    assert theirs.plan.hash == preview.plan.hash
    assert theirs.dry_run_verdict.startswith(
        "the real request would be refused now: Carol may not request maintenance.resize in "
        "staging; requesters: sre"
    ), theirs.dry_run_verdict
    with pytest.raises(Refused, match=r"^Carol may not request maintenance\.resize in staging"):
        kube_engine.request(Request("maintenance.resize", params, CAROL))
    assert kube_engine.list() == []
    assert _types(aws) == ["t3.medium", "t3.medium"]
