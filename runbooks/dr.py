"""Disaster recovery: ``dr.status`` (read-only), ``dr.failover`` and ``dr.failback``.

``dr.status`` reports, per component, which region is active: DNS (the weighted traffic
records), compute per region (node group and the services' deployments) and the recovery
targets. It is meant for the middle of an outage, so a component that cannot be read is
reported as such and the rest is still shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pydantic import Field, ValidationInfo, field_validator

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.environments import EnvironmentConfig, ServiceConfig
from runbooks.engine.config.yaml_files import Seconds
from runbooks.engine.errors import InvalidInput, Refused, RunbookError
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import Measure, PastRun, PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.readiness import Observation, observe, readiness_check
from runbooks.engine.registry import runbook
from runbooks.interfaces import (
    DataOps,
    DbTopology,
    InfrastructureError,
    expand_vars,
    infrastructure,
)
from runbooks.kit import backups
from runbooks.kit.aws import SCALE_UP, AwsStep, SetNodeCapacity
from runbooks.kit.kube import ScaleDeployment, kube_for
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
                parts.append("error rate " + (_percent(rate) if rate is not None else "no samples"))
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


# --- failover and failback ----------------------------------------------------------------------


class FailoverParams(RunbookParams):
    environment: str = Field("production", description="environment (default production)")
    region: str = Field(description="region to move the environment to (e.g. us-west-2)")
    accept_data_loss: bool = Field(
        False,
        description="with --break-glass: fail over although replication lag exceeds the RPO",
    )
    partial: int | None = Field(
        None,
        ge=1,
        le=50,
        description="partial failover test: move this percent of traffic, soak, move it back",
    )
    soak: Seconds | None = Field(
        None, description="how long a partial test holds (default: partial_soak of the env)"
    )

    @field_validator("region")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        from runbooks.engine.params import _config

        config = _config(info)
        environment = info.data.get("environment")
        if config is not None and environment is not None:
            regions = config.environment(environment).regions
            if value not in regions:
                raise ValueError(
                    f"unknown region {value!r} for {environment}; known: {', '.join(regions)}"
                )
        return value


class FailbackParams(RunbookParams):
    environment: str = Field("production", description="environment (default production)")


@dataclass(frozen=True, kw_only=True)
class PromoteDatabase(Step, kind="db.promote"):
    environment: str
    region: str
    timeout: float = 3600.0
    irreversible_reason = (
        "the new primary takes writes at once; moving it back is a failback "
        "(`dr.failback`, which first checks that the other region has caught up). Manually: "
        "Atlas UI → cluster → Edit configuration → make the old region highest priority, "
        "after confirming replication lag is 0"
    )

    def describe(self) -> str:
        return f"promote the {self.environment} database in {self.region} (move its primary there)"

    def run(self, ctx: RunContext) -> str | None:
        database = infrastructure(ctx).database(self.environment)
        moves = database.topology().primary_region != self.region
        started = ctx.clock.now()
        database.promote(self.region, timeout=self.timeout, check=ctx.check_cancelled)
        if moves:  # what the next predicted RTO counts for an election (``predict_rto``)
            ctx.measure(Measure(ELECTION, ctx.clock.now() - started))
        return f"database primary now in {self.region}"

    def verify(self, ctx: RunContext) -> bool:
        topology = infrastructure(ctx).database(self.environment).topology()
        return topology.primary_region == self.region


@dataclass(frozen=True, kw_only=True)
class ShiftTraffic(AwsStep, kind="dns.weights"):
    zone: str
    record: str
    from_weights: dict[str, int]
    to_weights: dict[str, int]

    def describe(self) -> str:
        def split(weights: dict[str, int]) -> str:
            return "/".join(f"{r} {w}" for r, w in sorted(weights.items()))

        return (
            f"shift traffic of {self.record}: {split(self.from_weights)} → {split(self.to_weights)}"
        )

    def run(self, ctx: RunContext) -> str | None:
        self.aws(ctx).set_traffic_weights(self.zone, self.record, self.to_weights)
        return "Route53 change in sync"

    def verify(self, ctx: RunContext) -> bool:
        return self.aws(ctx).traffic_weights(self.zone, self.record) == self.to_weights

    def undo(self, ctx: RunContext) -> str | None:
        self.aws(ctx).set_traffic_weights(self.zone, self.record, self.from_weights)
        return "traffic weights restored"


def health_url(env: EnvironmentConfig, region: str) -> str | None:
    if env.health_url is None:
        return None
    return expand_vars(env.health_url, what="health_url").replace("{region}", region)


def error_rate_query(env: EnvironmentConfig, environment: str, region: str) -> str | None:
    """The region's error-rate query, scoped to the environment (``prometheus.labels``)."""
    if env.prometheus is None:
        return None
    return env.prometheus.render(
        env.prometheus.error_rate_query, environment=environment, region=region
    )


def _percent(rate: float) -> str:
    return f"{rate * 100:.2f} %".replace(".00 %", " %")


def read_error_rate(ctx: RunContext | PlanContext, environment: str, query: str) -> float | None:
    """The region's error rate (0..1) from Prometheus; None when it has no samples."""
    return infrastructure(ctx).metrics(environment).query(query)


