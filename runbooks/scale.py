"""``scale.pods``, ``scale.hpa`` and ``scale.nodes``: replicas, autoscaler bounds and node
group capacity, within policy (the spec: 2-20) and, for nodes, its cooldowns."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import Field

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.environments import ServiceConfig
from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.params import RegionalParams
from runbooks.engine.plan import PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.readiness import Observation, observe, readiness_check
from runbooks.engine.registry import runbook
from runbooks.interfaces import infrastructure
from runbooks.kit.aws import SetNodeCapacity
from runbooks.kit.gitops import owned_warning
from runbooks.kit.kube import KubeStep, ScaleDeployment, kube_for, service_config
from runbooks.kit.regions import serving_region


class ScalePodsParams(RegionalParams):
    service: str = Field(description="service to scale (e.g. api)")
    replicas: int = Field(ge=0, description="replica count (within the environment's bounds)")


class ScaleNodesParams(RegionalParams):
    desired: int = Field(
        ge=0, description="instances in the node group (within its and policy's bounds)"
    )


class ScaleHpaParams(RegionalParams):
    service: str = Field(description="service whose autoscaler to change (e.g. api)")
    min: int = Field(ge=1, description="autoscaler minimum replicas")
    max: int = Field(ge=1, description="autoscaler maximum replicas")
    all_regions: bool = Field(
        False, description="change the autoscaler in every region, so regions do not drift"
    )


@dataclass(frozen=True, kw_only=True)
class SetAutoscalerBounds(KubeStep, kind="kube.hpa_bounds"):
    hpa: str
    deployment: str
    from_min: int
    from_max: int
    to_min: int
    to_max: int
    timeout: float = 300.0

    def describe(self) -> str:
        return (
            f"set autoscaler {self.hpa} in {self.environment} ({self.region}): "
            f"{self.from_min}-{self.from_max} → {self.to_min}-{self.to_max} replicas"
        )

    def _set(self, ctx: RunContext, low: int, high: int) -> str:
        kube = self.kube(ctx)
        state = kube.hpa_for(self.namespace, self.deployment)
        if state is not None and (state.min_replicas, state.max_replicas) == (low, high):
            return f"already {low}-{high}"
        kube.set_hpa_bounds(self.namespace, self.hpa, low, high)
        return f"bounds now {low}-{high}"

    def run(self, ctx: RunContext) -> str | None:
        return self._set(ctx, self.to_min, self.to_max)

    def wait(self, ctx: RunContext, deadline: float) -> None:
        kube = self.kube(ctx)
        while True:
            state = kube.wait_rollout(
                self.namespace,
                self.deployment,
                timeout=max(1.0, deadline - ctx.clock.now()),
                check=ctx.check_cancelled,
            )
            if self.to_min <= state.replicas <= self.to_max:
                ctx.note(
                    f"{self.deployment}: {state.ready}/{state.replicas} ready, within "
                    f"{self.to_min}-{self.to_max}"
                )
                return
            ctx.check_cancelled()
            ctx.clock.sleep(0.2)

    def undo(self, ctx: RunContext) -> str | None:
        return self._set(ctx, self.from_min, self.from_max)


@runbook("scale.pods", params=ScalePodsParams, lock="{environment}:{service}")
def scale_pods(ctx: PlanContext, params: ScalePodsParams) -> PlanDraft:
    """Scale a service's deployment to a replica count, within policy and its autoscaler."""
    env = ctx.env
    service = service_config(env, params.environment, params.service)
    limits = env.scaling
    if not limits.min_replicas <= params.replicas <= limits.max_replicas:
        raise InvalidInput(
            f"--replicas: {params.replicas} is outside {params.environment}'s bounds "
            f"{limits.min_replicas}-{limits.max_replicas} (scaling in environments.yaml)"
        )
    serving = serving_region(ctx, params.region)
    region = serving.region
    kube = kube_for(ctx, params.environment, region)
    state = kube.deployment(service.namespace, service.deployment)
    hpa = kube.hpa_for(service.namespace, service.deployment)
    if hpa is not None and not hpa.min_replicas <= params.replicas <= hpa.max_replicas:
        raise InvalidInput(
            f"--replicas: {service.deployment} is managed by autoscaler {hpa.name} "
            f"({hpa.min_replicas}-{hpa.max_replicas}), which would undo {params.replicas}; "
            f"change its bounds with `scale.hpa {params.environment} --service {params.service} "
            f"--min A --max B`"
        )
    notes = [serving.note]
    owned = owned_warning(kube, service.namespace, service.deployment, change="scaling")
    if owned is not None:
        notes.append(owned)
    steps: list[Step] = []
    if state.replicas == params.replicas:
        notes.append(f"{service.deployment} already has {params.replicas} replicas")
    else:
        steps.append(
            ScaleDeployment(
                environment=params.environment,
                region=region,
                namespace=service.namespace,
                deployment=service.deployment,
                from_replicas=state.replicas,
                to_replicas=params.replicas,
            )
        )
    if hpa is not None:
        notes.append(
            f"autoscaler {hpa.name} ({hpa.min_replicas}-{hpa.max_replicas}) may "
            "move it later within its bounds"
        )
    return PlanDraft(
        steps=steps,
        summary=f"scale {params.service} in {params.environment} ({region}) to {params.replicas}",
        notes=notes,
    )


