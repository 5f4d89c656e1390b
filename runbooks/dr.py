"""Disaster recovery: ``dr.status`` (read-only) so far.

``dr.status`` reports, per component, which region is active: DNS (the weighted traffic
records), compute per region (node group and the services' deployments) and the recovery
targets. It is meant for the middle of an outage, so a component that cannot be read is
reported as such and the rest is still shown.
"""

from __future__ import annotations

from pydantic import Field

from runbooks.engine.clock import format_duration
from runbooks.engine.errors import RunbookError
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PlanContext, PlanDraft
from runbooks.engine.registry import runbook
from runbooks.interfaces import infrastructure
from runbooks.rollback import kube_for


class DrStatusParams(RunbookParams):
    environment: str = Field(
        "production", description="environment to report on (default production)"
    )


def active_region(weights: dict[str, int]) -> str | None:
    """The region carrying most traffic (None when all weights are 0)."""
    if not weights or max(weights.values()) == 0:
        return None
    return max(sorted(weights), key=lambda region: weights[region])


@runbook("dr.status", params=DrStatusParams, read_only=True)
def dr_status(ctx: PlanContext, params: DrStatusParams) -> PlanDraft:
    """Which region serves each component (DNS, compute), with capacity and targets."""
    env = ctx.env
    infra = infrastructure(ctx)
    notes: list[str] = []
    active = None
    if env.route53 is not None:
        r53 = env.route53
        try:
            weights = infra.aws(env.primary_region).traffic_weights(r53.zone, r53.traffic_record)
            active = active_region(weights)
            split = ", ".join(f"{region} {weight}" for region, weight in sorted(weights.items()))
            notes.append(
                f"DNS {r53.record} → {r53.traffic_record}: weights {split}; active: "
                f"{active or 'NONE (all weights 0)'}"
            )
        except RunbookError as exc:
            notes.append(f"DNS {r53.record}: cannot read ({exc.message})")
    else:
        notes.append("DNS: not managed here (no route53 in environments.yaml)")
    for region in env.regions:
        marks = []
        if region == env.primary_region:
            marks.append("primary")
        if region == active:
            marks.append("ACTIVE")
        label = f"{region}{' (' + ', '.join(marks) + ')' if marks else ''}"
        parts = []
        group_name = env.autoscaling_groups.get(region)
        if group_name:
            try:
                group = infra.aws(region).node_group(group_name)
                parts.append(
                    f"node group {group_name} {group.in_service}/{group.desired} in service "
                    f"(bounds {group.minimum}-{group.maximum})"
                )
            except RunbookError as exc:
                parts.append(f"node group {group_name}: cannot read ({exc.message})")
        for name, service in sorted(env.services.items()):
            if region not in env.kube_contexts:
                continue
            try:
                state = kube_for(ctx, params.environment, region).deployment(
                    service.namespace, service.deployment
                )
                parts.append(
                    f"{name}: {service.deployment} {state.ready}/{state.replicas} ready "
                    f"({state.image_text()})"
                )
            except RunbookError as exc:
                parts.append(f"{name}: cannot read ({exc.message})")
        notes.append(f"compute {label}: " + ("; ".join(parts) or "nothing configured"))
    if env.mongodb is not None:
        try:
            topology = infra.database(params.environment).topology()
            lags = ", ".join(
                f"{region} {format_duration(lag)}"
                for region in env.regions
                if region != topology.primary_region and (lag := topology.lag(region)) is not None
            )
            primary = topology.primary_region or "NO REGION"
            notes.append(
                f"database ({env.mongodb.kind}): primary in {primary}; replication lag: "
                f"{lags or 'no secondaries reporting'}"
            )
        except RunbookError as exc:
            notes.append(f"database ({env.mongodb.kind}): cannot read ({exc.message})")
    if env.targets:
        notes.append(
            "targets: "
            + "; ".join(
                f"{name} RTO {format_duration(t.rto)} RPO {format_duration(t.rpo)}"
                for name, t in env.targets.items()
            )
        )
    return PlanDraft(
        steps=[],
        summary=f"DR status of {params.environment}: active region {active or 'unknown'}",
        notes=notes,
    )
