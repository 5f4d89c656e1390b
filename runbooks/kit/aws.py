"""AWS steps shared by the runbooks (scale.nodes, dr, maintenance.resize)."""

from __future__ import annotations

from dataclasses import dataclass

from runbooks.engine.plan import Measure, RunContext, Step
from runbooks.interfaces import AwsOps, InfrastructureError, infrastructure

#: The measure a node group's scale-up records (from the desired capacity set to every
#: instance in service): what dr.failover's predicted RTO counts for the standby's scale-up.
SCALE_UP = "node group scale-up"


@dataclass(frozen=True, kw_only=True)
class AwsStep(Step):
    """A step acting on AWS resources of one environment in one region."""

    environment: str
    region: str

    def aws(self, ctx: RunContext) -> AwsOps:
        return infrastructure(ctx).aws(self.region)


@dataclass(frozen=True, kw_only=True)
class SetNodeCapacity(AwsStep, kind="aws.node_capacity"):
    group: str
    from_desired: int
    to_desired: int
    timeout: float = 900.0
    poll_interval = 2.0

    def describe(self) -> str:
        return (
            f"set node group {self.group} in {self.environment} ({self.region}): "
            f"{self.from_desired} → {self.to_desired} instances, wait until all are in service"
        )

    def _set(self, ctx: RunContext, desired: int) -> str:
        aws = self.aws(ctx)
        if aws.node_group(self.group).desired == desired:
            return f"{self.group}: desired capacity already {desired}"
        aws.set_desired(self.group, desired, at=ctx.clock.now())
        return f"{self.group}: desired capacity set to {desired}"

    def run(self, ctx: RunContext) -> str | None:
        return self._set(ctx, self.to_desired)

    def verify(self, ctx: RunContext) -> bool:
        state = self.aws(ctx).node_group(self.group)
        if state.desired != self.to_desired:
            raise InfrastructureError(
                f"{self.group} desired capacity is {state.desired}, not {self.to_desired}: "
                "something else changed it"
            )
        done = state.in_service == self.to_desired and len(state.instances) == self.to_desired
        if done:
            ctx.note(f"{self.group}: {state.in_service}/{self.to_desired} instances in service")
            if self.to_desired > self.from_desired and ctx.step_started_at:
                ctx.measure(
                    Measure(
                        SCALE_UP,
                        ctx.clock.now() - ctx.step_started_at,
                        detail=f"{self.group} {self.from_desired} → {self.to_desired}",
                    )
                )
        return done

    def undo(self, ctx: RunContext) -> str | None:
        return self._set(ctx, self.from_desired)
