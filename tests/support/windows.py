"""Maintenance windows for tests: an ad hoc window around now, a run approved by bob."""

from __future__ import annotations

import time
from typing import Any

from runbooks.engine.clock import iso
from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State
from tests.support.people import ALICE, BOB


def _window(seconds: float) -> str:
    """An ad hoc window that opened a minute ago and closes ``seconds`` from now."""
    start = time.time() - 60
    return f"{iso(start)}/{int(60 + seconds)}s"


def run_approved(engine: Engine, runbook: str, params: dict[str, Any]) -> Execution:
    """Request as alice, approve as bob when needed, start."""
    prepared = engine.prepare(runbook, params, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    if execution.state == State.AWAITING_APPROVAL:
        execution = engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)