@dataclass(frozen=True, kw_only=True)
class VerifyRegion(AwsStep, kind="dr.verify"):
    """The target serves: its load balancer targets are healthy, /health answers 200
    ``checks`` times in a row, and (with Prometheus configured) its error rate is below the
    rollback trigger. Reports the RTO achieved against the target.

    An unreachable Prometheus does not fail the verification (it may have been in the region
    that failed); the report says the error rate was not checked."""

    group: str | None
    url: str | None
    error_query: str | None = None
    max_error_rate: float = 0.05
    checks: int = 3
    interval: float = 1.0
    rto_target: float | None = None
    #: False where the run's RTO was measured by an earlier verification (a failback after
    #: the region-failure simulation's failover)
    measure_rto: bool = True
    timeout: float = 300.0

    def describe(self) -> str:
        parts = []
        if self.group:
            parts.append(f"{self.group} targets healthy")
        if self.url:
            parts.append(f"{self.url} answers 200 {self.checks} times in a row")
        if self.error_query:
            parts.append(f"error rate at most {_percent(self.max_error_rate)}")
        return f"verify {self.region}: " + (" and ".join(parts) or "nothing configured to check")

    def run(self, ctx: RunContext) -> str | None:
        if self.group:
            healthy, total = self.aws(ctx).target_health(self.group)
            if total == 0 or healthy < total:
                raise InfrastructureError(
                    f"{self.group}: {healthy}/{total} load balancer targets healthy"
                )
            ctx.note(f"{self.group}: {healthy}/{total} targets healthy")
        if self.url:
            for attempt in range(self.checks):
                if attempt:
                    ctx.clock.sleep(self.interval)
                ctx.check_cancelled()
                status = _get_status(ctx, self.url)
                if status != 200:
                    raise InfrastructureError(
                        f"{self.url} answered {status} (check {attempt + 1} of {self.checks})"
                    )
            ctx.note(f"{self.url}: 200 × {self.checks}")
        if self.error_query:
            try:
                rate = read_error_rate(ctx, self.environment, self.error_query)
            except RunbookError as exc:
                ctx.note(f"error rate NOT CHECKED: {exc.message}")
            else:
                if rate is not None and rate > self.max_error_rate:
                    raise InfrastructureError(
                        f"error rate in {self.region} is {_percent(rate)}, above the rollback "
                        f"trigger of {_percent(self.max_error_rate)}"
                    )
                ctx.note(
                    f"error rate in {self.region}: "
                    + (_percent(rate) if rate is not None else "no samples yet")
                    + f" (limit {_percent(self.max_error_rate)})"
                )
        if not self.measure_rto:
            return None
        rto = Measure(
            "RTO",
            ctx.clock.now() - ctx.started_at,
            target=self.rto_target,
            detail="" if self.rto_target is not None else "no api target configured",
        )
        ctx.measure(rto)
        return None


def _get_status(ctx: RunContext | PlanContext, url: str) -> int | str:
    return infrastructure(ctx).health().status(url)


def _dns(ctx: PlanContext) -> tuple[str, str, dict[str, int]]:
    env = ctx.env
    if env.route53 is None:
        raise InvalidInput(f"{ctx.environment} has no route53 configured: nothing to fail over")
    r53 = env.route53
    weights = (
        infrastructure(ctx).aws(env.primary_region).traffic_weights(r53.zone, r53.traffic_record)
    )
    return r53.zone, r53.traffic_record, weights


