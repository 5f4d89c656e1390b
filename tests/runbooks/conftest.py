"""Runbooks against the Kubernetes emulator through the real adapter and the official client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runbooks.adapters import LiveInfrastructure
from runbooks.catalog import load_catalog
from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import SystemClock
from runbooks.engine.config import Config
from runbooks.engine.executor import Engine
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import AUDIT_KEY, KubeSandbox


@pytest.fixture
def kube_engine(kube: KubeSandbox, sandbox_config: Config, tmp_path: Path) -> Iterator[Engine]:
    store = SqliteStore(tmp_path / "state.db")
    clock = SystemClock()
    engine = Engine(
        config=sandbox_config,
        store=store,
        registry=load_catalog(),
        audit=AuditLog(store, AUDIT_KEY.encode(), clock),
        clock=clock,
        adapters_factory=lambda: LiveInfrastructure(
            sandbox_config, kubeconfig=str(kube.kubeconfig)
        ),
        state_dir=tmp_path / "home",
    )
    yield engine
    engine.close()
    store.close()
