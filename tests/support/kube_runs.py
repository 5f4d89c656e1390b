"""Runbooks against the Kubernetes emulators: request, approve (bob), start; images, audit."""

from __future__ import annotations

from typing import Any

from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State
from sandbox.kube.emulator import BY_PATH
from tests.conftest import KubeSandbox
from tests.support.people import ALICE, BOB

DEPLOY = BY_PATH["apps", "v1", "deployments"]


def run(engine: Engine, name: str, **params: Any) -> Execution:
    """Request, approve where needed (bob), start: as a requester plus an approver would."""
    prepared = engine.prepare(name, params, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    if execution.state == State.AWAITING_APPROVAL:
        engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)


def image(
    kube: KubeSandbox, region: str, namespace: str = "production", name: str = "api-deployment"
) -> str:
    deploy = kube.cluster(region).get(DEPLOY, namespace, name)
    return str(deploy["spec"]["template"]["spec"]["containers"][0]["image"]).rsplit("/", 1)[-1]


def actions(engine: Engine, execution_id: str) -> list[str]:
    return [r["action"] for r in engine.audit.export() if r.get("execution_id") == execution_id]
