"""``maintenance.resize``: the spec's vertical scaling procedure, inside a maintenance window.

With ``--instance NAME`` it resizes one standalone instance instead (one listed in the
environment's ``standalone_instances``): stop, change the type, start, wait until both EC2
status checks pass; compensation does the same back to the previous type.

For an environment's node group (Auto Scaling group) in a region: a new launch template
version with the new instance type, the group pointed at it, instances replaced in batches
that keep the minimum healthy percentage (default 90 %; at least one at a time), each
replacement in service and healthy in its target group before the next, then a check that
every instance has the new type. If the window is about to end or health fails, the step
stops and compensation points the group back at the previous version and replaces back what
was replaced.

The replacement terminates instances in the group without lowering its desired capacity (the
group launches replacements from its current template version). AWS's instance refresh
(`start_instance_refresh`) would do the batching for us, but moto does not implement it, so it
is not offered: nothing here could test it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import Field

from runbooks.engine.clock import format_duration, iso, parse_duration
from runbooks.engine.errors import InvalidInput
from runbooks.engine.params import RegionalParams
from runbooks.engine.plan import PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import runbook
from runbooks.interfaces import AwsOps, InfrastructureError, StandaloneInstance
from runbooks.kit.aws import AwsStep
from runbooks.kit.regions import serving_region
from runbooks.kit.windows import window_notes


class ResizeParams(RegionalParams):
    instance_type: str = Field(description="new instance type (one of the environment's list)")
    window: str | None = Field(
        None,
        description="maintenance window: a name from schedules.yaml, or START/DURATION "
        "(e.g. 2026-11-29T02:00Z/4h); default: the one open now",
    )
    min_healthy: int = Field(90, ge=50, le=100, description="minimum healthy percentage")
    settle: str = Field("30s", description="how long each replacement must stay healthy")
    instance: str | None = Field(
        None,
        description="resize this standalone instance (Name tag, from standalone_instances) "
        "instead of the node group",
    )


@dataclass(frozen=True, kw_only=True)
class CreateTemplateVersion(AwsStep, kind="aws.template_version"):
    template: str
    source_version: str
    instance_type: str
    description: str

    def describe(self) -> str:
        return (
            f"create launch template {self.template} version from {self.source_version} "
            f"with instance type {self.instance_type}"
        )

    def _find(self, aws: AwsOps) -> int | None:
        for number, _, description in aws.template_versions(self.template):
            if description == self.description:
                return number
        return None

    def run(self, ctx: RunContext) -> str | None:
        aws = self.aws(ctx)
        existing = self._find(aws)
        if existing is not None:
            return f"version {existing} exists"
        number = aws.create_template_version(
            self.template,
            source=self.source_version,
            instance_type=self.instance_type,
            description=self.description,
        )
        return f"version {number} created"

    def verify(self, ctx: RunContext) -> bool:
        return self._find(self.aws(ctx)) is not None

    def undo(self, ctx: RunContext) -> str | None:
        # The version is only a record: once the group points at the previous version again
        # (the next step's undo), nothing launches from it. It is kept for the post-mortem.
        number = self._find(self.aws(ctx))
        if number is None:
            return "no version was created"
        return f"version {number} kept unused; the group uses {self.source_version} again"


@dataclass(frozen=True, kw_only=True)
class RollInstances(AwsStep, kind="aws.roll_instances"):
    """Point the group at the new version and replace instances batch by batch."""

    group: str
    template: str
    from_version: str
    from_type: str
    to_type: str
    description_tag: str
    batch: int
    settle: float
    window_end: float | None
    timeout: float = 4 * 3600.0
    poll_interval = 2.0

    def describe(self) -> str:
        until = f", stopping before {iso(self.window_end)}" if self.window_end else ""
        return (
            f"point {self.group} in {self.environment} ({self.region}) at the new version and "
            f"replace its {self.from_type} instances with {self.to_type}, {self.batch} at a "
            f"time, each healthy for {format_duration(self.settle)}{until}"
        )

    def _version(self, aws: AwsOps) -> str:
        for number, _, description in aws.template_versions(self.template):
            if description == self.description_tag:
                return str(number)
        raise InfrastructureError(f"{self.template} has no version {self.description_tag!r}")

    def _roll(self, ctx: RunContext, version: str, want: str, *, guard_window: bool) -> int:
        aws = self.aws(ctx)
        aws.set_group_template(self.group, self.template, version)
        replaced = 0
        while True:
            state = aws.node_group(self.group)
            old = [i for i in state.instances if i.type != want and i.lifecycle == "InService"]
            if not old:
                return replaced
            for instance in old[: self.batch]:
                if guard_window:
                    self._check_window(ctx)
                aws.replace_instance(self.group, instance.id)
                replaced += 1
            self._wait_healthy(ctx, state.desired, guard_window=guard_window)

    def _check_window(self, ctx: RunContext) -> None:
        if self.window_end is not None and ctx.clock.now() + self.settle > self.window_end:
            raise InfrastructureError(
                f"the maintenance window ends at {iso(self.window_end)}: no time for another "
                "batch; stopping"
            )

    def _wait_healthy(self, ctx: RunContext, desired: int, *, guard_window: bool) -> None:
        aws = self.aws(ctx)
        deadline = ctx.clock.now() + 900.0
        while True:
            ctx.check_cancelled()
            state = aws.node_group(self.group)
            healthy, total = aws.target_health(self.group)
            if state.in_service == desired and healthy == total == desired:
                break
            if ctx.clock.now() > deadline:
                raise InfrastructureError(
                    f"{self.group}: {state.in_service}/{desired} in service, {healthy}/{total} "
                    "healthy targets after 15m"
                )
            ctx.clock.sleep(self.poll_interval)
        # Stay healthy for the settle time (checked once a second).
        settle_until = ctx.clock.now() + self.settle
        while ctx.clock.now() < settle_until:
            ctx.check_cancelled()
            # A window that closes during the settle stops the roll as well.
            closed = self.window_end is not None and ctx.clock.now() > self.window_end
            if guard_window and closed:
                raise InfrastructureError(
                    f"the maintenance window ended at {iso(self.window_end or 0)}; stopping"
                )
            healthy, total = aws.target_health(self.group)
            if healthy < total or total != desired:
                raise InfrastructureError(
                    f"{self.group}: {healthy}/{total} targets healthy while settling"
                )
            ctx.clock.sleep(min(1.0, max(0.0, settle_until - ctx.clock.now())))

    def run(self, ctx: RunContext) -> str | None:
        version = self._version(self.aws(ctx))
        replaced = self._roll(ctx, version, self.to_type, guard_window=True)
        return f"{self.group} on version {version}: {replaced} instance(s) replaced"

    def verify(self, ctx: RunContext) -> bool:
        state = self.aws(ctx).node_group(self.group)
        wrong = [i.id for i in state.instances if i.type != self.to_type]
        if wrong:
            raise InfrastructureError(f"{self.group}: {', '.join(wrong)} not {self.to_type}")
        ctx.note(f"{self.group}: all {len(state.instances)} instances are {self.to_type}")
        return True

    def undo(self, ctx: RunContext) -> str | None:
        replaced = self._roll(ctx, self.from_version, self.from_type, guard_window=False)
        return (
            f"{self.group} back on version {self.from_version}: {replaced} instance(s) "
            f"returned to {self.from_type}"
        )


@dataclass(frozen=True, kw_only=True)
class ResizeInstance(AwsStep, kind="aws.resize_instance"):
    """Stop a standalone instance, change its type, start it, wait for its status checks."""

    name: str
    instance_id: str
    from_type: str
    to_type: str
    window_end: float | None
    margin: float
    timeout: float = 1800.0
    poll_interval = 2.0

    def describe(self) -> str:
        until = ""
        if self.window_end is not None:
            until = f", not starting after {iso(self.window_end - self.margin)}"
        return (
            f"resize instance {self.name} ({self.instance_id}) in {self.environment} "
            f"({self.region}): stop, {self.from_type} → {self.to_type}, start, wait until its "
            f"status checks pass{until}"
        )

    def _change(self, ctx: RunContext, want: str, *, guard_window: bool) -> bool:
        aws = self.aws(ctx)
        instance = aws.standalone(self.name)
        if instance.id != self.instance_id:
            raise InfrastructureError(
                f"the instance named {self.name} is now {instance.id}, not {self.instance_id} "
                "as planned; plan again"
            )
        if instance.type == want and instance.state == "running" and instance.status_ok:
            return False
        end = self.window_end
        if guard_window and end is not None and ctx.clock.now() + self.margin > end:
            raise InfrastructureError(
                f"the maintenance window ends at {iso(end)}: no time to stop {self.name}; "
                "not starting"
            )
        if instance.type != want:
            if instance.state != "stopped":
                aws.stop_instance(instance.id)
                self._wait(ctx, lambda i: i.state == "stopped", "stopped")
            aws.set_instance_type(instance.id, want)
        if aws.standalone(self.name).state != "running":
            aws.start_instance(instance.id)
        self._wait(ctx, lambda i: i.state == "running" and i.status_ok, "running, checks ok")
        return True

    def _wait(self, ctx: RunContext, done: Callable[[StandaloneInstance], bool], what: str) -> None:
        aws = self.aws(ctx)
        deadline = ctx.clock.now() + self.timeout
        while True:
            ctx.check_cancelled()
            instance = aws.standalone(self.name)
            if done(instance):
                return
            if ctx.clock.now() > deadline:
                raise InfrastructureError(
                    f"{self.name} not {what} after {format_duration(self.timeout)} "
                    f"(state {instance.state}, status checks "
                    f"{'ok' if instance.status_ok else 'not ok'})"
                )
            ctx.clock.sleep(self.poll_interval)

    def run(self, ctx: RunContext) -> str | None:
        if not self._change(ctx, self.to_type, guard_window=True):
            return f"{self.name} is already {self.to_type} and running"
        return f"{self.name} running as {self.to_type}, status checks ok"

    def verify(self, ctx: RunContext) -> bool:
        instance = self.aws(ctx).standalone(self.name)
        return instance.type == self.to_type and instance.state == "running" and instance.status_ok

    def undo(self, ctx: RunContext) -> str | None:
        self._change(ctx, self.from_type, guard_window=False)
        return f"{self.name} running as {self.from_type} again"


def _instance_plan(
    ctx: PlanContext,
    params: ResizeParams,
    notes: list[str],
    window_end: float | None,
    margin: float,
) -> PlanDraft:
    from runbooks.interfaces import infrastructure

    assert params.instance is not None
    env = ctx.env
    regions = [r for r, names in env.standalone_instances.items() if params.instance in names]
    if params.region is not None:
        regions = [r for r in regions if r == params.region]
    if not regions:
        configured = [
            f"{name} ({region})"
            for region, names in env.standalone_instances.items()
            for name in names
        ]
        raise InvalidInput(
            f"--instance {params.instance!r} is not a standalone instance of "
            f"{params.environment}"
            + (f" in {params.region}" if params.region else "")
            + f"; configured: {', '.join(configured) or 'none'} (standalone_instances)"
        )
    region = regions[0]
    instance = infrastructure(ctx).aws(region).standalone(params.instance)
    if instance.group is not None:
        raise InvalidInput(
            f"{params.instance} belongs to autoscaling group {instance.group}: resize the "
            "group (without --instance) so the group does not replace it"
        )
    if instance.type == params.instance_type:
        notes.append(f"{params.instance} is already {params.instance_type}")
        return PlanDraft(
            steps=[], summary=f"{params.instance} already {params.instance_type}", notes=notes
        )
    notes.append(
        f"{params.instance} ({instance.id}) is {instance.state} as {instance.type}; it is "
        "STOPPED while its type changes: it serves nothing for a few minutes"
    )
    step = ResizeInstance(
        environment=params.environment,
        region=region,
        name=params.instance,
        instance_id=instance.id,
        from_type=instance.type,
        to_type=params.instance_type,
        window_end=window_end,
        margin=margin,
    )
    return PlanDraft(
        steps=[step],
        summary=(
            f"resize instance {params.instance} in {params.environment} ({region}) to "
            f"{params.instance_type}"
        ),
        notes=notes,
    )


@runbook("maintenance.resize", params=ResizeParams, lock="{environment}:nodes")
def resize(ctx: PlanContext, params: ResizeParams) -> PlanDraft:
    """Change a node group's instance type inside a maintenance window, batch by batch."""
    from runbooks.interfaces import infrastructure

    env = ctx.env
    allowed = env.instance_types
    if params.instance_type not in allowed:
        raise InvalidInput(
            f"--instance-type: {params.instance_type!r} is not allowed in {params.environment}; "
            f"allowed: {', '.join(allowed) or 'none configured'} (instance_types)"
        )
    try:
        settle = parse_duration(params.settle)
    except ValueError:
        raise InvalidInput(f"--settle {params.settle!r}: expected a duration like 30s") from None
    window_end, notes = window_notes(ctx, params)
    if params.instance is not None:
        return _instance_plan(ctx, params, notes, window_end, settle)
    serving = serving_region(ctx, params.region)
    region = serving.region
    notes.append(serving.note)
    group_name = env.autoscaling_groups.get(region)
    if group_name is None:
        raise InvalidInput(f"{params.environment} has no node group in {region}")
    aws = infrastructure(ctx).aws(region)
    group = aws.node_group(group_name)
    if group.launch_template is None or group.template_version is None:
        raise InvalidInput(f"{group_name} does not use a launch template; cannot resize it")
    from_version = group.template_version
    if from_version == "$Latest":
        # Pin it: once the new version exists, $Latest would mean the new one, and rolling
        # back to "$Latest" would change nothing.
        from_version = str(max(n for n, _, _ in aws.template_versions(group.launch_template)))
    types = {i.type for i in group.instances}
    if types == {params.instance_type}:
        notes.append(f"every instance of {group_name} is already {params.instance_type}")
        return PlanDraft(
            steps=[], summary=f"{group_name} already {params.instance_type}", notes=notes
        )
    current = sorted(types - {params.instance_type})
    from_type = current[0] if current else params.instance_type
    batch = max(1, math.floor(group.desired * (100 - params.min_healthy) / 100))
    description = f"runbook-bot: {from_type} -> {params.instance_type} from {from_version}"
    notes.append(
        f"{group_name}: {group.desired} instances ({', '.join(sorted(types))}), "
        f"{batch} replaced at a time to keep at least {params.min_healthy} % healthy"
    )
    steps: list[Step] = [
        CreateTemplateVersion(
            environment=params.environment,
            region=region,
            template=group.launch_template,
            source_version=from_version,
            instance_type=params.instance_type,
            description=description,
        ),
        RollInstances(
            environment=params.environment,
            region=region,
            group=group_name,
            template=group.launch_template,
            from_version=from_version,
            from_type=from_type,
            to_type=params.instance_type,
            description_tag=description,
            batch=batch,
            settle=settle,
            window_end=window_end,
        ),
    ]
    return PlanDraft(
        steps=steps,
        summary=f"resize {group_name} in {params.environment} ({region}) to {params.instance_type}",
        notes=notes,
    )
