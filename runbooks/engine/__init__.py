"""The engine every front end shares: registry, plans, executions, approvals, audit, store.

Nothing here imports a front end or a vendor SDK (see .importlinter). The names below are
the surface front ends use; they load on first use, so importing one engine module (as
``invoke --list`` does) does not import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbooks.engine.background.leases import LeaderLease
    from runbooks.engine.background.supervisor import Supervisor
    from runbooks.engine.engine import Engine, Prepared
    from runbooks.engine.errors import InvalidInput, Refused, RunbookError
    from runbooks.engine.lifecycle.journal import clean_reason
    from runbooks.engine.lifecycle.requests import Outcome, Request, RequestResult
    from runbooks.engine.models import Actor, Execution, State

_WHERE = {
    "Engine": "engine",
    "Prepared": "engine",
    "Request": "lifecycle.requests",
    "RequestResult": "lifecycle.requests",
    "Outcome": "lifecycle.requests",
    "Supervisor": "background.supervisor",
    "LeaderLease": "background.leases",
    "Actor": "models",
    "Execution": "models",
    "State": "models",
    "RunbookError": "errors",
    "Refused": "errors",
    "InvalidInput": "errors",
    "clean_reason": "lifecycle.journal",
}
__all__ = [
    "Actor",
    "Engine",
    "Execution",
    "InvalidInput",
    "LeaderLease",
    "Outcome",
    "Prepared",
    "Refused",
    "Request",
    "RequestResult",
    "RunbookError",
    "State",
    "Supervisor",
    "clean_reason",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'runbooks.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(f"runbooks.engine.{_WHERE[name]}"), name)
