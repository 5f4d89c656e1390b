"""``/metrics``' ``runbook_bot_executions_total`` is a counter of transitions: through a
sequence of requests, approvals, a denial, runs and a compensation it never goes down, and it
ends equal to the transitions the audit log recorded (the oracle: another record of the same
events). The states executions are in now are a gauge with another name. ``promtool check
metrics`` (Prometheus's own linter) accepts the body."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import live_engine
from tests.support.monitoring import need
from tests.support.people import ALICE, BOB

Series = tuple[str, str, str]


@pytest.fixture
def engine(
    kube: KubeSandbox, health: object, sandbox_config: Config, tmp_path: Path
) -> Iterator[Engine]:
    with live_engine(sandbox_config, tmp_path, kubeconfig=str(kube.kubeconfig)) as engine:
        yield engine


def families(body: str) -> dict[str, dict[Series, float]]:
    out: dict[str, dict[Series, float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            key = (
                sample.labels.get("runbook", ""),
                sample.labels.get("environment", ""),
                sample.labels.get("state", ""),
            )
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def audited(engine: Engine) -> Counter[Series]:
    """Transitions as the audit log recorded them: each request enters awaiting_approval,
    each ``execution.<state>`` record enters that state."""
    seen: Counter[Series] = Counter()
    for record in engine.audit.export():
        target = record.get("target") or {}
        if record["action"] == "request":
            seen[target["runbook"], target["environment"], "awaiting_approval"] += 1
        elif record["action"].startswith("execution.") and "then" not in record["detail"]:
            # (a failure that goes on to compensate is recorded, but its state is compensating)
            seen[target["runbook"], target["environment"], record["action"].split(".", 1)[1]] += 1
    return seen


def request(engine: Engine, runbook: str, **params: object) -> Execution:
    return engine.submit(engine.prepare(runbook, params, actor=ALICE), actor=ALICE)


def test_the_executions_counter_counts_transitions_and_never_goes_down(engine: Engine) -> None:
    metrics = Metrics(engine)
    scrapes: list[dict[str, dict[Series, float]]] = []

    def scrape() -> None:
        scrapes.append(families(metrics.render().decode()))

    scrape()
    rollback = request(engine, "rollback", environment="production")  # waits for approval
    scrape()
    other = request(engine, "rollback", environment="staging")  # waits too
    scrape()
    engine.approve(rollback.id, actor=BOB, plan_hash=rollback.plan.hash)
    scrape()
    engine.deny(other.id, actor=BOB, reason="not now")
    scrape()
    assert engine.start(rollback.id, actor=ALICE).state == State.SUCCEEDED
    scrape()
    failing = request(engine, "selftest", environment="development", fail_at=2)
    assert engine.start(failing.id, actor=ALICE).state == State.COMPENSATED
    scrape()

    # Never down, series by series, scrape after scrape.
    for before, after in pairwise(scrapes):
        counters_before = before.get("runbook_bot_executions_total", {})
        counters_after = after.get("runbook_bot_executions_total", {})
        for series, value in counters_before.items():
            assert counters_after.get(series, 0) >= value, (series, value, counters_after)
    final = scrapes[-1]["runbook_bot_executions_total"]
    assert final == {series: float(n) for series, n in audited(engine).items()}
    assert final["rollback", "production", "awaiting_approval"] == 1
    assert final["rollback", "production", "succeeded"] == 1
    assert final["rollback", "staging", "denied"] == 1
    assert final["selftest", "development", "compensated"] == 1
    # The states now: a gauge with another name (nothing waits any more).
    now = scrapes[-1]["runbook_bot_executions_in_state"]
    assert now == {
        ("rollback", "production", "succeeded"): 1,
        ("rollback", "staging", "denied"): 1,
        ("selftest", "development", "compensated"): 1,
    }
    assert scrapes[2]["runbook_bot_pending_approvals"] == {
        ("rollback", "production", ""): 1,
        ("rollback", "staging", ""): 1,
    }


def test_promtool_accepts_the_metrics(engine: Engine) -> None:
    promtool = need("promtool")["promtool"]
    request(engine, "rollback", environment="production")
    body = Metrics(engine).render()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.dumps(checked.stdout.decode()) == '""', checked.stdout  # no lint warnings
