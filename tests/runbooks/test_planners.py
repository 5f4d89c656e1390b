"""Planner edge cases against fakes at the adapter boundary (fast; no emulator).

Which region a runbook without ``--region`` acts on: the one DNS sends traffic to. Before
this, scaling after a DR failover planned against the passive configured primary.
"""

from __future__ import annotations

from typing import Any

import pytest

from runbooks.catalog import load_catalog
from runbooks.engine.engine import Engine
from runbooks.engine.lifecycle.requests import Request
from runbooks.engine.models import State
from runbooks.engine.plan import Plan
from runbooks.interfaces import HpaState, InfrastructureError
from tests.conftest import EngineFactory
from tests.fakes.infra import FakeInfrastructure, deployment, node_group
from tests.support.people import ALICE

ZONE, RECORD = "example.com.", "api-production.example.com."


@pytest.fixture
def infra() -> FakeInfrastructure:
    fake = FakeInfrastructure()
    for environment in ("production", "staging"):
        for region in ("us-east-1", "us-west-2"):
            kube = fake.kube(environment, region)
            kube.deployments[environment, "api-deployment"] = deployment(
                "api-deployment", environment, 3
            )
            kube.hpas[environment, "api-deployment"] = HpaState(
                "api-deployment", 2, 10, 3, 3, 70, None
            )
    fake.aws("us-east-1").groups["prod-api-use1"] = node_group("prod-api-use1", "us-east-1", 4)
    fake.aws("us-west-2").groups["prod-api-usw2"] = node_group("prod-api-usw2", "us-west-2", 2)
    fake.aws("us-east-1").weights[ZONE, RECORD] = {"us-east-1": 100, "us-west-2": 0}
    return fake


@pytest.fixture
def planner(make_engine: EngineFactory, infra: FakeInfrastructure) -> Engine:
    return make_engine(registry=load_catalog(), adapters_factory=lambda: infra)


def plan_of(engine: Engine, runbook: str, **params: str) -> Plan:
    return engine.prepare(runbook, params, actor=ALICE).plan


def failed_over(infra: FakeInfrastructure) -> None:
    infra.aws("us-east-1").weights[ZONE, RECORD] = {"us-east-1": 0, "us-west-2": 100}


def test_scaling_after_a_failover_acts_on_the_serving_region(
    planner: Engine, infra: FakeInfrastructure
) -> None:
    failed_over(infra)
    pods = plan_of(planner, "scale.pods", environment="production", service="api", replicas="6")
    assert [s["description"] for s in pods.steps] == [
        "scale deployment api-deployment in production (us-west-2): 3 → 6 replicas"
    ]
    assert pods.notes[0] == (
        "region us-west-2: serving production per DNS (us-east-1 0, us-west-2 100); NOT the "
        "configured primary us-east-1: traffic was failed over"
    )
    nodes = plan_of(planner, "scale.nodes", environment="production", desired="6")
    assert (
        nodes.steps[0]["args"]["group"] == "prod-api-usw2"
        and nodes.steps[0]["args"]["region"] == "us-west-2"
    )
    hpa = plan_of(planner, "scale.hpa", environment="production", service="api", min="4", max="12")
    assert hpa.steps[0]["args"]["region"] == "us-west-2"


def test_without_a_failover_the_serving_region_is_the_primary_and_the_plan_says_why(
    planner: Engine,
) -> None:
    pods = plan_of(planner, "scale.pods", environment="production", service="api", replicas="6")
    assert pods.steps[0]["args"]["region"] == "us-east-1"
    assert pods.notes[0].endswith("per DNS (us-east-1 100, us-west-2 0); the configured primary")


def test_an_explicit_region_wins_and_no_weighted_record_falls_back_to_the_primary(
    planner: Engine, infra: FakeInfrastructure
) -> None:
    failed_over(infra)
    pods = plan_of(
        planner,
        "scale.pods",
        environment="production",
        service="api",
        replicas="6",
        region="us-east-1",
    )
    assert pods.steps[0]["args"]["region"] == "us-east-1"
    assert pods.notes[0] == "region us-east-1 (as requested)"
    staging = plan_of(planner, "scale.pods", environment="staging", service="api", replicas="4")
    assert staging.steps[0]["args"]["region"] == "us-east-1"
    assert "has no weighted DNS record" in staging.notes[0]


