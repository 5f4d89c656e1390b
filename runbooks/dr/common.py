"""What the DR runbooks and ``dr.failover``'s readiness checks share: a region's ``/health``
URL and error-rate query, and reading them.
"""

from __future__ import annotations

from runbooks.engine.config.environments import EnvironmentConfig
from runbooks.engine.plan import PlanContext, RunContext
from runbooks.interfaces import expand_vars, infrastructure


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


def percent(rate: float) -> str:
    return f"{rate * 100:.2f} %".replace(".00 %", " %")


def read_error_rate(ctx: RunContext | PlanContext, environment: str, query: str) -> float | None:
    """The region's error rate (0..1) from Prometheus; None when it has no samples."""
    return infrastructure(ctx).metrics(environment).query(query)


def get_status(ctx: RunContext | PlanContext, url: str) -> int | str:
    return infrastructure(ctx).health().status(url)