def _move_plan(ctx: PlanContext, target: str, *, accept_data_loss: bool, what: str) -> PlanDraft:
    """The steps that move an environment's traffic, compute and database to ``target``."""
    env = ctx.env
    infra = infrastructure(ctx)
    zone, record, weights = _dns(ctx)
    source = active_region(weights)
    notes = ["DNS now: " + ", ".join(f"{r} {w}" for r, w in sorted(weights.items()))]
    topology = infra.database(ctx.environment).topology() if env.mongodb is not None else None
    if source == target:
        db_region = topology.primary_region if topology is not None else None
        if topology is not None and db_region is not None and db_region != target:
            # A split (a failover that promoted the database and then moved traffic back):
            # finish it by bringing the database primary to where the traffic is.
            notes.append(
                f"SPLIT: traffic is in {target} but the database primary is in {db_region}; "
                f"this moves the database primary back to {target}"
            )
            promote = _promotion(
                ctx, target, topology, accept_data_loss=accept_data_loss, notes=notes
            )
            steps_split: list[Step] = [promote] if promote else []
            return PlanDraft(
                steps=steps_split,
                summary=f"{what}: database primary {db_region} → {target} (traffic already "
                f"in {target})",
                notes=notes,
            )
        notes.append(f"{ctx.environment} already serves from {target}: nothing to do")
        return PlanDraft(steps=[], summary=f"{what}: already in {target}", notes=notes)
    if source is None:
        raise Refused(f"no region carries traffic for {record} (all weights 0); fix DNS first")
    _preflight_target(ctx, target, notes)
    source_group = env.autoscaling_groups.get(source)
    target_group = env.autoscaling_groups.get(target)
    if target_group is None:
        raise InvalidInput(f"{ctx.environment} has no node group in {target} to fail over to")
    # Each node group is read once per plan: the prediction, the steps and the notes use
    # the same reading (one moment's state, and no provider call twice).
    target_state = infra.aws(target).node_group(target_group)
    kept = infra.aws(source).node_group(source_group).desired if source_group else None
    try:
        prediction = predict_rto(
            ctx, source, target, desired=None if kept is None else (kept, target_state.desired)
        )
        notes.append(prediction.words())
    except RunbookError as exc:
        notes.append(f"predicted RTO: cannot be computed ({exc.message})")
    steps: list[Step] = []
    # Compute: the target gets the source's current capacity.
    wanted = kept if kept is not None else target_state.desired
    if wanted > target_state.maximum:
        raise Refused(
            f"{target_group} can hold at most {target_state.maximum} instances; {source} runs "
            f"{wanted}. Raise its MaxSize first"
        )
    if wanted > target_state.desired:
        steps.append(
            SetNodeCapacity(
                environment=ctx.environment,
                region=target,
                group=target_group,
                from_desired=target_state.desired,
                to_desired=wanted,
            )
        )
    for name, service in sorted(env.services.items()):
        if source not in env.kube_contexts or target not in env.kube_contexts:
            continue
        have = kube_for(ctx, ctx.environment, target).deployment(
            service.namespace, service.deployment
        )
        need = kube_for(ctx, ctx.environment, source).deployment(
            service.namespace, service.deployment
        )
        if need.replicas > have.replicas:
            steps.append(
                ScaleDeployment(
                    environment=ctx.environment,
                    region=target,
                    namespace=service.namespace,
                    deployment=service.deployment,
                    from_replicas=have.replicas,
                    to_replicas=need.replicas,
                )
            )
        notes.append(
            f"{name}: {target} runs {have.image_text()}, {source} runs {need.image_text()}"
        )
    # Database: lag within the RPO, or an explicit, break-glass acceptance of data loss.
    if topology is not None and topology.primary_region != target:
        promote = _promotion(ctx, target, topology, accept_data_loss=accept_data_loss, notes=notes)
        if promote is not None:
            steps.append(promote)
    to_weights = {region: (100 if region == target else 0) for region in weights}
    steps.append(
        ShiftTraffic(
            environment=ctx.environment,
            region=env.primary_region,
            zone=zone,
            record=record,
            from_weights=weights,
            to_weights=to_weights,
        )
    )
    api_target = env.targets.get("api")
    steps.append(
        VerifyRegion(
            environment=ctx.environment,
            region=target,
            group=target_group,
            url=health_url(env, target),
            error_query=error_rate_query(env, ctx.environment, target),
            max_error_rate=env.rollback_triggers.error_rate,
            rto_target=api_target.rto if api_target else None,
        )
    )
    # After a failover the old region is where a failback goes; after a failback the DR region
    # is the standby again, still holding the capacity the failover gave it.
    why_kept = "for a failback" if what == "failover" else "as the standby for the next failover"
    notes.append(
        f"{source} keeps running ({why_kept}); its capacity is not reduced"
        + (
            f": {source_group} stays at {kept} instances. Once traffic is settled, return it "
            f"with `scale.nodes {ctx.environment} --desired N --region {source}`"
            if source_group and kept is not None
            else ""
        )
    )
    return PlanDraft(steps=steps, summary=f"{what}: {source} → {target}", notes=notes)


def _promotion(
    ctx: PlanContext,
    target: str,
    topology: DbTopology,
    *,
    accept_data_loss: bool,
    notes: list[str],
) -> PromoteDatabase | None:
    """The promotion of the database in ``target``, within the RPO or refused."""
    env = ctx.env
    if topology.primary_region == target:
        return None
    rpo = env.targets["database"].rpo if "database" in env.targets else 0.0
    lag = topology.lag(target)
    if lag is None:
        raise Refused(f"the database has no readable member in {target}; cannot promote there")
    if lag > rpo:
        message = (
            f"replication lag in {target} is {format_duration(lag)}, beyond the database "
            f"RPO of {format_duration(rpo)}: failing over now loses those writes"
        )
        if not (ctx.break_glass and accept_data_loss):
            raise Refused(
                message,
                hint="wait for the lag to fall, or accept the loss explicitly: "
                "--break-glass --accept-data-loss --reason TEXT --incident ID",
            )
        notes.append(f"DATA LOSS ACCEPTED (break-glass): {message}")
    else:
        notes.append(
            f"database lag in {target}: {format_duration(lag)} (RPO {format_duration(rpo)})"
        )
    return PromoteDatabase(environment=ctx.environment, region=target)


def _preflight_target(ctx: PlanContext, target: str, notes: list[str]) -> None:
    """Refuse to start a move whose verification would fail: the target's ``/health`` must
    answer 200 and its error rate (where Prometheus is configured) stay below the trigger,
    before anything irreversible (the database promotion) happens. Break-glass goes ahead
    with the problem written into the plan."""
    env = ctx.env
    problems = []
    url = health_url(env, target)
    if url is not None:
        status = _get_status(ctx, url)
        if status != 200:
            problems.append(f"{url} answered {status}")
        else:
            notes.append(f"preflight: {url} answers 200")
    query = error_rate_query(env, ctx.environment, target)
    if query is not None:
        try:
            rate = read_error_rate(ctx, ctx.environment, query)
        except RunbookError as exc:
            notes.append(f"preflight: error rate in {target} NOT CHECKED ({exc.message})")
        else:
            limit = env.rollback_triggers.error_rate
            if rate is not None and rate > limit:
                problems.append(
                    f"its error rate is {_percent(rate)}, above the rollback trigger of "
                    f"{_percent(limit)}"
                )
            elif rate is not None:
                notes.append(f"preflight: error rate in {target} {_percent(rate)}")
    if not problems:
        return
    why = f"{target} is not healthy: " + "; ".join(problems)
    if ctx.break_glass:
        notes.append(f"BREAK-GLASS: going ahead although {why}")
        return
    raise Refused(
        f"{why}. Failing over to it would promote the database there (irreversible) and "
        "then fail verification",
        hint="fix the target region first; if you must go anyway: "
        "--break-glass --reason TEXT --incident ID",
    )


