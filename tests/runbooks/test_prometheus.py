"""The Prometheus adapter against the sandbox's query endpoint (real HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.adapters.prometheus import PrometheusAdapter
from runbooks.interfaces import InfrastructureError


def test_query_reads_the_value_or_none_without_samples(health: Any) -> None:
    prometheus = PrometheusAdapter("${RUNBOOK_BOT_SANDBOX_HEALTH}/")
    assert prometheus.url == health.url
    health.set_error_rate("us-east-1", 0.25)
    assert prometheus.query('sum(rate(x{region="us-east-1"}[5m]))') == 0.25
    assert prometheus.query('sum(rate(x{region="us-west-2"}[5m]))') == 0.002
    assert prometheus.query("sum(rate(x[5m]))") is None  # no samples


def test_query_errors_name_the_server_and_the_reason(health: Any) -> None:
    prometheus = PrometheusAdapter(health.url)
    with pytest.raises(InfrastructureError) as caught:
        prometheus.query('sum(rate(x{region="us-east-1"}[5m])')
    assert caught.value.message.startswith(f"Prometheus at {health.url} refused the query (400)")
    assert "parse error" in caught.value.message
    health.server.prometheus_up = False
    with pytest.raises(InfrastructureError) as caught:
        prometheus.query('x{region="us-east-1"}')
    assert caught.value.message == f"Prometheus at {health.url} refused the query (503): down"
    with pytest.raises(InfrastructureError) as caught:
        PrometheusAdapter("http://127.0.0.1:9").query("up")
    assert "did not answer" in caught.value.message
