"""Build an engine from settings: the one place front ends get their engine from."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from runbooks.engine.audit import AuditLog, resolve_audit_key
from runbooks.engine.clock import Clock, SystemClock
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.engine import Engine
from runbooks.engine.lifecycle.requests import DrillRuns
from runbooks.engine.plan import Adapters
from runbooks.engine.registry import Registry
from runbooks.engine.secrets import Resolver, resolve_reference
from runbooks.engine.settings import Settings, load_settings, read_sandbox_env
from runbooks.engine.store import Store, open_store


@dataclass
class Runtime:
    settings: Settings
    config: Config
    store: Store
    engine: Engine

    def banner(self, environment: str) -> str:
        """``PRODUCTION · config ... · state ...``, shown above every plan: the environment
        the plan acts on, by its own name, and its tier beside it where the names differ
        (``REHEARSAL (staging tier) · …``); the tier picks the colour."""
        return (
            f"{environment_label(self.config, environment)} · config {self.config.describe()} · "
            f"state {self.settings.state_description}"
        )

    def close(self) -> None:
        self.engine.close()
        self.store.close()


def environment_label(config: Config, environment: str) -> str:
    """``PRODUCTION``, or ``REHEARSAL (staging tier)`` where the tier has another name: never
    a tier's name alone, which reads as another environment (``STAGING`` for rehearsal)."""
    tier = config.environment(environment).tier
    label = environment.upper()
    return label if tier == environment else f"{label} ({tier} tier)"


def open_runtime(
    settings: Settings | None = None,
    *,
    registry: Registry,
    clock: Clock | None = None,
    adapters: Callable[[Config], Adapters] | None = None,
    secrets: Resolver | None = None,
) -> Runtime:
    """Load configuration, open the store, resolve the audit key and build the engine.

    ``registry`` is the front end's (``runbooks.catalog.load_catalog()``): the engine names no
    runbook module.

    ``secrets`` resolves an ``aws-secretsmanager:`` reference in ``RUNBOOK_BOT_AUDIT_KEY`` (the
    front ends pass the Secrets Manager adapter); without it a reference is an error. Other
    variables are resolved where they are read (adapters) or by the bot at start.
    """
    settings = settings or load_settings()
    config = load_config(settings.config_dir, schedules=settings.schedules_path)
    if config.is_sandbox:
        # The sandbox's emulators announce themselves in this file; explicit settings win.
        for name, value in read_sandbox_env(settings.state_dir / "sandbox" / "env").items():
            os.environ.setdefault(name, value)
    audit_key_env = resolve_reference(
        "RUNBOOK_BOT_AUDIT_KEY", settings.audit_key_env or "", secrets
    )
    store = open_store(settings.state_url)
    clock = clock or SystemClock()
    key = resolve_audit_key(
        env_key=audit_key_env or None, sandbox=config.is_sandbox, state_dir=settings.state_dir
    )
    engine = Engine(
        config=config,
        store=store,
        registry=registry,
        audit=AuditLog(store, key, clock),
        clock=clock,
        adapters_factory=(lambda: adapters(config)) if adapters else Adapters,
        state_dir=settings.state_dir,
        state_description=settings.state_description,
        lease_ttl=settings.lease_ttl,
        drill_runs=_drill_runs,
    )
    return Runtime(settings=settings, config=config, store=store, engine=engine)


def _drill_runs(engine: Engine) -> DrillRuns:
    """The drills' scheduler for a person's drill run, imported when one is asked for (a
    terminal command that runs no drill does not pay for it)."""
    from runbooks.engine.requesters.drills import drill_runs

    return drill_runs(engine)
