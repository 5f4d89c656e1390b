"""A fake ``Infrastructure``: deployments and autoscalers per (environment, region), node
groups and DNS weights per region."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runbooks.interfaces import (
    DeploymentState,
    HpaState,
    Infrastructure,
    InfrastructureError,
    Instance,
    NodeGroupState,
)


def deployment(name: str, namespace: str, replicas: int) -> DeploymentState:
    return DeploymentState(
        name=name,
        namespace=namespace,
        revision=1,
        images={"app": f"{name}:1"},
        replicas=replicas,
        ready=replicas,
        updated=replicas,
        available=replicas,
        generation=1,
        observed_generation=1,
        paused=False,
        template={},
        labels={},
    )


def node_group(name: str, region: str, desired: int) -> NodeGroupState:
    return NodeGroupState(
        name=name,
        region=region,
        minimum=2,
        maximum=20,
        desired=desired,
        instances=tuple(
            Instance(f"i-{n}", "m5.large", "InService", "Healthy") for n in range(desired)
        ),
        launch_template=None,
        template_version=None,
        last_scaled_at=None,
    )


@dataclass
class FakeKube:
    region: str
    deployments: dict[tuple[str, str], DeploymentState] = field(default_factory=dict)
    hpas: dict[tuple[str, str], HpaState] = field(default_factory=dict)

    def deployment(self, namespace: str, name: str) -> DeploymentState:
        if (namespace, name) not in self.deployments:
            raise InfrastructureError(f"deployment {namespace}/{name} not found in {self.region}")
        return self.deployments[namespace, name]

    def hpa_for(self, namespace: str, deployment: str) -> HpaState | None:
        return self.hpas.get((namespace, deployment))

    def deployment_marks(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        self.deployment(namespace, name)
        return {}, {}  # no GitOps owner

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"FakeKube.{name} is not faked")


@dataclass
class FakeAws:
    region: str
    groups: dict[str, NodeGroupState] = field(default_factory=dict)
    weights: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    checks: list[tuple[str, int, int]] = field(default_factory=list)
    #: bucket -> its newest object (key, last modified)
    newest: dict[str, tuple[str, float]] = field(default_factory=dict)

    def node_group(self, name: str) -> NodeGroupState:
        if name not in self.groups:
            raise InfrastructureError(f"autoscaling group {name} does not exist in {self.region}")
        return self.groups[name]

    def health_checks(self, domain: str) -> list[tuple[str, int, int]]:
        return list(self.checks)

    def latest_object(self, bucket: str) -> tuple[str, float] | None:
        return self.newest.get(bucket)

    def traffic_ttl(self, zone: str, record: str) -> int:
        return 60

    def health_check_timing(self, domain: str) -> list[tuple[str, int, int]]:
        return [(target, 30, 3) for target, _healthy, _total in self.checks]

    def traffic_weights(self, zone: str, record: str) -> dict[str, int]:
        if (zone, record) not in self.weights:
            raise InfrastructureError(f"no weighted records {record} in {zone}")
        return dict(self.weights[zone, record])

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"FakeAws.{name} is not faked")


class FakeInfrastructure(Infrastructure):
    def __init__(self) -> None:
        self.kubes: dict[tuple[str, str], FakeKube] = {}
        self.awses: dict[str, FakeAws] = {}

    def kube(self, environment: str, region: str) -> FakeKube:
        return self.kubes.setdefault((environment, region), FakeKube(region))

    def aws(self, region: str) -> FakeAws:
        return self.awses.setdefault(region, FakeAws(region))