@runbook("scale.hpa", params=ScaleHpaParams, lock="{environment}:{service}")
def scale_hpa(ctx: PlanContext, params: ScaleHpaParams) -> PlanDraft:
    """Change a service's autoscaler bounds (min/max replicas) within policy."""
    env = ctx.env
    service = service_config(env, params.environment, params.service)
    limits = env.scaling
    if params.min > params.max:
        raise InvalidInput(f"--min {params.min} is above --max {params.max}")
    if params.min < limits.min_replicas or params.max > limits.max_replicas:
        raise InvalidInput(
            f"--min/--max: {params.min}-{params.max} is outside {params.environment}'s bounds "
            f"{limits.min_replicas}-{limits.max_replicas} (scaling in environments.yaml)"
        )
    if params.all_regions and params.region is not None:
        raise InvalidInput("--all-regions and --region exclude each other; give one")
    if params.all_regions:
        regions = [r for r in env.regions if r in env.kube_contexts]
        notes = [f"every region: {', '.join(regions)}"]
    else:
        serving = serving_region(ctx, params.region)
        regions, notes = [serving.region], [serving.note]
    steps: list[Step] = []
    for region in regions:
        kube = kube_for(ctx, params.environment, region)
        hpa = kube.hpa_for(service.namespace, service.deployment)
        if hpa is None:
            raise InvalidInput(
                f"no autoscaler manages {service.deployment} in "
                f"{params.environment} ({region}); use scale.pods"
            )
        notes.append(
            f"{region}: targets CPU {hpa.cpu_target or '-'}%, memory {hpa.memory_target or '-'}%"
        )
        if (hpa.min_replicas, hpa.max_replicas) == (params.min, params.max):
            notes.append(f"{region}: {hpa.name} already has bounds {params.min}-{params.max}")
            continue
        steps.append(
            SetAutoscalerBounds(
                environment=params.environment,
                region=region,
                namespace=service.namespace,
                hpa=hpa.name,
                deployment=service.deployment,
                from_min=hpa.min_replicas,
                from_max=hpa.max_replicas,
                to_min=params.min,
                to_max=params.max,
            )
        )
    others = [r for r in env.regions if r in env.kube_contexts and r not in regions]
    if others:
        # Regions that drift apart surprise people in a DR event: say so, offer the fix.
        notes.append(
            f"only {', '.join(regions)} changes; {', '.join(others)} keeps its own bounds "
            "(regions drift apart before a failover): add --all-regions to change every region"
        )
    region = regions[0] if len(regions) == 1 else "all regions"
    return PlanDraft(
        steps=steps,
        summary=f"autoscaler of {params.service} in "
        f"{params.environment} ({region}): {params.min}-{params.max}",
        notes=notes,
    )


