"""A selftest run held in step 2 (``--hold-until-file``) by a real CLI process."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from runbooks.engine.models import Execution
from runbooks.engine.store import open_store
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import BIN, ROOT
from tests.support.waiting import wait_for


@dataclass
class HeldRun:
    proc: subprocess.Popen[str]
    hold: Path
    execution_id: str
    state_url: str

    def execution(self) -> Execution:
        store = open_store(self.state_url)
        try:
            found = store.get_execution(self.execution_id)
        finally:
            store.close()
        assert found is not None
        return found

    def release(self) -> tuple[int, str, str]:
        """Let step 2 go on; the process's exit code, stdout and stderr."""
        self.hold.touch()
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err


def start_held_selftest(env: dict[str, str], *, environment: str, user: str) -> HeldRun:
    """``user`` runs ``selftest ENVIRONMENT --yes``, which holds in step 2 until released
    (its markers go under the state directory, ``RUNBOOK_BOT_HOME``, as selftest requires)."""
    workdir = Path(env["RUNBOOK_BOT_HOME"]) / "held" / environment
    workdir.mkdir(parents=True, exist_ok=True)
    hold = workdir / "hold"
    proc = subprocess.Popen(
        [
            str(BIN / "runbook"),
            "selftest",
            environment,
            "--yes",
            "--json",
            "--workdir",
            str(workdir / "work"),
            "--hold-until-file",
            str(hold),
        ],
        env={**env, "RUNBOOK_USER": user},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (workdir / "work" / "holding-2").exists() or proc.poll() is not None,
            what="step 2 to start holding",
        )
    except BaseException:
        proc.kill()
        proc.communicate(timeout=10)
        raise
    if proc.poll() is not None:
        out, err = proc.communicate()
        raise AssertionError(f"the held selftest ended early ({proc.returncode}): {out}{err}")
    store = open_store(env["RUNBOOK_BOT_STATE"])
    try:
        (execution,) = [
            e for e in store.list_executions() if e.runbook == "selftest" and not e.terminal
        ]
    finally:
        store.close()
    return HeldRun(proc, hold, execution.id, env["RUNBOOK_BOT_STATE"])


def start_held_run(cli_env, tmp_path: Path, *, lease_ttl: str = "1"):
    """Start a selftest run that blocks in step 2 until ``hold`` exists."""
    workdir, hold = tmp_path / "home" / "work", tmp_path / "hold"
    env = {**cli_env, "RUNBOOK_BOT_LEASE_TTL": lease_ttl}
    proc = subprocess.Popen(
        [
            str(BIN / "runbook"),
            "selftest",
            "development",
            "--yes",
            "--json",
            "--workdir",
            str(workdir),
            "--hold-until-file",
            str(hold),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for((workdir / "holding-2").exists, what="step 2 to start holding")
    store = SqliteStore(cli_env["RUNBOOK_BOT_STATE"])
    [execution] = store.list_executions()
    return proc, workdir, hold, store, execution.id
