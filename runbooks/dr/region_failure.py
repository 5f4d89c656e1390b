"""``dr.simulate --scenario region-failure``: fail the serving region, fail over as
``dr.failover`` does, then restore the region and fail back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from runbooks.dr.common import error_rate_query, health_url
from runbooks.dr.failover import PromoteDatabase, ShiftTraffic, VerifyRegion, dns, move_plan
from runbooks.engine.errors import Refused
from runbooks.engine.plan import Measure, PlanContext, PlanDraft, RunContext, Step
from runbooks.interfaces import InfrastructureError, infrastructure
from runbooks.kit.aws import SetNodeCapacity
from runbooks.kit.kube import ScaleDeployment, kube_for
from runbooks.kit.regions import active_region

if TYPE_CHECKING:
    from runbooks.dr.simulate import SimulateParams


@dataclass(frozen=True, kw_only=True)
class ObserveRegionDown(Step, kind="dr.sim_region_down"):
    """The injected failure took: none of the region's deployments has a ready pod. Records
    the RPO a real failure would have cost (the survivor's replication lag then)."""

    environment: str
    region: str
    survivor: str
    deployments: list[str]  # namespace/name
    rpo_target: float | None = None
    timeout: float = 300.0

    def describe(self) -> str:
        return (
            f"observe {self.region} down: no ready pod in {', '.join(self.deployments)}; "
            f"record the RPO (replication lag of {self.survivor} at the failure)"
        )

    def _ready(self, ctx: RunContext) -> dict[str, int]:
        kube = kube_for(ctx, self.environment, self.region)
        ready = {}
        for item in self.deployments:
            namespace, _, name = item.partition("/")
            ready[item] = kube.deployment(namespace, name).ready
        return ready

    def run(self, ctx: RunContext) -> str | None:
        return None

    def undo(self, ctx: RunContext) -> str | None:
        return "nothing to undo: it only observed"

    def verify(self, ctx: RunContext) -> bool:
        ready = self._ready(ctx)
        if any(ready.values()):
            return False
        ctx.note(f"{self.region} down: " + ", ".join(f"{d} 0 ready" for d in ready))
        if ctx.env.mongodb is None:
            ctx.note("RPO not measured: the environment has no database")
            return True
        topology = infrastructure(ctx).database(self.environment).topology()
        lag = topology.lag(self.survivor)
        if lag is None:
            raise InfrastructureError(f"the database has no readable member in {self.survivor}")
        ctx.measure(
            Measure(
                "RPO",
                lag,
                target=self.rpo_target,
                detail=f"replication lag of {self.survivor} when {self.region} failed: the "
                "writes a real region failure would lose",
            )
        )
        return True


def _reverse(step: Step) -> Step:
    """The same change the other way (a failback's counterpart of a failover step)."""
    if isinstance(step, SetNodeCapacity):
        return replace(step, from_desired=step.to_desired, to_desired=step.from_desired)
    if isinstance(step, ScaleDeployment):
        return replace(step, from_replicas=step.to_replicas, to_replicas=step.from_replicas)
    if isinstance(step, ShiftTraffic):
        return replace(step, from_weights=step.to_weights, to_weights=step.from_weights)
    raise TypeError(f"no reverse of {step.kind}")


def region_failure_plan(ctx: PlanContext, params: SimulateParams) -> PlanDraft:
    """Fail the region serving the environment (its pods scaled to zero), observe it down,
    fail over to the other region as ``dr.failover`` does, restore the region, fail back,
    and return the survivor's capacity: the environment ends as it started."""
    env = ctx.env
    hint = (
        "simulate a region failure where two regions run: dr.simulate --scenario "
        "region-failure --environment rehearsal; production's regions are exercised without "
        "a failure by the quarterly partial failover (dr.failover REGION --partial 10)"
    )
    if len(env.regions) < 2 or env.route53 is None:
        raise Refused(
            f"region-failure needs an environment with two regions and a weighted traffic "
            f"record (route53); {params.environment} has {', '.join(env.regions)}"
            + ("" if env.route53 else " and no route53"),
            hint=hint,
        )
    _zone, record, weights = dns(ctx)
    failed = active_region(weights)
    if failed is None or weights.get(failed) != 100:
        raise Refused(
            f"a region-failure simulation starts from 100 % in one region; {record} is split "
            f"{', '.join(f'{r} {w}' for r, w in sorted(weights.items()))} now",
            hint=f"move the traffic back first: dr.failback {params.environment}",
        )
    survivor = next(r for r in env.regions if r != failed)
    inject: list[Step] = []
    restore: list[Step] = []
    down: list[str] = []
    services = sorted(env.services.items()) if failed in env.kube_contexts else []
    for _name, service in services:
        state = kube_for(ctx, params.environment, failed).deployment(
            service.namespace, service.deployment
        )
        if state.replicas == 0:
            raise Refused(
                f"{service.deployment} in {failed} already runs 0 replicas: the region is down "
                "before the simulation starts"
            )
        scale = ScaleDeployment(
            environment=params.environment,
            region=failed,
            namespace=service.namespace,
            deployment=service.deployment,
            from_replicas=state.replicas,
            to_replicas=0,
        )
        inject.append(scale)
        restore.append(_reverse(scale))
        down.append(f"{service.namespace}/{service.deployment}")
    if not inject:
        raise Refused(
            f"{params.environment} runs no service in {failed} (kube_contexts): nothing to fail",
            hint=hint,
        )
    failover = move_plan(ctx, survivor, accept_data_loss=False, what="failover")
    database = env.targets.get("database")
    observe = ObserveRegionDown(
        environment=params.environment,
        region=failed,
        survivor=survivor,
        deployments=down,
        rpo_target=database.rpo if database else None,
    )
    failback: list[Step] = []
    shrink: list[Step] = []
    for step in failover.steps:
        if isinstance(step, SetNodeCapacity | ScaleDeployment):
            shrink.insert(0, _reverse(step))
        elif isinstance(step, PromoteDatabase):
            failback.append(replace(step, region=failed))
        elif isinstance(step, ShiftTraffic):
            failback.append(_reverse(step))
        elif isinstance(step, VerifyRegion):
            failback.append(
                replace(
                    step,
                    region=failed,
                    group=env.autoscaling_groups.get(failed),
                    url=health_url(env, failed),
                    error_query=error_rate_query(env, params.environment, failed),
                    measure_rto=False,
                )
            )
    return PlanDraft(
        steps=[*inject, observe, *failover.steps, *restore, *failback, *shrink],
        summary=f"DR simulation in {params.environment}: region-failure of {failed}, failover "
        f"to {survivor}, then back",
        notes=[
            f"inject: {failed}'s pods scaled to zero ({', '.join(down)}); DNS still sends "
            "traffic there until the failover moves it",
            *(n for n in failover.notes if not n.startswith(f"{failed} keeps running")),
            f"then {failed} is restored, traffic and the database primary come back to it, and "
            f"{survivor} returns to its capacity: the environment ends as it started",
            "RTO achieved: the run's start (the failure) to the survivor verified; RPO achieved: "
            f"the replication lag of {survivor} when {failed} failed",
            "a step that fails compensates: the failure is undone (the pods scaled back) with "
            "the other reversible steps",
        ],
    )
