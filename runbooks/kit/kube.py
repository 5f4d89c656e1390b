"""Kubernetes steps and lookups shared by the runbooks (rollback, scale, dr, maintenance)."""

from __future__ import annotations

from dataclasses import dataclass

from runbooks.engine.config.environments import EnvironmentConfig, ServiceConfig
from runbooks.engine.errors import InvalidInput, StepFailed
from runbooks.engine.plan import PlanContext, RunContext, Step
from runbooks.interfaces import KubeOps, infrastructure


def service_config(env: EnvironmentConfig, environment: str, name: str) -> ServiceConfig:
    try:
        return env.services[name]
    except KeyError:
        raise InvalidInput(
            f"unknown service {name!r} in {environment}; known: {', '.join(env.services)}"
        ) from None


def service_name(name: str, service: ServiceConfig) -> str:
    return service.service or f"{name}-service"


def rollout_regions(env: EnvironmentConfig, region: str | None) -> list[str]:
    """The regions to act on: the given one, else all with a cluster, primary first."""
    if region is not None:
        return [region]
    regions = [r for r in env.regions if r in env.kube_contexts]
    return sorted(regions, key=lambda r: r != env.primary_region)


def kube_for(ctx: PlanContext | RunContext, environment: str, region: str) -> KubeOps:
    return infrastructure(ctx).kube(environment, region)


@dataclass(frozen=True, kw_only=True)
class KubeStep(Step):
    """A step acting on one namespace of one environment's cluster in one region."""

    environment: str
    region: str
    namespace: str

    def kube(self, ctx: RunContext) -> KubeOps:
        return kube_for(ctx, self.environment, self.region)


@dataclass(frozen=True, kw_only=True)
class ScaleDeployment(KubeStep, kind="kube.scale"):
    deployment: str
    from_replicas: int
    to_replicas: int
    timeout: float = 300.0

    def describe(self) -> str:
        return (
            f"scale deployment {self.deployment} in {self.environment} ({self.region}): "
            f"{self.from_replicas} → {self.to_replicas} replicas"
        )

    def _scale(self, ctx: RunContext, replicas: int) -> str:
        kube = self.kube(ctx)
        if kube.deployment(self.namespace, self.deployment).replicas == replicas:
            return f"already {replicas} replicas"
        kube.scale(self.namespace, self.deployment, replicas)
        return f"scaled to {replicas}"

    def run(self, ctx: RunContext) -> str | None:
        return self._scale(ctx, self.to_replicas)

    def wait(self, ctx: RunContext, deadline: float) -> None:
        kube = self.kube(ctx)
        state = kube.wait_rollout(
            self.namespace,
            self.deployment,
            timeout=max(1.0, deadline - ctx.clock.now()),
            check=ctx.check_cancelled,
        )
        if state.replicas != self.to_replicas:
            raise StepFailed(
                f"{self.deployment} has {state.replicas} replicas, not "
                f"{self.to_replicas}: something (an autoscaler?) changed it"
            )
        if state.ready > state.replicas:  # a scale-down: the rollout is done, pods are stopping
            stopping = state.ready - state.replicas
            ctx.note(f"{state.replicas} replicas wanted; {stopping} still stopping")
        else:
            ctx.note(f"{state.ready}/{state.replicas} replicas ready")

    def undo(self, ctx: RunContext) -> str | None:
        return self._scale(ctx, self.from_replicas)