@dataclass(frozen=True, kw_only=True)
class Soak(AwsStep, kind="dr.soak"):
    """Hold a traffic split while watching the target; the first bad signal fails the step
    (and compensation moves the traffic back)."""

    group: str | None
    url: str | None
    seconds: float
    interval: float = 5.0
    error_query: str | None = None
    max_error_rate: float = 0.05

    def describe(self) -> str:
        error = f"error rate (at most {_percent(self.max_error_rate)})" if self.error_query else ""
        watched = ", ".join(
            p for p in [f"{self.group} targets" if self.group else "", self.url or "", error] if p
        )
        return (
            f"soak {format_duration(self.seconds)} in {self.region}, watching "
            f"{watched or 'nothing configured'} every {format_duration(self.interval)}"
        )

    def run(self, ctx: RunContext) -> str | None:
        deadline = ctx.clock.now() + self.seconds
        checks = 0
        while True:
            ctx.check_cancelled()
            if self.group:
                healthy, total = self.aws(ctx).target_health(self.group)
                if total == 0 or healthy < total:
                    raise InfrastructureError(
                        f"bad signal after {checks} good checks: {self.group} has "
                        f"{healthy}/{total} healthy targets"
                    )
            if self.url:
                status = _get_status(ctx, self.url)
                if status != 200:
                    raise InfrastructureError(
                        f"bad signal after {checks} good checks: {self.url} answered {status}"
                    )
            if self.error_query:
                # A test is never worth flying blind: an unreadable error rate is a bad signal.
                try:
                    rate = read_error_rate(ctx, self.environment, self.error_query)
                except RunbookError as exc:
                    raise InfrastructureError(
                        f"bad signal after {checks} good checks: error rate unreadable "
                        f"({exc.message})"
                    ) from None
                if rate is not None and rate > self.max_error_rate:
                    raise InfrastructureError(
                        f"bad signal after {checks} good checks: error rate in {self.region} "
                        f"is {_percent(rate)} (limit {_percent(self.max_error_rate)})"
                    )
            checks += 1
            left = deadline - ctx.clock.now()
            if left <= 0:
                return f"{checks} checks healthy over {format_duration(self.seconds)}"
            ctx.clock.sleep(min(self.interval, left))


#: Parts of the predicted RTO: a primary election until a run measured one (MongoDB's
#: typical, Atlas's documented order of magnitude), a node joining a node group that must grow,
#: and the failover's own verification once DNS has moved (neither measured here yet).
ELECTION_S = 12.0
NODE_BOOT_S = 180.0
VERIFY_S = 60.0
#: The measure a promotion records (``PromoteDatabase``): request to primary seen there.
ELECTION = "primary election"
#: How many of the newest measured elections the prediction takes the slowest of.
ELECTION_RUNS = 5


def _slowest_measured(ctx: PlanContext, name: str) -> tuple[float, int] | None:
    """(seconds, runs): the slowest ``name`` measure of the environment's newest
    ``ELECTION_RUNS`` succeeded runs that measured one; None before any did."""
    seen: list[float] = []
    for run in ctx.history():  # newest first
        if run.environment != ctx.environment or run.state != "succeeded":
            continue
        found = next((m for m in run.measures if m.name == name), None)
        if found is not None:
            seen.append(found.seconds)
            if len(seen) == ELECTION_RUNS:
                break
    return (max(seen), len(seen)) if seen else None


def measured_scale_up(ctx: PlanContext) -> tuple[float, int] | None:
    """The slowest node-group scale-up the newest runs measured (``SetNodeCapacity``: a
    failover's standby, a ``scale.nodes`` up, a resize's surge)."""
    return _slowest_measured(ctx, SCALE_UP)


def measured_election(ctx: PlanContext) -> tuple[float, int] | None:
    """(seconds, runs): the slowest election of the environment's newest ``ELECTION_RUNS``
    succeeded runs that measured one (failovers, failbacks, region-failure simulations);
    None before any did."""
    return _slowest_measured(ctx, ELECTION)


@dataclass(frozen=True)
class RtoPrediction:
    """What a failover from ``source`` to ``target`` would take, part by part."""

    source: str
    target: str
    parts: tuple[tuple[str, float], ...]
    objective: float | None

    @property
    def total(self) -> float:
        return sum(seconds for _, seconds in self.parts)

    @property
    def met(self) -> bool:
        return self.objective is None or self.total <= self.objective

    def words(self) -> str:
        goal = "" if self.objective is None else f" (target {format_duration(self.objective)})"
        return (
            f"predicted RTO {self.source} → {self.target} {format_duration(self.total)}{goal}: "
            + " + ".join(f"{name} {format_duration(s)}" for name, s in self.parts)
        )