def test_no_region_carrying_traffic_is_refused_rather_than_guessed(
    planner: Engine, infra: FakeInfrastructure
) -> None:
    infra.aws("us-east-1").weights[ZONE, RECORD] = {"us-east-1": 0, "us-west-2": 0}
    with pytest.raises(InfrastructureError, match=r"all weights 0\); name one with --region"):
        plan_of(planner, "scale.pods", environment="production", service="api", replicas="6")


def test_dr_locks_the_whole_environment_and_scaling_its_resources() -> None:
    registry = load_catalog()
    locks = {
        spec.name: spec.lock_keys(
            spec.params.model_construct(environment="production", service="api")
        )
        for spec in registry
        if not spec.read_only
    }
    assert locks["dr.failover"] == locks["dr.failback"] == ["production:*"]
    assert locks["scale.pods"] == locks["rollback"] == ["production:api"]
    assert locks["scale.nodes"] == locks["maintenance.resize"] == ["production:nodes"]


class _Down:
    """Every call fails as an unreachable system does."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __getattr__(self, name: str) -> Any:
        def call(*_args: Any, **_kwargs: Any) -> Any:
            raise InfrastructureError(f"{self.what} timed out after 5 s")

        return call


class DownInfrastructure(FakeInfrastructure):
    def __init__(self, *, up: FakeInfrastructure | None = None, down: set[str]) -> None:
        super().__init__()
        self.up, self.down = up, down

    def kube(self, environment: str, region: str) -> Any:
        if "kube" in self.down or self.up is None:
            return _Down(f"Kubernetes {region}")
        return self.up.kube(environment, region)

    def aws(self, region: str) -> Any:
        if "aws" in self.down or self.up is None:
            return _Down(f"AWS {region}")
        return self.up.aws(region)

    def database(self, environment: str) -> Any:
        return _Down("MongoDB")

    def metrics(self, environment: str) -> Any:
        return _Down("Prometheus")


def _report(engine: Engine, **params: Any) -> Any:
    result = engine.request(Request("dr.status", params, ALICE))
    assert result.execution is not None
    return result.execution


def test_a_status_report_that_read_nothing_fails(make_engine: EngineFactory) -> None:
    engine = make_engine(
        registry=load_catalog(),
        adapters_factory=lambda: DownInfrastructure(down={"kube", "aws"}),
    )
    done = _report(engine)
    assert done.state == State.FAILED
    assert "the report is not usable: could not read 10 of 10 components" in (done.error or "")
    assert "timed out after 5 s" in " ".join(done.plan.notes)


def test_a_partial_status_says_so_and_fails_only_when_strict(
    make_engine: EngineFactory, infra: FakeInfrastructure
) -> None:
    infra.aws("us-east-1").groups["prod-api-use1"] = node_group("prod-api-use1", "us-east-1", 4)
    engine = make_engine(
        registry=load_catalog(),
        adapters_factory=lambda: DownInfrastructure(up=infra, down=set()),
    )
    done = _report(engine)
    assert done.state == State.SUCCEEDED
    assert "(PARTIAL: cannot read " in done.plan.summary and "database (atlas)" in done.plan.summary
    strict = _report(engine, strict=True)
    assert strict.state == State.FAILED
    assert "could not read" in (strict.error or "")


def test_scale_hpa_says_the_other_region_drifts_and_offers_all_regions(planner: Engine) -> None:
    one = plan_of(planner, "scale.hpa", environment="production", service="api", min="4", max="12")
    assert [s["args"]["region"] for s in one.steps] == ["us-east-1"]
    assert one.notes[-1] == (
        "only us-east-1 changes; us-west-2 keeps its own bounds (regions drift apart before a "
        "failover): add --all-regions to change every region"
    )
    both = plan_of(
        planner,
        "scale.hpa",
        environment="production",
        service="api",
        min="4",
        max="12",
        all_regions="true",
    )
    assert [s["args"]["region"] for s in both.steps] == ["us-east-1", "us-west-2"]
    assert not any(n.startswith("only ") for n in both.notes)
