"""The rollback's Prometheus gate: after the rollout, the spec's trigger signals (error rate,
p95, failing health checks) must stay below their triggers for the settle time (3 s here),
read against the sandbox's Prometheus emulator, which can also time out or fail (the real
server: test_gate_real_prometheus.py). No data, NaN or an error is never healthy, and a failed
gate keeps the rollback: it never rolls forward to the release it rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from runbooks.engine.config.environments import EnvironmentConfig, RollbackGate
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State
from tests.conftest import KubeSandbox
from tests.support.gate import REGIONS, assert_kept, gate_engine
from tests.support.kube_runs import run


@pytest.fixture
def kube_engine(
    kube: KubeSandbox, health: object, sandbox_config: Config, tmp_path: Path
) -> Iterator[Engine]:
    """Production's rollback gate settling 3 s (first sample after 1 s), failing when a
    signal cannot be read."""
    with gate_engine(
        kube, sandbox_config, tmp_path, RollbackGate(settle=3.0, interval=1.0, min_window=1.0)
    ) as e:
        yield e


def rollback(engine: Engine) -> Execution:
    return run(engine, "rollback", environment="production")


def test_healthy_signals_for_the_settle_time_pass(kube, kube_engine, health) -> None:
    done = rollback(kube_engine)
    assert done.state == State.SUCCEEDED, done.error
    watch = done.steps[-1]
    assert watch.description.startswith("watch api in production (us-east-1, us-west-2)")
    assert "no data is not healthy" in watch.description
    text = " ".join(watch.output)
    for region in REGIONS:
        assert f"{region}: healthy for 3.0s (3 samples)" in text
    assert "error rate at most 0.20 % (trigger 5 %)" in text
    assert "p95 response time at most 180 ms (trigger 1000 ms)" in text
    assert "failing health checks: longest failing run 0 sample(s) (trigger 3 in a row)" in text
    # Every signal read per region and sample, for this service.
    queries = health.queries
    for metric in ("http_requests_total", "http_request_duration_seconds", "probe_success"):
        for region in REGIONS:
            ours = [q for q in queries if metric in q and f'region="{region}"' in q]
            assert len(ours) == 3, (metric, region, ours)
            assert all('service="api"' in q for q in ours)


NO_DATA = [
    ("latency_p95", "us-west-2", None, "no data for p95 response time in us-west-2"),
    ("error_rate", "us-east-1", float("nan"), "no data for error rate in us-east-1"),
    ("health_failures", "us-west-2", None, "no data for failing health checks in us-west-2"),
]


@pytest.mark.parametrize("case", NO_DATA, ids=[c[0] for c in NO_DATA])
def test_no_data_or_nan_is_never_healthy_and_keeps_the_rollback(
    kube, kube_engine, health, case
) -> None:
    signal, region, value, says = case
    health.set_signal(signal, region, value)
    done = rollback(kube_engine)
    assert_kept(done, kube, kube_engine)
    assert "unverified: " + says in (done.steps[-1].error or "")


def test_prometheus_down_is_unverified(kube, kube_engine, health) -> None:
    health.set_up(False)
    done = rollback(kube_engine)
    assert_kept(done, kube, kube_engine)
    error = done.steps[-1].error or ""
    assert "unverified: error rate in us-east-1 could not be read" in error
    assert "503" in error


def test_a_signal_above_its_trigger_fails_naming_it(kube, kube_engine, health) -> None:
    health.set_signal("latency_p95", "us-east-1", 1.4)
    done = rollback(kube_engine)
    assert_kept(done, kube, kube_engine)
    error = done.steps[-1].error or ""
    assert "us-east-1: p95 response time 1400 ms" in error
    assert "at or above the trigger 1000 ms" in error


def test_health_checks_fail_the_gate_after_three_in_a_row(kube, kube_engine, health) -> None:
    health.set_signal("health_failures", "us-west-2", 1.0)
    done = rollback(kube_engine)
    assert_kept(done, kube, kube_engine)
    assert "us-west-2: health checks of api failing in 3 samples in a row" in (
        done.steps[-1].error or ""
    )


def test_the_plan_shows_the_gate_and_the_dry_run_reads_no_signal(kube, kube_engine, health) -> None:
    from tests.support.people import ALICE

    prepared = kube_engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    plan = kube_engine.dry_run(prepared, actor=ALICE)
    watch = plan.steps[-1]
    assert watch["kind"] == "rollback.watch_signals"
    assert watch["reversible"] is False
    assert watch["irreversible_reason"] == "a check: it changes nothing"
    assert not health.queries


def test_a_gate_needs_prometheus() -> None:
    with pytest.raises(ValidationError, match="rollback_gate needs prometheus"):
        EnvironmentConfig.model_validate(
            {
                "tier": "staging",
                "regions": ["us-east-1"],
                "primary_region": "us-east-1",
                "rollback_gate": {"settle": "2m"},
            }
        )
    with pytest.raises(ValidationError, match="interval 5m must be above 0 and at most settle 2m"):
        EnvironmentConfig.model_validate(
            {
                "tier": "staging",
                "regions": ["us-east-1"],
                "primary_region": "us-east-1",
                "prometheus": {"url": "http://127.0.0.1:9"},
                "rollback_gate": {"settle": "2m", "interval": "5m"},
            }
        )
