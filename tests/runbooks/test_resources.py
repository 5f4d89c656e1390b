"""``maintenance.resources`` against the Kubernetes emulator, with kubectl as the oracle."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput
from runbooks.engine.models import Execution, State
from tests.conftest import KubeSandbox
from tests.support.kube_runs import DEPLOY
from tests.support.people import ALICE
from tests.support.windows import _window, run_approved

SEEDED = {
    "limits": {"cpu": "2", "memory": "2Gi"},
    "requests": {"cpu": "500m", "memory": "512Mi"},
}


def _resources(kube: KubeSandbox) -> dict[str, Any]:
    got = kube.kubectl(
        "get",
        "deployment",
        "api-deployment",
        "-n",
        "staging",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].resources}",
    )
    assert got.returncode == 0, got.stderr
    answer: dict[str, Any] = json.loads(got.stdout)
    return answer


def _run(engine: Engine, params: dict[str, Any]) -> Execution:
    return run_approved(engine, "maintenance.resources", params)


def test_resources_change_rolls_out_inside_the_window(
    kube_engine: Engine, kube: KubeSandbox
) -> None:
    assert _resources(kube) == SEEDED
    params = {
        "environment": "staging",
        "service": "api",
        "cpu_limit": "3",
        "memory_limit": "3Gi",
        "window": _window(900),
    }
    prepared = kube_engine.prepare("maintenance.resources", params, actor=ALICE)
    [step] = prepared.plan.steps
    assert step["description"].startswith(
        "set api-deployment/api in staging (us-east-1): requests cpu 500m, memory 512Mi; "
        "limits cpu 2, memory 2Gi → requests cpu 500m, memory 512Mi; limits cpu 3, "
        "memory 3Gi, and wait for the rollout, not starting after "
    )
    done = _run(kube_engine, params)
    assert done.state == State.SUCCEEDED, done.error
    assert _resources(kube) == {
        "limits": {"cpu": "3", "memory": "3Gi"},
        "requests": {"cpu": "500m", "memory": "512Mi"},
    }
    status = kube.kubectl("rollout", "status", "deployment/api-deployment", "-n", "staging")
    assert status.returncode == 0 and "successfully rolled out" in status.stdout
    history = kube.kubectl("rollout", "history", "deployment/api-deployment", "-n", "staging")
    assert "runbook-bot maintenance.resources: requests cpu 500m" in history.stdout
    again = kube_engine.prepare("maintenance.resources", params, actor=ALICE)
    assert again.plan.steps == [] and "already has" in again.plan.notes[-1]
    # Rolling this back changes no image: the plan says what it does change.
    back = kube_engine.prepare(
        "rollback", {"environment": "staging", "region": "us-east-1"}, actor=ALICE
    )
    assert back.plan.notes == [
        "us-east-1: besides images, the pod template changes: api: limits.cpu 3 → 2, "
        "limits.memory 3Gi → 2Gi"
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "nothing to change: give at least one of --cpu-request"),
        (
            {"memory_limit": "2GB"},
            "--memory-limit '2GB': not a Kubernetes quantity; expected e.g. 512Mi or 2Gi",
        ),
        ({"cpu_request": "fast"}, "--cpu-request 'fast': not a Kubernetes quantity"),
        ({"cpu_limit": "0"}, "--cpu-limit '0': must be more than 0"),
        (
            {"memory_request": "4Gi"},
            "api-deployment in us-east-1: memory request 4Gi would exceed its limit 2Gi",
        ),
        (
            {"cpu_limit": "1", "container": "sidecar"},
            "--container 'sidecar': api-deployment in us-east-1 has api",
        ),
        (
            {"service": "nope", "cpu_limit": "1"},
            "unknown service 'nope' in staging; known: api, web",
        ),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(
    kube_engine: Engine, kube: KubeSandbox, params: dict[str, Any], message: str
) -> None:
    before = kube.cluster().get(DEPLOY, "staging", "api-deployment")["spec"]
    with pytest.raises(InvalidInput) as caught:
        kube_engine.prepare(
            "maintenance.resources",
            {"environment": "staging", "service": "api", "window": _window(900), **params},
            actor=ALICE,
        )
    assert message in caught.value.message
    assert kube.cluster().get(DEPLOY, "staging", "api-deployment")["spec"] == before
    assert kube_engine.list() == []


def test_pods_that_crash_with_the_new_limits_are_rolled_back(
    kube_engine: Engine, kube: KubeSandbox
) -> None:
    # The default progress deadline (10 minutes) stays: the crash is seen and named at once.
    kube.hook("/_sandbox/oom", {"memory_limit_below": "1Gi"})  # the app needs 1Gi
    done = _run(
        kube_engine,
        {
            "environment": "staging",
            "service": "api",
            "memory_limit": "768Mi",
            "window": _window(900),
        },
    )
    assert done.state == State.COMPENSATED, done.error
    error = done.steps[0].error or ""
    assert "was OOMKilled (out of memory: its memory limit is too low)" in error, error
    assert "not waiting for the progress deadline" in error
    assert _resources(kube) == SEEDED
    status = kube.kubectl("rollout", "status", "deployment/api-deployment", "-n", "staging")
    assert status.returncode == 0 and "successfully rolled out" in status.stdout


def test_no_rollout_starts_when_the_window_is_about_to_close(
    kube_engine: Engine, kube: KubeSandbox
) -> None:
    done = _run(
        kube_engine,
        {"environment": "staging", "service": "api", "cpu_limit": "3", "window": _window(120)},
    )
    assert done.state in (State.FAILED, State.COMPENSATED)
    assert "less than 5m left for a rollout; not starting" in (done.error or "")
    assert _resources(kube) == SEEDED