def predict_rto(
    ctx: PlanContext, source: str, target: str, *, desired: tuple[int, int] | None = None
) -> RtoPrediction:
    """DNS TTL + health-check interval × failure threshold (read from Route53) + a primary
    election + the standby's scale-up (when its node group must grow) + verification.

    ``desired``: the source's and the target's desired node counts when the caller has
    just read them (the failover plan); otherwise they are read here."""
    env = ctx.env
    infra = infrastructure(ctx)
    parts: list[tuple[str, float]] = []
    if env.route53 is not None:
        aws = infra.aws(env.primary_region)
        parts.append(
            ("DNS TTL", float(aws.traffic_ttl(env.route53.zone, env.route53.traffic_record)))
        )
        timing = aws.health_check_timing(env.route53.zone)
        if timing:
            _host, interval, threshold = max(timing, key=lambda t: t[1] * t[2])
            parts.append((f"health checks {interval}s × {threshold}", float(interval * threshold)))
    if env.mongodb is not None:
        measured = measured_election(ctx)
        if measured is None:
            parts.append((ELECTION, ELECTION_S))
        else:
            seconds, runs = measured
            parts.append((f"{ELECTION} (slowest of the last {runs} measured)", seconds))
    source_group, target_group = (env.autoscaling_groups.get(r) for r in (source, target))
    if source_group and target_group:
        need, have = desired or (
            infra.aws(source).node_group(source_group).desired,
            infra.aws(target).node_group(target_group).desired,
        )
        if need > have:
            scale_up = measured_scale_up(ctx)
            if scale_up is None:
                parts.append((f"standby scale-up {have} → {need} nodes", NODE_BOOT_S))
            else:
                seconds, runs = scale_up
                parts.append(
                    (
                        f"standby scale-up {have} → {need} nodes (slowest of the last {runs} "
                        "measured)",
                        seconds,
                    )
                )
    parts.append(("verification", VERIFY_S))
    objective = env.targets["api"].rto if "api" in env.targets else None
    return RtoPrediction(source, target, tuple(parts), objective)


@runbook("dr.failover", params=FailoverParams, lock="{environment}:*")
def dr_failover(ctx: PlanContext, params: FailoverParams) -> PlanDraft:
    """Move an environment to another region: capacity, database, DNS, then verify.

    With --partial P: the quarterly test — P % of traffic to the region for the soak time,
    watched, then back (at once at the first bad signal). Database and capacity untouched.
    """
    if params.accept_data_loss and not ctx.break_glass:
        raise InvalidInput("--accept-data-loss is only taken with --break-glass")
    if params.partial is not None:
        return _partial_plan(ctx, params)
    if params.soak is not None:
        raise InvalidInput("--soak is for a partial test (--partial P)")
    return _move_plan(ctx, params.region, accept_data_loss=params.accept_data_loss, what="failover")


def _partial_plan(ctx: PlanContext, params: FailoverParams) -> PlanDraft:
    env = ctx.env
    assert params.partial is not None
    zone, record, weights = _dns(ctx)
    source = active_region(weights)
    if source is None or weights.get(source) != 100:
        raise Refused(
            f"a partial test starts from 100 % in one region; {record} is split "
            f"{', '.join(f'{r} {w}' for r, w in sorted(weights.items()))} now"
        )
    if source == params.region:
        raise InvalidInput(f"{params.region} already carries all traffic; test another region")
    split = {r: 0 for r in weights}
    split[source] = 100 - params.partial
    split[params.region] = params.partial
    soak = params.soak if params.soak is not None else env.partial_soak

    def shift(before: dict[str, int], after: dict[str, int]) -> ShiftTraffic:
        return ShiftTraffic(
            environment=ctx.environment,
            region=env.primary_region,
            zone=zone,
            record=record,
            from_weights=before,
            to_weights=after,
        )

    steps: list[Step] = [
        shift(weights, split),
        Soak(
            environment=ctx.environment,
            region=params.region,
            group=env.autoscaling_groups.get(params.region),
            url=health_url(env, params.region),
            error_query=error_rate_query(env, params.environment, params.region),
            max_error_rate=env.rollback_triggers.error_rate,
            seconds=soak,
            interval=min(5.0, max(0.5, soak / 10)),
            timeout=soak + 60.0,
        ),
        shift(split, weights),
    ]
    return PlanDraft(
        steps=steps,
        summary=(
            f"partial failover test: {params.partial} % to {params.region} for "
            f"{format_duration(soak)}"
        ),
        notes=[
            "database and capacity are not touched; at the first bad signal the traffic "
            "goes back at once (compensation of step 1)"
        ],
    )


@runbook("dr.failback", params=FailbackParams, lock="{environment}:*")
def dr_failback(ctx: PlanContext, params: FailbackParams) -> PlanDraft:
    """Return an environment to its primary region after a failover (data sync checked)."""
    return _move_plan(ctx, ctx.env.primary_region, accept_data_loss=False, what="failback")


# --- dr.simulate -------------------------------------------------------------------------------

SCENARIOS = ("region-failure", "database-corruption", "accidental-deletion")
CORRUPT_EVERY = 20  # database-corruption overwrites every 20th document of a collection


class SimulateParams(RunbookParams):
    scenario: str = Field(description="region-failure, database-corruption or accidental-deletion")
    environment: str = Field(
        "staging", description="a non-production environment (default staging)"
    )
    collection: str | None = Field(
        None, description="the collection to damage (default: the largest)"
    )

    @field_validator("scenario")
    @classmethod
    def _known_scenario(cls, value: str) -> str:
        if value not in SCENARIOS:
            raise ValueError(f"unknown scenario {value!r}; choose one of {', '.join(SCENARIOS)}")
        return value


def _sim_name(ctx: RunContext, step: DataStep, what: str) -> str:
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(ctx.started_at or ctx.clock.now()))
    suffix = ctx.execution_id.removeprefix("rb-") or "run"
    return f"{step.scratch_prefix}{step.environment}_sim_{stamp}_{suffix}_{what}"


