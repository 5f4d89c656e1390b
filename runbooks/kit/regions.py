"""Which region serves an environment now: where runbooks without ``--region`` act.

After a DR failover, DNS sends the environment's traffic to another region than the
configured primary; scaling the primary then changes the passive side. The serving region is
read from the weighted DNS records (as ``dr.status`` reads them); only an environment without
a weighted record falls back to its configured primary.
"""

from __future__ import annotations

from dataclasses import dataclass

from runbooks.engine.plan import PlanContext
from runbooks.interfaces import InfrastructureError, infrastructure


@dataclass(frozen=True)
class Serving:
    region: str
    #: How it was decided, for the plan (stable text: plans are hashed).
    note: str


def active_region(weights: dict[str, int]) -> str | None:
    """The region carrying most traffic (None when all weights are 0)."""
    if not weights or max(weights.values()) == 0:
        return None
    return max(sorted(weights), key=lambda region: weights[region])


def serving_region(ctx: PlanContext, region: str | None = None) -> Serving:
    """The region to act in: ``region`` when given, else the one DNS sends traffic to."""
    env = ctx.env
    if region is not None:
        return Serving(region, f"region {region} (as requested)")
    r53 = env.route53
    if r53 is None:
        return Serving(
            env.primary_region,
            f"region {env.primary_region}: the configured primary ({ctx.environment} has no "
            "weighted DNS record to read the serving region from)",
        )
    try:
        weights = (
            infrastructure(ctx)
            .aws(env.primary_region)
            .traffic_weights(r53.zone, r53.traffic_record)
        )
    except InfrastructureError as exc:
        raise InfrastructureError(
            f"cannot tell which region serves {ctx.environment}: {exc.message}; "
            "name one with --region"
        ) from None
    active = active_region(weights)
    if active is None:
        raise InfrastructureError(
            f"no region carries traffic for {r53.traffic_record} (all weights 0); name one "
            "with --region"
        )
    split = ", ".join(f"{r} {w}" for r, w in sorted(weights.items()))
    how = (
        "the configured primary"
        if active == env.primary_region
        else (f"NOT the configured primary {env.primary_region}: traffic was failed over")
    )
    return Serving(active, f"region {active}: serving {ctx.environment} per DNS ({split}); {how}")
