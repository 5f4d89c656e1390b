"""``dr.simulate --scenario region-failure``: in the sandbox's two-region ``rehearsal``
environment, the region serving it fails for real (its pods scaled to zero), the run sees it
down, fails over as ``dr.failover`` does, restores the region and fails back. Oracles: the
Kubernetes emulator's watch history and kubectl, the AWS CLI for Route53 and the node groups,
the Atlas emulator's record of PATCHes; production is untouched throughout."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import Refused
from runbooks.engine.models import State
from sandbox import atlas
from tests.conftest import AwsWorld, KubeSandbox
from tests.runbooks.conftest import live_engine, started
from tests.support.backups import output
from tests.support.people import ALICE, BOB
from tests.support.waiting import wait_for

DEPLOYMENTS = "apps/deployments"


@dataclass
class Clusters:
    production: atlas.ClusterState
    rehearsal: atlas.ClusterState


@pytest.fixture
def clusters(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clusters]:
    """The sandbox's Atlas project: production's cluster and rehearsal's, one Admin API."""
    production = atlas.ClusterState(election_delay=0.2)
    rehearsal = atlas.ClusterState(name="rehearsal", election_delay=0.2)
    api = atlas.AtlasEmulator(production, others=[rehearsal]).start()
    wires = [atlas.WireDatabase(production), atlas.WireDatabase(rehearsal)]
    for wire in wires:
        wire.start()
    for key, value in {
        "PRODUCTION_MONGODB_URI": wires[0].uri,
        "REHEARSAL_MONGODB_URI": wires[1].uri,
        "ATLAS_API_URL": api.url,
        "ATLAS_PUBLIC_KEY": atlas.PUBLIC_KEY,
        "ATLAS_PRIVATE_KEY": atlas.PRIVATE_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    yield Clusters(production, rehearsal)
    api.stop()
    for wire in wires:
        wire.stop()


@pytest.fixture
def engine(
    kube: KubeSandbox, sandbox_config: Config, tmp_path: Path, health: Any, aws: AwsWorld
) -> Iterator[Engine]:
    with live_engine(sandbox_config, tmp_path, kubeconfig=str(kube.kubeconfig)) as built:
        yield built


def weights(aws: AwsWorld, record: str) -> dict[str, int]:
    """Read by the AWS CLI, independently of the adapter."""
    zone = aws.cli("route53", "list-hosted-zones-by-name")["HostedZones"][0]["Id"]
    records = aws.cli("route53", "list-resource-record-sets", "--hosted-zone-id", zone)
    return {
        r["SetIdentifier"]: r["Weight"]
        for r in records["ResourceRecordSets"]
        if r["Name"] == record
    }


def replicas(kube: KubeSandbox, namespace: str, region: str) -> str:
    """Ready/desired replicas of api-deployment, read by kubectl."""
    shown = kube.kubectl(
        "get",
        "deployment",
        "api-deployment",
        "-n",
        namespace,
        "-o",
        "jsonpath={.status.readyReplicas}/{.spec.replicas}",
        region=region,
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


def simulate(engine: Engine, **params: Any) -> Any:
    prepared = engine.prepare(
        "dr.simulate",
        {"scenario": "region-failure", "environment": "rehearsal", **params},
        actor=ALICE,
    )
    execution = engine.submit(prepared, actor=ALICE)
    assert execution.state == State.AWAITING_APPROVAL  # the annual simulation: one approval
    engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)


def test_a_region_fails_over_and_back_and_the_environment_ends_as_it_started(
    engine: Engine, kube: KubeSandbox, aws: AwsWorld, clusters: Clusters, health: Any
) -> None:
    seen = len(kube.cluster("us-east-1").history)
    done = simulate(engine)
    assert done.state == State.SUCCEEDED, done.error
    assert [s["description"] for s in done.plan.steps] == [
        "scale deployment api-deployment in rehearsal (us-east-1): 3 → 0 replicas",
        "observe us-east-1 down: no ready pod in rehearsal/api-deployment; record the RPO "
        "(replication lag of us-west-2 at the failure)",
        "set node group rehearsal-api-usw2 in rehearsal (us-west-2): 1 → 2 instances, wait "
        "until all are in service",
        "promote the rehearsal database in us-west-2 (move its primary there)",
        "shift traffic of api-rehearsal.example.com.: us-east-1 100/us-west-2 0 → "
        "us-east-1 0/us-west-2 100",
        f"verify us-west-2: rehearsal-api-usw2 targets healthy and {health.url}/us-west-2/health "
        "answers 200 3 times in a row",
        "scale deployment api-deployment in rehearsal (us-east-1): 0 → 3 replicas",
        "promote the rehearsal database in us-east-1 (move its primary there)",
        "shift traffic of api-rehearsal.example.com.: us-east-1 0/us-west-2 100 → "
        "us-east-1 100/us-west-2 0",
        f"verify us-east-1: rehearsal-api-use1 targets healthy and {health.url}/us-east-1/health "
        "answers 200 3 times in a row",
        "set node group rehearsal-api-usw2 in rehearsal (us-west-2): 2 → 1 instances, wait "
        "until all are in service",
    ]
    # The failure was real: the emulator's watch saw rehearsal's deployment at 0 ready of 0.
    history = kube.cluster("us-east-1").history
    states = [
        (obj["spec"]["replicas"], obj.get("status", {}).get("readyReplicas", 0))
        for _rv, _kind, resource, obj in history[seen - len(history) :]
        if resource == DEPLOYMENTS
        and obj["metadata"]["namespace"] == "rehearsal"
        and obj["metadata"]["name"] == "api-deployment"
    ]
    assert (0, 0) in states and states[-1] == (3, 3)
    # The database moved to us-west-2 and back (the Atlas emulator's record of the PATCHes).
    preferred = [
        next(
            c["regionName"] for c in p["replicationSpecs"][0]["regionConfigs"] if c["priority"] == 7
        )
        for p in clusters.rehearsal.patches
    ]
    assert preferred == ["US_WEST_2", "US_EAST_1"]
    assert clusters.rehearsal.primary == "US_EAST_1"
    # Ends as it started: traffic, pods, node groups.
    assert weights(aws, "api-rehearsal.example.com.") == {"us-east-1": 100, "us-west-2": 0}
    assert replicas(kube, "rehearsal", "us-east-1") == "3/3"
    assert int(aws.group("rehearsal-api-usw2", "us-west-2")["DesiredCapacity"]) == 1
    # Measured against the environment's targets.
    report = output(done)
    assert done.steps[0].output[0] == "scaled to 0"
    assert "us-east-1 down: rehearsal/api-deployment 0 ready" in report
    assert (
        "RPO achieved 2.0s (replication lag of us-west-2 when us-east-1 failed: the writes a real "
        "region failure would lose; target 5m): met"
    ) in report
    [rto] = [m for step in done.steps for m in step.measures if m["name"] == "RTO"]
    assert rto["target"] == 900 and 0 < rto["seconds"] <= 900
    status = engine.prepare("dr.status", {"environment": "rehearsal"}, actor=ALICE).plan.notes
    assert status[0] == (
        "DNS api.rehearsal.example.com. → api-rehearsal.example.com.: weights us-east-1 100, "
        "us-west-2 0; active: us-east-1"
    )
    assert any(n.startswith("database (atlas): primary in us-east-1") for n in status), status
    # Production was never touched.
    assert weights(aws, "api-production.example.com.") == {"us-east-1": 100, "us-west-2": 0}
    assert clusters.production.patches == [] and clusters.production.primary == "US_EAST_1"
    assert replicas(kube, "production", "us-east-1") == "3/3"
    assert int(aws.group("prod-api-usw2", "us-west-2")["DesiredCapacity"]) == 2


def test_a_failover_that_would_lose_more_than_the_rpo_is_refused_before_the_failure(
    engine: Engine, kube: KubeSandbox, clusters: Clusters
) -> None:
    clusters.rehearsal.lag["US_WEST_2"] = 600.0
    with pytest.raises(
        Refused, match="replication lag in us-west-2 is 10m, beyond the database RPO of 5m"
    ):
        engine.prepare(
            "dr.simulate",
            {"scenario": "region-failure", "environment": "rehearsal"},
            actor=ALICE,
        )
    assert replicas(kube, "rehearsal", "us-east-1") == "3/3"
    assert engine.list() == []


def test_an_unhealthy_survivor_is_refused_before_the_failure(
    engine: Engine, kube: KubeSandbox, clusters: Clusters, health: Any
) -> None:
    health.fail("us-west-2")
    with pytest.raises(Refused, match="us-west-2 is not healthy"):
        engine.prepare(
            "dr.simulate",
            {"scenario": "region-failure", "environment": "rehearsal"},
            actor=ALICE,
        )
    assert replicas(kube, "rehearsal", "us-east-1") == "3/3"


def test_a_cancel_mid_failover_brings_the_failed_region_back(
    engine: Engine, kube: KubeSandbox, aws: AwsWorld, clusters: Clusters
) -> None:
    """Cancelled while the database promotion waits for its election: compensation returns
    the survivor's capacity and scales the failed region's pods up again; traffic never
    moved."""
    clusters.rehearsal.election_delay = 30.0  # the promotion waits; the cancel comes first
    prepared = engine.prepare(
        "dr.simulate",
        {"scenario": "region-failure", "environment": "rehearsal"},
        actor=ALICE,
    )
    execution = engine.submit(prepared, actor=ALICE)
    engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    with started(engine, execution.id, actor=ALICE) as finished:
        wait_for(
            lambda: engine.get(execution.id).steps[3].status.value == "running",
            what="the promotion",
        )
        # The region is down now (Kubernetes omits readyReplicas when none is ready).
        assert replicas(kube, "rehearsal", "us-east-1") == "/0"
        engine.cancel(execution.id, actor=ALICE, reason="rehearsal interrupted")
    assert finished and finished[0].state == State.CANCELLED, finished
    statuses = [step.status.value for step in finished[0].steps]
    assert statuses[:4] == ["undone", "undone", "undone", "cancelled"], statuses
    assert weights(aws, "api-rehearsal.example.com.") == {"us-east-1": 100, "us-west-2": 0}
    assert replicas(kube, "rehearsal", "us-east-1") == "3/3"
    assert int(aws.group("rehearsal-api-usw2", "us-west-2")["DesiredCapacity"]) == 1


@pytest.mark.parametrize(
    ("environment", "error"),
    [
        ("staging", "region-failure needs an environment with two regions"),
        ("production", "never runs in production"),
    ],
)
def test_region_failure_is_refused_where_it_cannot_or_must_not_run(
    engine: Engine, environment: str, error: str
) -> None:
    with pytest.raises(Refused, match=error):
        engine.prepare(
            "dr.simulate",
            {"scenario": "region-failure", "environment": environment},
            actor=ALICE,
        )
