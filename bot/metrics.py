"""``/metrics`` for Prometheus.

Execution transitions (a counter the engine keeps in the store), current states, durations
and pending approvals are read from the store at scrape time, so every bot replica reports
the same numbers and a restart does not reset them. Slack ack latency
and webhook answer times are measured in this process around ``/slack/events`` and
``/webhooks/*``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from runbooks.engine import Engine
from runbooks.engine.models import State

DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0)
SCRAPE_LIMIT = 5000  # executions read per scrape (newest first)


class StoreCollector(Collector):
    """The store's facts at scrape time, read through the engine's read verbs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        # A counter: how many times an execution entered each state, kept in the store.
        total = CounterMetricFamily(
            "runbook_bot_executions",
            "Execution transitions: how many times an execution entered each state",
            labels=["runbook", "environment", "state"],
        )
        for (runbook, environment, state), count in sorted(self.engine.transition_counts().items()):
            total.add_metric([runbook, environment, state], count)
        yield total
        executions = self.engine.list(limit=SCRAPE_LIMIT)
        by_state = Counter((e.runbook, e.environment, str(e.state)) for e in executions)
        current = GaugeMetricFamily(
            "runbook_bot_executions_in_state",
            f"Executions in each state now (of the newest {SCRAPE_LIMIT})",
            labels=["runbook", "environment", "state"],
        )
        for (runbook, environment, state), count in sorted(by_state.items()):
            current.add_metric([runbook, environment, state], count)
        yield current
        pending = GaugeMetricFamily(
            "runbook_bot_pending_approvals",
            "Executions waiting for approval",
            labels=["runbook", "environment"],
        )
        waiting = Counter(
            (e.runbook, e.environment) for e in executions if e.state == State.AWAITING_APPROVAL
        )
        for (runbook, environment), count in sorted(waiting.items()):
            pending.add_metric([runbook, environment], count)
        yield pending
        durations: dict[str, list[float]] = {}
        for e in executions:
            if e.terminal and e.started_at and e.ended_at:
                durations.setdefault(e.runbook, []).append(e.ended_at - e.started_at)
        histogram = HistogramMetricFamily(
            "runbook_bot_execution_duration_seconds",
            "Wall time from first step to outcome, by runbook",
            labels=["runbook"],
        )
        for runbook, values in sorted(durations.items()):
            buckets = [
                (str(bound), float(sum(1 for v in values if v <= bound)))
                for bound in DURATION_BUCKETS
            ]
            buckets.append(("+Inf", float(len(values))))
            histogram.add_metric([runbook], buckets, sum_value=sum(values))
        yield histogram
        yield from self._readiness()

    def _readiness(self) -> Iterator[Metric]:
        """Open readiness findings (``runbooks.engine.background.readiness_watch``) and when the
        leader last evaluated: its age is ``time() - runbook_bot_readiness_last_evaluation_...``."""
        findings = GaugeMetricFamily(
            "runbook_bot_readiness_findings",
            "Open readiness findings: a runbook's precondition that does not hold now",
            labels=["environment", "runbook", "check"],
        )
        status = self.engine.readiness_status()
        open_now = Counter(
            (str(f["environment"]), str(f["runbook"]), str(f["check"]))
            for f in status.open.values()
        )
        for (environment, runbook, check), count in sorted(open_now.items()):
            findings.add_metric([environment, runbook, check], count)
        yield findings
        if status.last_evaluated_at is not None:
            last = GaugeMetricFamily(
                "runbook_bot_readiness_last_evaluation_timestamp_seconds",
                "When the leader last evaluated every runbook's readiness (Unix time)",
            )
            last.add_metric([], status.last_evaluated_at)
            yield last


class Metrics:
    """One registry per bot (tests run several bots in one process)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(engine))
        self.slack_ack = Histogram(
            "runbook_bot_slack_ack_seconds",
            "Time to answer a request on /slack/events (Slack's deadline is 3 s)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0),
            registry=self.registry,
        )

        self.webhook = Histogram(
            "runbook_bot_webhook_seconds",
            "Time to answer a webhook (Alertmanager, PagerDuty), refusals included",
            ["webhook"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