@dataclass(frozen=True, kw_only=True)
class DataStep(Step):
    """A simulation step on the restore target's scratch copies of an environment's data."""

    environment: str
    database: str
    scratch_prefix: str
    timeout: float = 3600.0

    def target(self, ctx: RunContext) -> DataOps:
        return infrastructure(ctx).data(self.environment, restore_target=True)

    def drop(self, ctx: RunContext, what: str) -> str:
        name = _sim_name(ctx, self, what)
        target = self.target(ctx)
        if name not in target.database_names():
            return f"{name} is gone"
        target.drop_database(name)
        return f"dropped {name}"


@dataclass(frozen=True, kw_only=True)
class CopyLive(DataStep, kind="dr.sim_copy"):
    def describe(self) -> str:
        return (
            f"copy {self.environment} database {self.database} into an incident copy on the "
            "restore target (the live database is only read)"
        )

    def run(self, ctx: RunContext) -> str | None:
        name = _sim_name(ctx, self, "incident")
        target = self.target(ctx)
        if name in target.database_names():
            target.drop_database(name)  # an earlier attempt of this run
        counts = backups.copy_database(
            infrastructure(ctx).data(self.environment),
            self.database,
            target,
            name,
            check=ctx.check_cancelled,
        )
        listed = ", ".join(f"{c} {n}" for c, n in counts.items())
        return f"incident copy {name}: {listed}"

    def undo(self, ctx: RunContext) -> str | None:
        return self.drop(ctx, "incident")


@dataclass(frozen=True, kw_only=True)
class InjectFailure(DataStep, kind="dr.sim_inject"):
    scenario: str
    collection: str

    def describe(self) -> str:
        if self.scenario == "accidental-deletion":
            what = f"drop collection {self.collection}"
        else:
            what = f"overwrite every {CORRUPT_EVERY}th document of {self.collection} with garbage"
        return f"inject {self.scenario} into the incident copy: {what}"

    def run(self, ctx: RunContext) -> str | None:
        name = _sim_name(ctx, self, "incident")
        target = self.target(ctx)
        if self.scenario == "accidental-deletion":
            count = target.count(name, self.collection)
            target.drop_collection(name, self.collection)
            if self.collection in target.collection_names(name):
                raise InfrastructureError(f"{self.collection} is still in {name} after the drop")
            return f"dropped {self.collection} ({count} documents) in the incident copy"
        damaged = backups.corrupt(target, name, self.collection, every=CORRUPT_EVERY)
        return f"corrupted {damaged} documents of {self.collection} in the incident copy"

    def undo(self, ctx: RunContext) -> str | None:
        return "nothing to undo: the incident copy is dropped with step 1"


@dataclass(frozen=True, kw_only=True)
class RecoverFromBackup(DataStep, kind="dr.sim_recover"):
    scenario: str
    collection: str
    bucket: str
    prefix: str

    def describe(self) -> str:
        return (
            f"recover: restore s3://{self.bucket}/{self.prefix} into a recovered copy, verify it, "
            f"and compare it with the pre-incident data (what a real {self.scenario} would lose)"
        )

    def run(self, ctx: RunContext) -> str | None:
        infra = infrastructure(ctx)
        target = self.target(ctx)
        started = ctx.clock.now()
        name = _sim_name(ctx, self, "recovered")
        incident = _sim_name(ctx, self, "incident")
        if name in target.database_names():
            target.drop_database(name)
        aws = infra.aws(ctx.env.primary_region)
        found = [b for b in backups.find_backups(aws, self.bucket) if b.prefix == self.prefix]
        if not found:
            raise InfrastructureError(f"backup s3://{self.bucket}/{self.prefix} is gone")
        report = backups.restore_into(aws, target, found[0], name, check=ctx.check_cancelled)
        ctx.note(f"backup checks: {report.summary()}")
        if not report.passed:
            raise InfrastructureError(f"the backup cannot be recovered from: {report.summary()}")
        source = infra.data(self.environment)
        lost = 0
        for collection in sorted(set(source.collection_names(self.database)) | {self.collection}):
            ctx.check_cancelled()
            before = backups.digests(source, self.database, collection)
            after = backups.digests(target, name, collection)
            difference = backups.compare(before, after)
            lost += difference.differs
            ctx.note(
                f"{collection}: {difference.same} of {len(before)} documents as before the "
                f"incident; would be lost: {len(difference.missing)} newer than the backup, "
                f"{len(difference.changed)} changed since, {len(difference.extra)} deleted since "
                "(would come back)"
            )
        damaged = backups.compare(
            backups.digests(source, self.database, self.collection),
            backups.digests(target, incident, self.collection),
        )
        repaired = backups.compare(
            {
                k: v
                for k, v in backups.digests(source, self.database, self.collection).items()
                if k in set(damaged.missing) | set(damaged.changed)
            },
            backups.digests(target, name, self.collection),
        )
        ctx.note(
            f"damage: {damaged.differs} documents of {self.collection} damaged in the incident "
            f"copy; {repaired.same} of them recovered as they were before the incident"
        )
        ctx.note(report.phases.line())
        rto, rpo = backups.recovery_measures(
            report, started, ctx.env.targets.get("database"), backups.consistency_point(report)
        )
        ctx.measure(rto)
        if rpo is not None:
            ctx.measure(rpo)
        return (
            f"{self.scenario} simulated and recovered: {repaired.same}/{damaged.differs} damaged "
            f"documents recovered; {lost} document(s) would be lost"
        )

    def undo(self, ctx: RunContext) -> str | None:
        return self.drop(ctx, "recovered")


