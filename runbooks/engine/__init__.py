"""The engine every front end shares: registry, plans, executions, approvals, audit, store.

This module is the engine's public face. The front ends (``bot``, ``runbook_cli``) and the
sandbox import the engine only from here, and from ``runbooks.engine.models``, ``.errors``,
``.clock`` and ``.wiring``; an import-linter contract (``.importlinter``) fails on any other
engine module, so the rooms behind the face can move without touching a front end.

Nothing here imports a front end or a vendor SDK (see .importlinter). The names below load on
first use, so importing one engine module (as ``invoke --list`` does) does not import them all.
A name on the face never equals a submodule's (``redact`` is ``redact_value`` here): importing
``runbooks.engine.redact`` sets the package attribute ``redact`` to the module, which would
shadow a function of that name (tests/engine/test_face.py checks it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbooks.engine.audit import AuditLog, parse_head
    from runbooks.engine.background.leases import LeaderLease
    from runbooks.engine.background.outbox import FollowerThread, OutboxFollower, QueuedConsumer
    from runbooks.engine.background.readiness_watch import (
        ReadinessNotices,
        ReadinessWatch,
        WatchStatus,
    )
    from runbooks.engine.background.supervisor import Supervisor
    from runbooks.engine.config.loader import Config, load_config
    from runbooks.engine.engine import Engine, Prepared
    from runbooks.engine.errors import InvalidInput, Refused, RunbookError
    from runbooks.engine.incidents import Incidents, pagerduty_services
    from runbooks.engine.lifecycle.journal import clean_reason
    from runbooks.engine.lifecycle.requests import Outcome, Request, RequestResult
    from runbooks.engine.logs import configure_logging
    from runbooks.engine.models import Actor, Execution, State
    from runbooks.engine.params import flag
    from runbooks.engine.plan import Measure, Plan, with_run_id
    from runbooks.engine.policy import require_break_glass_context, terminal_actor
    from runbooks.engine.readiness import ReadinessReport
    from runbooks.engine.redact import redact as redact_value
    from runbooks.engine.redact import redact_text
    from runbooks.engine.registry import Registry, RunbookSpec
    from runbooks.engine.requesters import drill_evidence
    from runbooks.engine.requesters.alerts import (
        ALERTMANAGER,
        Alert,
        AlertBatch,
        AlertIntake,
        AlertRequests,
        require_valid_routes,
    )
    from runbooks.engine.requesters.drill_evidence import DrillEvidence, DrillRun, ReportScope
    from runbooks.engine.requesters.drills import DrillScheduler, require_valid_drills
    from runbooks.engine.secrets import resolve_environment
    from runbooks.engine.settings import (
        DEFAULT_PORT,
        Settings,
        bot_port,
        load_settings,
        read_sandbox_env,
    )
    from runbooks.engine.store import open_store
    from runbooks.engine.verdicts import FAILED as FAILED_VERDICT
    from runbooks.engine.verdicts import execution_verdict, findings_verdict
    from runbooks.engine.workers import Worker, Workers

# name on the face -> "module" (below runbooks.engine) or "module:attribute" when they differ
_WHERE = {
    # the engine and its one request path
    "Engine": "engine",
    "Prepared": "engine",
    "Request": "lifecycle.requests",
    "RequestResult": "lifecycle.requests",
    "Outcome": "lifecycle.requests",
    "clean_reason": "lifecycle.journal",
    "Actor": "models",
    "Execution": "models",
    "State": "models",
    "RunbookError": "errors",
    "Refused": "errors",
    "InvalidInput": "errors",
    # building one: settings, configuration, store, secrets, logging
    "DEFAULT_PORT": "settings",
    "Settings": "settings",
    "bot_port": "settings",
    "load_settings": "settings",
    "read_sandbox_env": "settings",
    "Config": "config.loader",
    "load_config": "config.loader",
    "open_store": "store",
    "resolve_environment": "secrets",
    "configure_logging": "logs",
    # runbooks, plans and what the front ends render
    "Registry": "registry",
    "RunbookSpec": "registry",
    "flag": "params",
    "Plan": "plan",
    "Measure": "plan",
    "with_run_id": "plan",
    "ReadinessReport": "readiness",
    "execution_verdict": "verdicts",
    "findings_verdict": "verdicts",
    "FAILED_VERDICT": "verdicts:FAILED",
    # who is asking, what is kept and what leaves
    "terminal_actor": "policy",
    "require_break_glass_context": "policy",
    "AuditLog": "audit",
    "parse_head": "audit",
    "redact_text": "redact",
    "redact_value": "redact:redact",
    # requesters: drills, alerts, incidents
    "DrillScheduler": "requesters.drills",
    "require_valid_drills": "requesters.drills",
    "DrillEvidence": "requesters.drill_evidence",
    "DrillRun": "requesters.drill_evidence",
    "ReportScope": "requesters.drill_evidence",
    "ALERTMANAGER": "requesters.alerts",
    "Alert": "requesters.alerts",
    "AlertBatch": "requesters.alerts",
    "AlertIntake": "requesters.alerts",
    "AlertRequests": "requesters.alerts",
    "require_valid_routes": "requesters.alerts",
    "Incidents": "incidents",
    "pagerduty_services": "incidents",
    # background work: leases, the supervisor, outbox followers, the readiness watch
    "LeaderLease": "background.leases",
    "Supervisor": "background.supervisor",
    "FollowerThread": "background.outbox",
    "OutboxFollower": "background.outbox",
    "QueuedConsumer": "background.outbox",
    "ReadinessNotices": "background.readiness_watch",
    "ReadinessWatch": "background.readiness_watch",
    "WatchStatus": "background.readiness_watch",
    "Worker": "workers",
    "Workers": "workers",
}
# modules on the face, used as namespaces
_MODULES = {"drill_evidence": "requesters.drill_evidence"}
__all__ = [
    "ALERTMANAGER",
    "DEFAULT_PORT",
    "FAILED_VERDICT",
    "Actor",
    "Alert",
    "AlertBatch",
    "AlertIntake",
    "AlertRequests",
    "AuditLog",
    "Config",
    "DrillEvidence",
    "DrillRun",
    "DrillScheduler",
    "Engine",
    "Execution",
    "FollowerThread",
    "Incidents",
    "InvalidInput",
    "LeaderLease",
    "Measure",
    "OutboxFollower",
    "Outcome",
    "Plan",
    "Prepared",
    "QueuedConsumer",
    "ReadinessNotices",
    "ReadinessReport",
    "ReadinessWatch",
    "Refused",
    "Registry",
    "ReportScope",
    "Request",
    "RequestResult",
    "RunbookError",
    "RunbookSpec",
    "Settings",
    "State",
    "Supervisor",
    "WatchStatus",
    "Worker",
    "Workers",
    "bot_port",
    "clean_reason",
    "configure_logging",
    "drill_evidence",
    "execution_verdict",
    "findings_verdict",
    "flag",
    "load_config",
    "load_settings",
    "open_store",
    "pagerduty_services",
    "parse_head",
    "read_sandbox_env",
    "redact_text",
    "redact_value",
    "require_break_glass_context",
    "require_valid_drills",
    "require_valid_routes",
    "resolve_environment",
    "terminal_actor",
    "with_run_id",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f"runbooks.engine.{_MODULES[name]}")
    if name not in _WHERE:
        raise AttributeError(f"module 'runbooks.engine' has no attribute {name!r}")
    module, _, attribute = _WHERE[name].partition(":")
    return getattr(importlib.import_module(f"runbooks.engine.{module}"), attribute or name)
