"""Runbooks through the engine and the real adapters (Kubernetes emulator, moto, the
sandbox's MongoDB wire servers)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runbooks.adapters import LiveInfrastructure
from runbooks.catalog import load_catalog
from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock, FakeClock, SystemClock
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.models import Actor, Execution
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import AUDIT_KEY, KubeSandbox


@contextlib.contextmanager
def started(engine: Engine, execution_id: str, *, actor: Actor) -> Iterator[list[Execution]]:
    """Start an execution on a thread, as the bot's worker would, so the test can look and
    act while it runs; yields the list its end lands in, joined on exit."""
    finished: list[Execution] = []
    runner = threading.Thread(
        target=lambda: finished.append(engine.start(execution_id, actor=actor))
    )
    runner.start()
    try:
        yield finished
    finally:
        runner.join(timeout=120)


@contextlib.contextmanager
def live_engine(
    config: Config,
    directory: Path,
    *,
    clock: Clock | None = None,
    kubeconfig: str | None = None,
    store: SqliteStore | None = None,
) -> Iterator[Engine]:
    """The catalog's runbooks on a fresh SQLite store in ``directory`` (or on ``store``, which
    the caller closes), live adapters; the engine and the store it made are closed on exit."""
    given = store
    store = store or SqliteStore(directory / "state.db")
    clock = clock or SystemClock()
    engine = Engine(
        config=config,
        store=store,
        registry=load_catalog(),
        audit=AuditLog(store, AUDIT_KEY.encode(), clock),
        clock=clock,
        adapters_factory=lambda: LiveInfrastructure(config, kubeconfig=kubeconfig),
        state_dir=directory / "home",
    )
    try:
        yield engine
    finally:
        engine.close()
        if given is None:
            store.close()


@pytest.fixture
def kube_engine(
    kube: KubeSandbox, sandbox_config: Config, tmp_path: Path, health: Any
) -> Iterator[Engine]:
    """The sandbox's clusters, moto, and its Prometheus double for production's rollback
    gate, on a ``FakeClock`` (started at the wall time, so moto's and the emulators'
    timestamps stay plausible): every settle, poll and deadline of the runbook advances
    virtual time at once, and a maintenance window built from ``engine.clock.now()`` cannot
    close before the run starts, however loaded the machine. The emulators keep their own
    steps: moto's are instant, and a rollout is the Kubernetes emulator's controller, which
    the adapter waits for by watch (its own wall-clock wait), not by the engine's clock."""
    clock = FakeClock(time.time())
    with live_engine(
        sandbox_config, tmp_path, clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as engine:
        yield engine


@pytest.fixture
def wall_engine(
    kube: KubeSandbox, sandbox_config: Config, tmp_path: Path, health: Any
) -> Iterator[Engine]:
    """``kube_engine`` on the wall clock, for a test whose world moves in real time while the
    runbook waits (an emulator's election measured against its delay, a signal another
    thread turns bad mid-soak): a skipping soak would end before the change."""
    with live_engine(sandbox_config, tmp_path, kubeconfig=str(kube.kubeconfig)) as engine:
        yield engine


@dataclass
class Chat:
    """The sandbox's Slack and PagerDuty, with the bot's environment pointing at them."""

    slack: Any
    pagerduty: Any

    def hook(self, url: str, body: dict[str, Any]) -> None:
        """A sandbox hook of either emulator (the PagerDuty one speaks TLS with its own CA)."""
        import json
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=str(self.pagerduty.ca_path))
        request = urllib.request.Request(  # noqa: S310 - the local emulators
            url, data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5, context=context):  # noqa: S310
            pass


@pytest.fixture
def chat(pagerduty_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chat]:
    """Slack (``auth.test`` with the sandbox's bot token) and PagerDuty (REST token and
    routing key) as the bot's environment configures them."""
    from sandbox.pagerduty import SANDBOX_API_TOKEN, SANDBOX_ROUTING_KEY
    from sandbox.slack import SANDBOX_BOT_TOKEN, SlackEmulator

    slack = SlackEmulator().start()
    for key, value in {
        "SLACK_BOT_TOKEN": SANDBOX_BOT_TOKEN,
        "SLACK_API_URL": slack.api_url,
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
        "PAGERDUTY_ROUTING_KEY": SANDBOX_ROUTING_KEY,
        "PAGERDUTY_API_URL": pagerduty_emulator.url,
        "PAGERDUTY_EVENTS_URL": pagerduty_emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(pagerduty_emulator.ca_path),
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield Chat(slack, pagerduty_emulator)
    finally:
        slack.stop()