@dataclass(frozen=True, kw_only=True)
class DropCopies(DataStep, kind="dr.sim_cleanup"):
    irreversible_reason = "it only removes the simulation's scratch copies"

    def describe(self) -> str:
        return "drop the incident copy and the recovered copy"

    def run(self, ctx: RunContext) -> str | None:
        return "; ".join(self.drop(ctx, what) for what in ("recovered", "incident"))


# The simulation holds the whole environment: a region failure moves everything, and a data
# scenario must not race a change to the data it compares with.
@runbook("dr.simulate", params=SimulateParams, lock="{environment}:*")
def dr_simulate(ctx: PlanContext, params: SimulateParams) -> PlanDraft:
    """The annual DR simulation: inject a failure in a non-production copy, recover, measure."""
    env = ctx.env
    if env.tier == "production" or params.environment == "production":
        raise Refused(
            f"dr.simulate never runs in production ({params.environment} is tier {env.tier}), "
            "with or without break-glass",
            hint="simulate in staging: dr.simulate --scenario SCENARIO --environment staging",
        )
    if params.scenario == "region-failure":
        return _region_failure_plan(ctx, params)
    if env.mongodb is None or env.backup_bucket is None or env.restore is None:
        raise InvalidInput(
            f"{params.environment} needs mongodb, backup_bucket and restore (a scratch "
            "cluster) in environments.yaml to simulate a data incident"
        )
    infra = infrastructure(ctx)
    source = infra.data(params.environment)
    target = infra.data(params.environment, restore_target=True)
    protected = set(source.hosts())
    for name in ctx.config.environment_names():
        other = ctx.config.environment(name)
        if other.tier == "production" and other.mongodb is not None:
            protected |= infra.data(name).hosts()
    if target.hosts() & protected:
        raise Refused(
            f"the restore target of {params.environment} is a live cluster "
            f"({', '.join(sorted(target.hosts() & protected))}): the simulation writes only to "
            "a scratch cluster"
        )
    database = env.mongodb.database
    names = [n for n in source.collection_names(database) if not n.startswith("system.")]
    if not names:
        raise Refused(f"{params.environment} database {database} has no collections to damage")
    collection = params.collection or max(names, key=lambda n: (source.count(database, n), n))
    if collection not in names:
        raise InvalidInput(
            f"{params.environment} database {database} has no collection {collection!r}",
            hint=f"one of: {', '.join(names)}",
        )
    found = backups.find_backups(infra.aws(env.primary_region), env.backup_bucket)
    backup = backups.pick_backup(found, "latest", now=ctx.clock.now(), seed="")
    prefix = env.restore.scratch_prefix
    environment = params.environment
    return PlanDraft(
        steps=[
            CopyLive(environment=environment, database=database, scratch_prefix=prefix),
            InjectFailure(
                environment=environment,
                database=database,
                scratch_prefix=prefix,
                scenario=params.scenario,
                collection=collection,
            ),
            RecoverFromBackup(
                environment=environment,
                database=database,
                scratch_prefix=prefix,
                scenario=params.scenario,
                collection=collection,
                bucket=env.backup_bucket,
                prefix=backup.prefix,
            ),
            DropCopies(environment=environment, database=database, scratch_prefix=prefix),
        ],
        summary=f"DR simulation in {params.environment}: {params.scenario} of {collection}, "
        f"recovered from {backup.name}",
        notes=[
            f"backup to recover from (the latest): {backup.describe()}",
            "the live database is only read; every write goes to scratch copies on the "
            "restore target, dropped at the end (and on failure or cancel)",
        ],
    )


# --- dr.simulate --scenario region-failure -----------------------------------------------------


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


def _region_failure_plan(ctx: PlanContext, params: SimulateParams) -> PlanDraft:
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
    _zone, record, weights = _dns(ctx)
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
    failover = _move_plan(ctx, survivor, accept_data_loss=False, what="failover")
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


