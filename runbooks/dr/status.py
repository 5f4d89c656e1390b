"""``dr.status`` (read-only): which region serves each component.

``dr.status`` reports, per component, which region is active: DNS (the weighted traffic
records), compute per region (node group and the services' deployments) and the recovery
targets. It is meant for the middle of an outage, so a component that cannot be read is
reported as such and the rest is still shown.
"""

from __future__ import annotations

from pydantic import Field

from runbooks.dr.common import error_rate_query, percent
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.environments import EnvironmentConfig
from runbooks.engine.errors import RunbookError
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import PastRun, PlanContext, PlanDraft
from runbooks.engine.registry import runbook
from runbooks.interfaces import infrastructure
from runbooks.kit.kube import kube_for
from runbooks.kit.regions import active_region
from runbooks.kit.report import Verdict


class DrStatusParams(RunbookParams):
    environment: str = Field(
        "production", description="environment to report on (default production)"
    )
    strict: bool = Field(
        False, description="fail (exit 1) when any component cannot be read, not only all"
    )


@runbook("dr.status", params=DrStatusParams, read_only=True)
def dr_status(ctx: PlanContext, params: DrStatusParams) -> PlanDraft:
    """Which region serves each component (DNS, compute), with capacity and targets."""
    env = ctx.env
    infra = infrastructure(ctx)
    notes: list[str] = []
    active = None
    unread: list[str] = []  # what could not be read

    def cannot(what: str, exc: RunbookError) -> str:
        unread.append(what)
        return f"{what}: cannot read ({exc.message})"

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
            notes.append(cannot(f"DNS {r53.record}", exc))
        try:
            checks = infra.aws(env.primary_region).health_checks(r53.zone)
            if checks:
                notes.append(
                    "Route53 health checks: "
                    + "; ".join(
                        f"{target} {'OK' if healthy == total else 'FAILING'} "
                        f"({healthy}/{total} checkers)"
                        for target, healthy, total in checks
                    )
                )
        except RunbookError as exc:
            notes.append(cannot("Route53 health checks", exc))
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
                parts.append(cannot(f"node group {group_name}", exc))
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
                parts.append(cannot(f"{name} ({region})", exc))
        query = error_rate_query(env, params.environment, region)
        if query is not None:
            try:
                rate = infra.metrics(params.environment).query(query)
                parts.append("error rate " + (percent(rate) if rate is not None else "no samples"))
            except RunbookError as exc:
                parts.append(cannot(f"error rate ({region})", exc))
        notes.append(f"compute {label}: " + ("; ".join(parts) or "nothing configured"))
    db_primary = None
    if env.mongodb is not None:
        try:
            topology = infra.database(params.environment).topology()
            lags = ", ".join(
                f"{region} {format_duration(lag)}"
                for region in env.regions
                if region != topology.primary_region and (lag := topology.lag(region)) is not None
            )
            primary = topology.primary_region or "NO REGION"
            db_primary = topology.primary_region
            notes.append(
                f"database ({env.mongodb.kind}): primary in {primary}; replication lag: "
                f"{lags or 'no secondaries reporting'}"
            )
        except RunbookError as exc:
            notes.append(cannot(f"database ({env.mongodb.kind})", exc))
    if env.backup_bucket is not None:
        try:
            latest = infra.aws(env.primary_region).latest_object(env.backup_bucket)
            if latest is None:
                notes.append(f"backups: {env.backup_bucket} is EMPTY")
            else:
                # No age ("2h ago"): notes are part of the plan's hash and must not tick.
                key, modified = latest
                notes.append(f"backups: latest in {env.backup_bucket}: {key} at {iso(modified)}")
        except RunbookError as exc:
            notes.append(cannot(f"backups: {env.backup_bucket}", exc))
    notes.extend(_drills(ctx.history(), params.environment))
    if env.targets:
        notes.append(
            "targets: "
            + "; ".join(
                f"{name} RTO {format_duration(t.rto)} RPO {format_duration(t.rpo)}"
                for name, t in env.targets.items()
            )
        )
    # Last, as README and docs/readiness.md say: the bot's last evaluation, "readiness: ready,
    # checked 12m ago" (a split, found below, goes first).
    notes.append(ctx.readiness())
    if active and db_primary and active != db_primary:
        notes.insert(
            0,
            f"SPLIT: traffic goes to {active} but the database primary is in {db_primary} "
            f"(writes cross regions). Move the database back with `dr.failback` (or "
            f"`dr.failover {active}`), or complete the move with `dr.failover {db_primary}`",
        )
    summary = f"DR status of {params.environment}: active region {active or 'unknown'}"
    if unread:
        summary += f" (PARTIAL: cannot read {', '.join(unread)})"
    verdict = Verdict(
        ok=not unread or (not params.strict and len(unread) < _components(env)),
        message=(
            "every component read"
            if not unread
            else f"could not read {len(unread)} of {_components(env)} components: "
            + ", ".join(unread)
        ),
    )
    return PlanDraft(steps=[verdict], summary=summary, notes=notes)


def _components(env: EnvironmentConfig) -> int:
    """How many components ``dr.status`` reads for this environment."""
    count = 0
    if env.route53 is not None:
        count += 2  # weighted records, health checks
    for region in env.regions:
        count += 1 if env.autoscaling_groups.get(region) else 0
        count += len(env.services) if region in env.kube_contexts else 0
        count += 1 if env.prometheus is not None else 0
    count += 1 if env.mongodb is not None else 0
    count += 1 if env.backup_bucket is not None else 0
    return max(count, 1)


RAN = {"succeeded", "failed", "compensated", "compensation_failed"}


def _drills(history: list[PastRun], environment: str) -> list[str]:
    """The last partial failover test, full failover or failback, and restore test that ran."""

    def line(label: str, run: PastRun | None) -> str:
        if run is None:
            return f"{label}: none recorded"
        when = iso(run.ended_at) if run.ended_at else "?"
        return f"{label}: {when} {run.state.upper()} ({run.id}: {run.summary})"

    ran = [
        r
        for r in history
        if r.environment == environment
        and r.state in RAN
        and r.runbook in ("dr.failover", "dr.failback")
    ]
    partial = next((r for r in ran if r.params.get("partial")), None)
    full = next((r for r in ran if not r.params.get("partial")), None)
    restore = next(
        (
            r
            for r in history
            if r.environment == environment and r.state in RAN and r.runbook == "restore.test"
        ),
        None,
    )
    return [
        line("last partial failover test", partial),
        line("last failover/failback", full),
        line("last restore test", restore),
    ]
