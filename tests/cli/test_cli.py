"""The terminal front end, driven as a user drives it: the installed ``runbook`` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, run_cli
from tests.support.held import start_held_run
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the runbook CLI and invoke as subprocesses

__all__ = ["wait_for"]  # still imported from here by older tests; new ones use tests.support


def test_list_shows_the_namespaces(cli_env: dict[str, str]) -> None:
    result = run_cli(["--list"], cli_env)
    assert result.returncode == 0
    for name in (
        "selftest",
        "runs.list",
        "runs.show",
        "runs.resume",
        "runs.cancel",
        "audit.verify",
        "audit.tail",
        "audit.export",
        "config.check",
        "bot.serve",
    ):
        assert name in result.stdout


def test_invoke_itself_finds_the_collection_from_any_subdirectory(cli_env) -> None:
    result = subprocess.run(
        [str(BIN / "invoke"), "--list"],
        cwd=ROOT / "docs",
        env=cli_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0 and "runs.resume" in result.stdout


def modules_loaded_by_listing(env: dict[str, str], modules: tuple[str, ...]) -> str:
    """Run ``runbook --list`` in a fresh interpreter; the listed modules it imported."""
    probe = (
        "import sys\n"
        "from runbook_cli.program import build_program\n"
        "build_program().run(['runbook', '--list'], exit=False)\n"
        f"loaded = [m for m in {modules!r} if m in sys.modules]\n"
        "print('LOADED=' + ','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "dr.failover" in result.stdout
    return result.stdout


def test_listing_imports_no_heavy_sdk(cli_env: dict[str, str]) -> None:
    heavy = ("boto3", "kubernetes", "pymongo", "slack_bolt", "slack_sdk", "apscheduler")
    out = modules_loaded_by_listing(cli_env, (*heavy, "rich", "structlog"))
    assert "LOADED=\n" in out, out[-300:]


def test_listing_from_the_cached_task_table_imports_no_runbook_module(
    cli_env: dict[str, str],
) -> None:
    modules = ("pydantic", "runbooks.engine.params", "runbooks.rollback", "runbooks.dr")

    def listing() -> str:
        return modules_loaded_by_listing(cli_env, modules)

    assert "LOADED=pydantic" in listing()  # first run: builds the table from the catalog
    [table] = (Path(cli_env["XDG_CACHE_HOME"]) / "runbook-bot").glob("tasks-*.json")
    assert "LOADED=\n" in listing()  # then: from the table alone
    table.write_text("{not json")
    assert "LOADED=pydantic" in listing()  # a broken table is rebuilt, never trusted
    assert json.loads(table.read_text())[0]["name"]


def test_exit_codes_for_invalid_input(cli_env: dict[str, str]) -> None:
    unknown_task = run_cli(["rollbak", "production"], cli_env)
    assert unknown_task.returncode == 2 and "rollbak" in unknown_task.stderr
    unknown_flag = run_cli(["selftest", "development", "--colour", "red"], cli_env)
    assert unknown_flag.returncode == 2
    missing = run_cli(["selftest"], cli_env)
    assert missing.returncode == 2 and "environment" in missing.stderr.lower()
    bad_env = run_cli(["selftest", "prod", "--yes"], cli_env)
    assert bad_env.returncode == 2
    assert (
        "unknown environment 'prod'; known: development, staging, production, rehearsal"
        in bad_env.stderr
    )
    bad_value = run_cli(["selftest", "development", "--steps", "50", "--yes"], cli_env)
    assert bad_value.returncode == 2 and "--steps: must be at most 10 (got 50)" in bad_value.stderr
    not_a_number = run_cli(["selftest", "development", "--steps", "many", "--yes"], cli_env)
    assert not_a_number.returncode == 2 and "whole number" in not_a_number.stderr
    assert run_cli(["runs.list", "--json"], cli_env).stdout.strip() == "[]"  # nothing created


def test_no_terminal_and_no_yes_refuses_rather_than_hangs(cli_env, tmp_path) -> None:
    result = run_cli(
        ["selftest", "development", "--workdir", str(tmp_path / "home" / "w")], cli_env
    )
    assert result.returncode == 2 and "pass --yes" in result.stderr
    assert not (tmp_path / "home" / "w").exists()


def test_identity_must_map_to_a_person(cli_env: dict[str, str]) -> None:
    result = run_cli(["selftest", "development", "--dry-run"], {**cli_env, "RUNBOOK_USER": "eve"})
    assert result.returncode == 2 and "unknown user 'eve'" in result.stderr


def test_json_output_is_one_document(cli_env: dict[str, str], tmp_path: Path) -> None:
    dry = run_cli(
        ["selftest", "staging", "--dry-run", "--json", "--workdir", str(tmp_path / "home" / "w")],
        cli_env,
    )
    assert dry.returncode == 0
    plan = json.loads(dry.stdout)
    assert (
        plan["dry_run"] is True and len(plan["steps"]) == 3 and plan["banner"].startswith("STAGING")
    )
    run = run_cli(
        [
            "selftest",
            "staging",
            "--yes",
            "--json",
            "--reason",
            "drill",
            "--workdir",
            str(tmp_path / "home" / "w"),
        ],
        cli_env,
    )
    assert run.returncode == 0, run.stderr
    execution = json.loads(run.stdout)
    assert execution["state"] == "succeeded" and execution["reason"] == "drill"
    assert [s["status"] for s in execution["steps"]] == ["succeeded"] * 3
    assert sorted((tmp_path / "home" / "w").glob("step-*")) == [
        tmp_path / "home" / "w" / f"step-{i}" for i in (1, 2, 3)
    ]
    listing = json.loads(run_cli(["runs.list", "--json"], cli_env).stdout)
    assert {"id", "runbook", "environment", "state", "requester", "created_at"} <= set(listing[0])
    assert listing[0]["id"] == execution["id"]
    shown = json.loads(run_cli(["runs.show", execution["id"], "--json"], cli_env).stdout)
    assert shown["plan_hash"] == execution["plan_hash"]
    assert shown["trigger"]["kind"] == "person" and shown["stop_reason"] is None
    said = run_cli(["runs.show", execution["id"]], cli_env).stdout
    assert f"triggered by person {shown['requester']}" in said
    tail = json.loads(run_cli(["audit.tail", "-n", "3", "--json"], cli_env).stdout)
    assert tail[-1]["action"] == "execution.succeeded"
    missing = run_cli(["runs.show", "rb-000000"], cli_env)
    assert missing.returncode == 2 and "no execution 'rb-000000'" in missing.stderr


def test_failing_step_is_compensated_and_exits_1(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(
        [
            "selftest",
            "development",
            "--fail-at",
            "3",
            "--yes",
            "--json",
            "--workdir",
            str(tmp_path / "home" / "w"),
        ],
        cli_env,
    )
    assert result.returncode == 1
    execution = json.loads(result.stdout)
    assert execution["state"] == "compensated"
    assert list((tmp_path / "home" / "w").glob("step-*")) == []
    journal = (tmp_path / "home" / "w" / "journal").read_text().split()
    assert journal == ["step-1", "step-2", "step-3", "undo-3", "undo-2", "undo-1"]


def test_audit_export_formats(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert (
        run_cli(
            ["selftest", "development", "--yes", "--workdir", str(tmp_path / "home" / "w")], cli_env
        ).returncode
        == 0
    )
    lines = run_cli(["audit.export"], cli_env).stdout.splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))
    csv_out = run_cli(
        ["audit.export", "--format", "csv", "--since", "2000-01-01T00:00Z"], cli_env
    ).stdout.splitlines()
    assert csv_out[0].startswith("seq,time,actor_id") and len(csv_out) == len(lines) + 1
    future = run_cli(["audit.export", "--since", "2999-01-01T00:00Z"], cli_env)
    assert future.returncode == 0 and future.stdout == ""
    bad = run_cli(["audit.export", "--format", "xml"], cli_env)
    assert bad.returncode == 2 and "use jsonl or csv" in bad.stderr


def test_second_request_on_a_held_lock_is_refused_naming_the_holder(cli_env, tmp_path) -> None:
    proc, _workdir, hold, _store, holder = start_held_run(cli_env, tmp_path, lease_ttl="30")
    try:
        second = run_cli(
            ["selftest", "development", "--yes", "--workdir", str(tmp_path / "home" / "other")],
            cli_env,
        )
        assert second.returncode == 2
        assert f"development:selftest is locked by {holder} (running" in second.stderr
    finally:
        hold.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["state"] == "succeeded"


def test_sigkill_mid_run_then_resume_from_another_process(cli_env, tmp_path) -> None:
    """Acceptance: each step's side effect happens exactly once across a crash and a resume."""
    proc, workdir, hold, store, execution_id = start_held_run(cli_env, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert (workdir / "journal").read_text().split() == ["step-1"]
    crashed = store.get_execution(execution_id)
    assert crashed is not None and crashed.state == "running"
    assert [s.status for s in crashed.steps] == ["succeeded", "running", "pending"]

    lease = store.get_lease(execution_id)
    assert lease is not None
    deadline = lease.until + 0.05
    wait_for(lambda: time.time() > deadline, what="the dead process's lease to expire")
    hold.touch()
    resumed = run_cli(["runs.resume", execution_id, "--json"], {**cli_env, "RUNBOOK_USER": "bob"})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["state"] == "succeeded"
    assert [s["status"] for s in result["steps"]] == ["succeeded"] * 3
    assert [s["attempts"] for s in result["steps"]] == [1, 2, 1]
    assert (workdir / "journal").read_text().split() == ["step-1", "step-2", "step-3"]
    again = run_cli(["runs.resume", execution_id], cli_env)
    assert again.returncode == 2 and "only a running execution" in again.stderr
    actions = [
        json.loads(line)["action"]
        for line in run_cli(["audit.export"], cli_env).stdout.splitlines()
    ]
    assert "execution.resumed" in actions
    assert run_cli(["audit.verify"], cli_env).returncode == 0


def test_cancel_a_running_execution_from_another_terminal(cli_env, tmp_path) -> None:
    proc, workdir, _hold, _store, execution_id = start_held_run(cli_env, tmp_path, lease_ttl="30")
    cancel = run_cli(
        ["runs.cancel", execution_id, "--reason", "wrong env"], {**cli_env, "RUNBOOK_USER": "bob"}
    )
    assert cancel.returncode == 0, cancel.stderr
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    final = json.loads(out)
    assert final["state"] == "cancelled"
    assert (workdir / "journal").read_text().split() == ["step-1", "undo-1"]
