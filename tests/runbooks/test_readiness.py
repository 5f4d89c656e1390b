"""Readiness against the sandbox: break one thing at a time through an independent client
(kubectl pauses a deployment, the AWS CLI shrinks then deletes the standby's node group,
kubectl sets another image in one region): exactly one finding names it, and fixing it clears
it. Every evaluation reads only: the Kubernetes emulators' request logs show no write."""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.engine.errors import InvalidInput
from runbooks.engine.executor import Engine
from tests.conftest import KubeSandbox
from tests.support.people import ALICE

REGIONS = ("us-east-1", "us-west-2")


def problems(kube: KubeSandbox, engine: Engine, runbook: str) -> list[tuple[str, str]]:
    """The findings of one runbook's checks in production, asserting the evaluation wrote
    nothing to either cluster."""
    seen = {region: len(kube.cluster(region).requests) for region in REGIONS}
    report = engine.readiness(actor=ALICE, environment="production", runbook=runbook)
    for region in REGIONS:
        calls = kube.cluster(region).requests[seen[region] :]
        assert calls, "the checks read the cluster"
        assert {method for method, _path in calls} == {"GET"}, calls
    assert report.findings, "every check says something"
    return [(f.subject, f.detail) for f in report.problems]


def test_one_broken_thing_one_finding_and_fixing_it_clears_it(
    kube: KubeSandbox, kube_engine: Engine, aws: Any, cluster: Any
) -> None:
    assert problems(kube, kube_engine, "rollback") == []
    assert problems(kube, kube_engine, "dr.failover") == []

    deploy = ("deployment/api-deployment", "-n", "production")
    assert kube.kubectl("rollout", "pause", *deploy, region="us-west-2").returncode == 0
    ((subject, detail),) = problems(kube, kube_engine, "rollback")
    assert subject == "api us-west-2" and "is paused: a rollback would be refused" in detail
    assert kube.kubectl("rollout", "resume", *deploy, region="us-west-2").returncode == 0
    assert problems(kube, kube_engine, "rollback") == []

    shrink = ["--auto-scaling-group-name", "prod-api-usw2", "--min-size", "0"]
    aws.cli("autoscaling", "update-auto-scaling-group", *shrink, "--max-size", "2",
            "--desired-capacity", "2", region="us-west-2")  # fmt: skip
    ((subject, detail),) = problems(kube, kube_engine, "dr.failover")
    assert subject == "node group prod-api-usw2 capacity"
    assert "can grow to 2 nodes, but a failover needs 4" in detail
    aws.cli("autoscaling", "update-auto-scaling-group", *shrink, "--max-size", "10",
            region="us-west-2")  # fmt: skip
    assert problems(kube, kube_engine, "dr.failover") == []

    image = "api=123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.3"
    assert kube.kubectl("set", "image", *deploy, image, region="us-west-2").returncode == 0
    ((subject, detail),) = problems(kube, kube_engine, "dr.failover")
    assert subject == "api images"
    assert "us-east-1 app-api:1.4.2" in detail and "us-west-2 app-api:1.4.3" in detail

    aws.cli("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name",
            "prod-api-usw2", "--force-delete", region="us-west-2")  # fmt: skip
    found = dict(problems(kube, kube_engine, "dr.failover"))
    assert found["node group prod-api-usw2"].startswith("could not be checked: ")  # never a pass
    assert set(found) == {"node group prod-api-usw2", "api images"}

    audited = [r for r in kube_engine.audit.export() if r["action"] == "readiness.checked"]
    assert audited[-1]["outcome"] == "findings"
    assert any("node group prod-api-usw2" in p for p in audited[-1]["detail"]["problems"])


def test_an_unknown_runbook_or_environment_is_refused(kube_engine: Engine) -> None:
    with pytest.raises(InvalidInput, match="unknown runbook 'rolback'"):
        kube_engine.readiness(actor=ALICE, runbook="rolback")
    with pytest.raises(InvalidInput, match="unknown environment 'prod'"):
        kube_engine.readiness(actor=ALICE, environment="prod")
