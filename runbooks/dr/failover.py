"""``dr.failover`` (a full move to another region, or a partial test) and ``dr.failback``,
their steps, and the predicted RTO.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, ValidationInfo, field_validator

from runbooks.dr.common import error_rate_query, get_status, health_url, percent, read_error_rate
from runbooks.engine.clock import format_duration
from runbooks.engine.config.yaml_files import Seconds
from runbooks.engine.errors import InvalidInput, Refused, RunbookError
from runbooks.engine.params import RunbookParams
from runbooks.engine.plan import Measure, PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.registry import runbook
from runbooks.interfaces import DbTopology, InfrastructureError, infrastructure
from runbooks.kit.aws import SCALE_UP, AwsStep, SetNodeCapacity
from runbooks.kit.kube import ScaleDeployment, kube_for
from runbooks.kit.regions import active_region


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
            parts.append(f"error rate at most {percent(self.max_error_rate)}")
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
                status = get_status(ctx, self.url)
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
                        f"error rate in {self.region} is {percent(rate)}, above the rollback "
                        f"trigger of {percent(self.max_error_rate)}"
                    )
                ctx.note(
                    f"error rate in {self.region}: "
                    + (percent(rate) if rate is not None else "no samples yet")
                    + f" (limit {percent(self.max_error_rate)})"
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


def dns(ctx: PlanContext) -> tuple[str, str, dict[str, int]]:
    env = ctx.env
    if env.route53 is None:
        raise InvalidInput(f"{ctx.environment} has no route53 configured: nothing to fail over")
    r53 = env.route53
    weights = (
        infrastructure(ctx).aws(env.primary_region).traffic_weights(r53.zone, r53.traffic_record)
    )
    return r53.zone, r53.traffic_record, weights


def move_plan(ctx: PlanContext, target: str, *, accept_data_loss: bool, what: str) -> PlanDraft:
    """The steps that move an environment's traffic, compute and database to ``target``."""
    env = ctx.env
    infra = infrastructure(ctx)
    zone, record, weights = dns(ctx)
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
        status = get_status(ctx, url)
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
                    f"its error rate is {percent(rate)}, above the rollback trigger of "
                    f"{percent(limit)}"
                )
            elif rate is not None:
                notes.append(f"preflight: error rate in {target} {percent(rate)}")
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
        error = f"error rate (at most {percent(self.max_error_rate)})" if self.error_query else ""
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
                status = get_status(ctx, self.url)
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
                        f"is {percent(rate)} (limit {percent(self.max_error_rate)})"
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
    return move_plan(ctx, params.region, accept_data_loss=params.accept_data_loss, what="failover")


def _partial_plan(ctx: PlanContext, params: FailoverParams) -> PlanDraft:
    env = ctx.env
    assert params.partial is not None
    zone, record, weights = dns(ctx)
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
    return move_plan(ctx, ctx.env.primary_region, accept_data_loss=False, what="failback")