@runbook("scale.nodes", params=ScaleNodesParams, lock="{environment}:nodes")
def scale_nodes(ctx: PlanContext, params: ScaleNodesParams) -> PlanDraft:
    """Set a node group's capacity (Auto Scaling group) within bounds and cooldowns."""
    env = ctx.env
    serving = serving_region(ctx, params.region)
    region = serving.region
    group_name = env.autoscaling_groups.get(region)
    if group_name is None:
        raise InvalidInput(
            f"{params.environment} has no node group in {region}; configured: "
            f"{', '.join(f'{r}: {g}' for r, g in env.autoscaling_groups.items()) or 'none'} "
            "(autoscaling_groups in environments.yaml)"
        )
    limits = env.scaling
    if not limits.min_replicas <= params.desired <= limits.max_replicas:
        raise InvalidInput(
            f"--desired: {params.desired} is outside {params.environment}'s bounds "
            f"{limits.min_replicas}-{limits.max_replicas} (scaling in environments.yaml)"
        )
    group = infrastructure(ctx).aws(region).node_group(group_name)
    if not group.minimum <= params.desired <= group.maximum:
        raise InvalidInput(
            f"--desired: {params.desired} is outside {group_name}'s own bounds "
            f"{group.minimum}-{group.maximum} (its MinSize/MaxSize)"
        )
    notes = [
        serving.note,
        f"{group_name}: {group.in_service}/{group.desired} in service, bounds "
        f"{group.minimum}-{group.maximum}",
    ]
    if group.desired == params.desired:
        notes.append(f"{group_name} already wants {params.desired} instances: nothing to do")
        return PlanDraft(steps=[], summary=f"{group_name} stays at {params.desired}", notes=notes)
    up = params.desired > group.desired
    cooldown = limits.scale_up_cooldown if up else limits.scale_down_cooldown
    if group.last_scaled_at is not None:
        since = ctx.clock.now() - group.last_scaled_at
        if since < cooldown:
            direction = "scale-up" if up else "scale-down"
            if not ctx.break_glass:
                raise Refused(
                    f"{group_name} last changed capacity {format_duration(since)} ago "
                    f"({iso(group.last_scaled_at)}); the {direction} cooldown is "
                    f"{format_duration(cooldown)}, so the next {direction} is allowed from "
                    f"{iso(group.last_scaled_at + cooldown)}",
                    hint="in an emergency: --break-glass --reason TEXT --incident ID",
                )
            notes.append(
                f"BREAK-GLASS: the {direction} cooldown ({format_duration(cooldown)}) is skipped"
            )
    return PlanDraft(
        steps=[
            SetNodeCapacity(
                environment=params.environment,
                region=region,
                group=group_name,
                from_desired=group.desired,
                to_desired=params.desired,
            )
        ],
        summary=f"scale {group_name} in {params.environment} ({region}) to {params.desired}",
        notes=notes,
    )


@readiness_check("scale.hpa", "autoscaler bounds within policy, equal across regions")
def autoscaler_bounds(ctx: PlanContext) -> Iterator[Observation]:
    """Each service's autoscaler keeps within the environment's scaling limits, and every
    region has the same bounds (a failover onto a smaller ceiling is a slow failover)."""
    env = ctx.env
    limits = env.scaling
    for name, service in sorted(env.services.items()):
        if service.hpa is None:
            continue
        hpa_name = service.hpa
        regions = [r for r in env.regions if r in env.kube_contexts]

        def bounds(
            service: ServiceConfig = service, regions: list[str] = regions
        ) -> tuple[bool, str]:
            found = {}
            for region in regions:
                hpa = kube_for(ctx, ctx.environment, region).hpa_for(
                    service.namespace, service.deployment
                )
                found[region] = None if hpa is None else (hpa.min_replicas, hpa.max_replicas)
            missing = [r for r, b in found.items() if b is None]
            if missing:
                return False, f"no autoscaler in {', '.join(missing)}"
            shown = "; ".join(f"{r} {b[0]}-{b[1]}" for r, b in found.items() if b)
            outside = [
                r
                for r, b in found.items()
                if b and not (limits.min_replicas <= b[0] and b[1] <= limits.max_replicas)
            ]
            if outside:
                return False, (
                    f"{shown}: outside the policy {limits.min_replicas}-{limits.max_replicas} in "
                    f"{', '.join(outside)}"
                )
            if len({b for b in found.values()}) > 1:
                return False, f"{shown}: regions differ"
            return True, shown

        yield observe(f"{name} autoscaler {hpa_name}", bounds)
