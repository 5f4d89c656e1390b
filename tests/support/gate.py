"""The rollback gate against the Prometheus emulator: an engine, its regions, a kept rollback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runbooks.engine.config.environments import RollbackGate
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.models import Execution, State, StepStatus
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import live_engine
from tests.support.kube_runs import actions, image

REGIONS = ("us-east-1", "us-west-2")


@contextmanager
def gate_engine(
    kube: KubeSandbox, sandbox_config: Config, tmp_path: Path, gate: RollbackGate
) -> Iterator[Engine]:
    """The sandbox's configuration with this rollback gate in production."""
    files = sandbox_config.environments
    production = files.environments["production"].model_copy(update={"rollback_gate": gate})
    environments = files.model_copy(
        update={"environments": {**files.environments, "production": production}}
    )
    config = Config(
        sandbox_config.directory,
        environments,
        sandbox_config.policy,
        sandbox_config.schedules,
        sandbox_config.alerts,
    )
    with live_engine(config, tmp_path, kubeconfig=str(kube.kubeconfig)) as engine:
        yield engine


def assert_kept(done: Execution, kube: KubeSandbox, engine: Engine) -> None:
    """Failed, and both regions still on the release rolled back to (1.4.1, not 1.4.2)."""
    assert done.state == State.FAILED, done.error
    assert [s.status for s in done.steps] == [
        StepStatus.SUCCEEDED,
        StepStatus.SUCCEEDED,
        StepStatus.FAILED,
    ]
    for region in REGIONS:
        assert image(kube, region) == "app-api:1.4.1"
    assert "steps 1-2 stay done, not undone" in (done.error or "")
    trail = actions(engine, done.id)
    assert "execution.failed" in trail
    assert not any(a.startswith("step.undo") for a in trail)