@readiness_check("dr.failover", "the standby region can take the traffic")
def standby_ready(ctx: PlanContext) -> Iterator[Observation]:
    """For an environment in two or more regions behind weighted DNS: the weighted records
    exist for every region; each region's node group exists and the standby's can grow to the
    capacity the active region runs; each service runs the same images in every region; the
    standby's ``/health`` answers 200 and its error rate is below the rollback trigger (what a
    failover's preflight and verification demand); the database's replication lag to each
    standby is within its RPO target."""
    env = ctx.env
    if len(env.regions) < 2 or env.route53 is None:
        return
    infra = infrastructure(ctx)
    r53 = env.route53

    seen: dict[str, int] = {}

    def records() -> tuple[bool, str]:
        weights = infra.aws(env.primary_region).traffic_weights(r53.zone, r53.traffic_record)
        seen.update(weights)
        missing = [r for r in env.regions if r not in weights]
        if missing:
            return False, f"no weighted record for {', '.join(missing)} in {r53.traffic_record}"
        return True, ", ".join(f"{r} {w}" for r, w in sorted(weights.items()))

    yield observe(f"DNS {r53.traffic_record}", records)
    desired = {}
    for region, group_name in sorted(env.autoscaling_groups.items()):

        def group(region: str = region, group_name: str = group_name) -> tuple[bool, str]:
            state = infra.aws(region).node_group(group_name)
            desired[region] = state.desired
            return True, f"{state.in_service}/{state.desired} in service, max {state.maximum}"

        yield observe(f"node group {group_name}", group)
    if desired:
        need = max(desired.values())
        for region, group_name in sorted(env.autoscaling_groups.items()):

            def room(region: str = region, group_name: str = group_name) -> tuple[bool, str]:
                maximum = infra.aws(region).node_group(group_name).maximum
                if maximum < need:
                    return False, (
                        f"can grow to {maximum} nodes, but a failover needs {need} (what the "
                        "busiest region runs): raise its maximum"
                    )
                return True, f"can grow to {maximum} (a failover needs {need})"

            if region in desired:
                yield observe(f"node group {group_name} capacity", room)
    for name, service in sorted(env.services.items()):
        regions = [r for r in env.regions if r in env.kube_contexts]
        if len(regions) < 2:
            continue

        def same_images(
            service: ServiceConfig = service, regions: list[str] = regions
        ) -> tuple[bool, str]:
            images = {
                region: kube_for(ctx, ctx.environment, region)
                .deployment(service.namespace, service.deployment)
                .image_text()
                for region in regions
            }
            shown = "; ".join(f"{r} {i}" for r, i in images.items())
            return len(set(images.values())) == 1, shown

        yield observe(f"{name} images", same_images)
    serving = active_region(seen) if seen else None  # unread: the DNS finding says why
    for region in env.regions:
        if region == (serving or env.primary_region):
            continue  # the standby is what a failover moves to: it must answer now
        url = health_url(env, region)
        if url is not None:

            def answers(url: str = url) -> tuple[bool, str]:
                status = _get_status(ctx, url)
                return status == 200, f"{url} answered {status}"

            yield observe(f"{region} /health", answers)
        query = error_rate_query(env, ctx.environment, region)
        if query is not None:

            def errors(query: str = query) -> tuple[bool, str]:
                rate = read_error_rate(ctx, ctx.environment, query)
                limit = env.rollback_triggers.error_rate
                if rate is None:
                    return True, "no samples (no traffic to count errors of)"
                if rate > limit:
                    return False, (
                        f"{_percent(rate)}, above the rollback trigger of {_percent(limit)}: a "
                        "failover's verification would fail"
                    )
                return True, f"{_percent(rate)} (trigger {_percent(limit)})"

            yield observe(f"{region} error rate", errors)
    target = env.targets.get("database")
    if env.mongodb is not None and target is not None:

        def lag() -> tuple[bool, str]:
            topology = infra.database(ctx.environment).topology()
            standbys = [r for r in env.regions if r != topology.primary_region]
            worst = [(r, topology.lag(r)) for r in standbys]
            unread = [r for r, value in worst if value is None]
            if unread:
                return False, f"no readable member in {', '.join(unread)}"
            over = [(r, v) for r, v in worst if v is not None and v > target.rpo]
            shown = ", ".join(f"{r} {format_duration(v or 0)}" for r, v in worst)
            if over:
                return False, f"lag {shown}: above the RPO target {format_duration(target.rpo)}"
            return True, f"lag {shown} (RPO target {format_duration(target.rpo)})"

        yield observe("database replication", lag)


@readiness_check("dr.failover", "the Atlas cluster's regions")
def atlas_regions(ctx: PlanContext) -> Iterator[Observation]:
    """For an Atlas database of an environment in two or more regions: the cluster (as its
    Admin API configures it) has electable nodes in every region of the environment, so a
    failover can move the primary there (``dr.failover`` raises that region's priority; a
    region with only read-only nodes, or none, never leads). Reading it also proves the
    Admin API keys a failover needs still work."""
    env = ctx.env
    mongo = env.mongodb
    if mongo is None or mongo.kind != "atlas" or len(env.regions) < 2:
        return

    def look() -> tuple[bool, str]:
        configured = {
            r.tag: r for r in infrastructure(ctx).database(ctx.environment).atlas_regions()
        }
        shown = "; ".join(
            f"{r.tag} {r.electable} electable"
            + (f" + {r.read_only} read-only" if r.read_only else "")
            + f" (priority {r.priority})"
            for r in configured.values()
        )
        problems = []
        for region in env.regions:
            tag = mongo.region_tags.get(region)
            if tag is None:
                problems.append(f"{region} has no region tag (mongodb.region_tags)")
                continue
            found = configured.get(tag)
            if found is None:
                problems.append(f"{region} ({tag}) is not one of the cluster's regions")
            elif found.electable < 1 or found.priority < 1:
                problems.append(f"{region} ({tag}) has no electable node")
        if problems:
            return False, (
                f"{'; '.join(problems)}: a failover could not move the primary there "
                f"(the cluster: {shown or 'no regions'})"
            )
        return True, shown

    yield observe(f"Atlas cluster {mongo.atlas_cluster}", look)


@readiness_check("dr.failover", "the predicted RTO is within the target")
def predicted_rto(ctx: PlanContext) -> Iterator[Observation]:
    """A failover from the serving region to the other, predicted from live settings (DNS
    TTL, Route53 health checks, the standby's capacity): "if you replicate continuously but
    your DNS TTL is an hour, your RTO is an hour"."""
    env = ctx.env
    if len(env.regions) < 2 or env.route53 is None:
        return
    r53 = env.route53

    def look() -> tuple[bool, str]:
        weights = (
            infrastructure(ctx)
            .aws(env.primary_region)
            .traffic_weights(r53.zone, r53.traffic_record)
        )
        source = active_region(weights) or env.primary_region
        target = next(r for r in env.regions if r != source)
        prediction = predict_rto(ctx, source, target)
        words = prediction.words()
        return prediction.met, words if prediction.met else f"{words}: above the target"

    yield observe("failover RTO", look)
