"""DR runbooks against the sandbox's moto server and Kubernetes emulators."""

from __future__ import annotations

from typing import Any

from runbooks.engine.executor import Engine
from runbooks.engine.models import State
from tests.conftest import AwsWorld
from tests.runbooks.test_rollback import ALICE


def _status(engine: Engine) -> list[str]:
    prepared = engine.prepare("dr.status", {}, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED, done.error
    return done.plan.notes


def test_status_reports_each_component_by_region(
    kube_engine: Engine, aws: AwsWorld, cluster: Any
) -> None:
    cluster.lag["US_WEST_2"] = 4.0
    notes = _status(kube_engine)
    assert notes[0] == (
        "DNS api.example.com. → api-production.example.com.: weights us-east-1 100, "
        "us-west-2 0; active: us-east-1"
    )
    assert notes[1].startswith(
        "compute us-east-1 (primary, ACTIVE): node group prod-api-use1 "
        "4/4 in service (bounds 4-10); api: api-deployment 3/3 ready"
    )
    assert notes[2].startswith("compute us-west-2: node group prod-api-usw2 2/2 in service")
    assert notes[3] == "database (atlas): primary in us-east-1; replication lag: us-west-2 4.0s"
    assert any(n.startswith("targets: api RTO 15m") for n in notes)
    assert kube_engine.list()[0].plan.read_only


def test_status_still_reports_when_a_component_cannot_be_read(
    kube_engine: Engine, aws: AwsWorld
) -> None:
    aws.client("autoscaling", "us-west-2").delete_auto_scaling_group(
        AutoScalingGroupName="prod-api-usw2", ForceDelete=True
    )
    notes = _status(kube_engine)
    assert "active: us-east-1" in notes[0]
    assert (
        "node group prod-api-usw2: cannot read (autoscaling group prod-api-usw2 does not "
        "exist in us-west-2)"
    ) in notes[2]
    assert "api: api-deployment 3/3 ready" in notes[2]
    # no database configured in this process's environment: said, not fatal
    assert notes[3].startswith(
        "database (atlas): cannot read (production database: PRODUCTION_MONGODB_URI is not set"
    )
