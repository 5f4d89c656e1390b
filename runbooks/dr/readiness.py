"""``dr.failover``'s readiness checks: the standby region can take the traffic, the Atlas
cluster's regions, the predicted RTO.
"""

from __future__ import annotations

from collections.abc import Iterator

from runbooks.dr.common import error_rate_query, get_status, health_url, percent, read_error_rate
from runbooks.dr.failover import predict_rto
from runbooks.engine.clock import format_duration
from runbooks.engine.config.environments import ServiceConfig
from runbooks.engine.plan import PlanContext
from runbooks.engine.readiness import Observation, observe, readiness_check
from runbooks.interfaces import infrastructure
from runbooks.kit.kube import kube_for
from runbooks.kit.regions import active_region


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
                status = get_status(ctx, url)
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
                        f"{percent(rate)}, above the rollback trigger of {percent(limit)}: a "
                        "failover's verification would fail"
                    )
                return True, f"{percent(rate)} (trigger {percent(limit)})"

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
