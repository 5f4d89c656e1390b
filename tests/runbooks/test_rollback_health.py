"""Rollback's health check against fakes: healthy means the new ReplicaSet's pods."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import StepFailed
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import RunContext
from runbooks.interfaces import DeploymentState
from runbooks.rollback import UndoDeployment
from tests.fakes.infra import FakeInfrastructure, FakeKube, deployment


@dataclass
class RollingKube(FakeKube):
    """A cluster whose rollout is complete while the service still has old pods."""

    ready: list[str] = field(default_factory=list)

    def wait_rollout(
        self, namespace: str, name: str, *, timeout: float, check: Callable[[], None]
    ) -> DeploymentState:
        return self.deployments[namespace, name]

    def endpoints(self, namespace: str, service: str) -> tuple[list[str], list[str]]:
        return list(self.ready), []


def step() -> UndoDeployment:
    return UndoDeployment(
        environment="production",
        region="us-east-1",
        namespace="production",
        deployment="api-deployment",
        service="api-service",
        from_revision=3,
        from_replicaset="api-deployment-new3",
        from_images="app-api:1.4.2",
        to_revision=2,
        to_replicaset="api-deployment-old2",
        to_images="app-api:1.4.1",
    )


def context(sandbox_config: Config, tmp_path: Path, kube: RollingKube) -> RunContext:
    infra = FakeInfrastructure()
    infra.kubes["production", "us-east-1"] = kube
    return RunContext(
        config=sandbox_config,
        env=sandbox_config.environment("production"),
        params=RunbookParams(environment="production"),
        clock=FakeClock(),
        adapters=infra,
        state_dir=tmp_path,
    )


def test_old_pods_behind_the_service_are_not_healthy(
    sandbox_config: Config, tmp_path: Path
) -> None:
    kube = RollingKube("us-east-1")
    kube.deployments["production", "api-deployment"] = deployment("api-deployment", "production", 6)
    # 6 pods of the target and one of the release being rolled back: 7 ready endpoints.
    kube.ready = [f"api-deployment-old2-{i}" for i in range(6)] + ["api-deployment-new3-x"]
    ctx = context(sandbox_config, tmp_path, kube)
    with pytest.raises(
        StepFailed, match=r"6 ready endpoints of api-deployment-old2 \(wanted 6\), 1 of other"
    ):
        step().wait(ctx, ctx.clock.now() + 5)
    kube.ready = kube.ready[:6]
    step().wait(ctx, ctx.clock.now() + 5)
    assert ctx.notes[-1].endswith("6 ready endpoints, all pods of api-deployment-old2")


def test_template_changes_name_resources_env_and_probes() -> None:
    from runbooks.rollback import template_changes

    def template(**container: object) -> dict[str, object]:
        return {"spec": {"containers": [{"name": "api", "image": "app-api:1", **container}]}}

    now = template(
        resources={"limits": {"memory": "3Gi"}},
        env=[{"name": "A", "value": "1"}, {"name": "B", "value": "x"}],
        readinessProbe={"httpGet": {"path": "/ready"}},
    )
    then = template(
        resources={"limits": {"memory": "2Gi"}, "requests": {"cpu": "500m"}},
        env=[{"name": "A", "value": "2"}, {"name": "C", "value": "y"}],
    )
    assert template_changes(now, then) == [
        "api: limits.memory 3Gi → 2Gi, requests.cpu unset → 500m, env +C, env -B, "
        "env A changed, readinessProbe changed"
    ]
    assert template_changes(now, now) == []
