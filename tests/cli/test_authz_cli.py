"""Who may act on other people's work, drills and incidents, from a terminal (real processes,
one shared SQLite state): refusals are audited and change nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runbooks.engine.models import State
from tests.conftest import run_cli
from tests.support.held import start_held_selftest


def as_user(env: dict[str, str], user: str) -> dict[str, str]:
    return {**env, "RUNBOOK_USER": user}


def audit(env: dict[str, str]) -> list[dict[str, Any]]:
    exported = run_cli(["audit.export", "--format", "jsonl"], env)
    assert exported.returncode == 0, exported.stderr
    return [json.loads(line) for line in exported.stdout.splitlines()]


def test_a_rule_naming_no_operators_does_not_let_anyone_cancel_a_production_run(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The sandbox's selftest rule names no approvers and no operators: in production only
    the requester and the environment's approvers (sre) may cancel alice's running run."""
    run = start_held_selftest(cli_env, environment="production", user="alice")
    try:
        carol = run_cli(
            ["runs.cancel", run.execution_id, "--reason", "mine now"], as_user(cli_env, "carol")
        )
        assert carol.returncode == 2, carol.stdout + carol.stderr
        assert f"Carol may not cancel {run.execution_id}" in carol.stderr
        assert "only the requester or sre may" in carol.stderr
        assert run.execution().state == State.RUNNING
        (refusal,) = [r for r in audit(cli_env) if r["action"] == "cancel.refused"]
        assert refusal["actor"]["id"] == "carol" and refusal["outcome"] == "not_allowed"
        assert refusal["execution_id"] == run.execution_id
    finally:
        code, out, err = run.release()
    assert code == 0, err
    assert json.loads(out)["state"] == "succeeded"
    assert not [r for r in audit(cli_env) if r["action"] == "execution.cancel_requested"]
