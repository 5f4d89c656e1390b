"""Approvals from terminals, end to end: real processes, one shared SQLite state."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import BIN, ROOT, run_cli
from tests.support.bots import Bot, free_port
from tests.support.strict_policy import STRICT_RULES, as_user
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses, and a bot process


@pytest.fixture
def env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The sandbox configuration, with selftest needing 2 approvals in production, 1 in staging."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("example"))
    policy = config / "policy.yaml"
    policy.write_text(policy.read_text().replace("rules:\n", STRICT_RULES, 1))
    return {**cli_env, "RUNBOOK_BOT_CONFIG": str(config)}


def request_in_background(
    env: dict[str, str], environment: str, workdir: Path, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(BIN / "runbook"),
            "selftest",
            environment,
            "--yes",
            "--json",
            "--workdir",
            str(workdir),
            *extra,
        ],
        env=as_user(env, "alice"),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A terminal where Ctrl-C works, however pytest was started: a background job of a
        # non-interactive shell inherits SIGINT ignored, and so would this child (it then
        # waited for approval through the Ctrl-C test's SIGINT until its timeout).
        preexec_fn=_sigint_default,  # noqa: PLW1509 - one call, before exec
    )


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pending_id(env: dict[str, str]) -> str:
    store = SqliteStore(env["RUNBOOK_BOT_STATE"])

    def found() -> bool:
        return any(e.state == "awaiting_approval" for e in store.list_executions())

    wait_for(found, what="a pending request")
    [execution] = [e for e in store.list_executions() if e.state == "awaiting_approval"]
    store.close()
    return execution.id


def audit_actions(env: dict[str, str], execution_id: str) -> list[str]:
    lines = run_cli(["audit.export"], env).stdout.splitlines()
    return [r["action"] for r in map(json.loads, lines) if r.get("execution_id") == execution_id]


def test_two_approvers_at_once_with_a_waiting_terminal_and_a_bot_start_it_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    workdir = tmp_path / "home" / "w"
    bot = Bot({**env, "RUNBOOK_BOT_LOG": "-", "RUNBOOK_BOT_SWEEP_INTERVAL": "0.1"}, free_port())
    requester = request_in_background(env, "production", workdir)
    try:
        bot.wait_ready()
        execution_id = pending_id(env)
        listing = json.loads(run_cli(["approvals.list", "--json"], env).stdout)
        assert [(p["id"], p["required_approvals"]) for p in listing] == [(execution_id, 2)]
        approvers = [
            subprocess.Popen(
                [str(BIN / "runbook"), "approvals.approve", execution_id, "--yes"],
                env=as_user(env, who),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            for who in ("bob", "dave")
        ]
        results = [p.communicate(timeout=60) for p in approvers]
        assert [p.returncode for p in approvers] == [0, 0], results
        out, err = requester.communicate(timeout=60)
    finally:
        if requester.poll() is None:
            requester.kill()
            requester.communicate()
        bot.stop()
    assert requester.returncode == 0, err
    assert json.loads(out)["state"] == "succeeded"
    actions = audit_actions(env, execution_id)
    assert actions.count("approval.granted") == 2
    assert actions.count("execution.running") == 1
    assert (workdir / "journal").read_text().split() == ["step-1", "step-2", "step-3"]


def test_denial_reaches_the_waiting_requester_who_exits_2(env, tmp_path: Path) -> None:
    requester = request_in_background(env, "staging", tmp_path / "home" / "w")
    execution_id = pending_id(env)
    no_reason = run_cli(["approvals.deny", execution_id, "--yes"], as_user(env, "bob"))
    assert no_reason.returncode == 2 and "needs --reason" in no_reason.stderr
    carol = run_cli(
        ["approvals.deny", execution_id, "--reason", "no", "--yes"], as_user(env, "carol")
    )
    assert carol.returncode == 2 and "Carol may not deny" in carol.stderr
    denied = run_cli(
        ["approvals.deny", execution_id, "--reason", "not during the sale", "--yes"],
        as_user(env, "bob"),
    )
    assert denied.returncode == 0, denied.stderr
    out, err = requester.communicate(timeout=60)
    assert requester.returncode == 2
    assert json.loads(out)["state"] == "denied"
    assert "not during the sale" in err
    assert not (tmp_path / "home" / "w").exists()


def test_self_approval_and_no_terminal_refusals(env, tmp_path: Path) -> None:
    pending = run_cli(
        ["selftest", "staging", "--yes", "--no-wait", "--workdir", str(tmp_path / "home" / "w")],
        env,
    )
    assert pending.returncode == 3
    execution_id = pending_id(env)
    own = run_cli(["approvals.approve", execution_id, "--yes"], env)
    assert own.returncode == 2 and "someone else must approve" in own.stderr
    no_tty = run_cli(["approvals.approve", execution_id], as_user(env, "bob"))
    assert no_tty.returncode == 2 and "pass --yes" in no_tty.stderr


def test_no_wait_then_approved_is_started_by_runs_resume_where_no_bot_runs(
    env: dict[str, str], tmp_path: Path
) -> None:
    pending = run_cli(
        [
            "selftest",
            "staging",
            "--yes",
            "--no-wait",
            "--json",
            "--workdir",
            str(tmp_path / "home" / "w"),
        ],
        env,
    )
    assert pending.returncode == 3
    execution_id = json.loads(pending.stdout)["id"]
    approved = run_cli(["approvals.approve", execution_id, "--yes", "--json"], as_user(env, "dave"))
    assert json.loads(approved.stdout)["state"] == "approved"
    assert not (tmp_path / "home" / "w").exists()  # nobody started it yet
    resumed = run_cli(["runs.resume", execution_id, "--json"], env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "succeeded"


def test_ctrl_c_stops_waiting_but_keeps_the_request(env, tmp_path: Path) -> None:
    requester = request_in_background(env, "staging", tmp_path / "home" / "w")
    execution_id = pending_id(env)
    store = SqliteStore(env["RUNBOOK_BOT_STATE"])
    wait_for(lambda: store.get_lease(execution_id) is not None, what="the waiter's lease")
    requester.send_signal(signal.SIGINT)
    try:
        out, err = requester.communicate(timeout=60)
    finally:
        if requester.poll() is None:  # do not leave it waiting (and its pipes open)
            requester.kill()
            requester.communicate()
    assert requester.returncode == 3, err
    assert "stopped waiting" in err and f"runs.show {execution_id}" in err
    assert json.loads(out)["state"] == "awaiting_approval"
    assert store.get_lease(execution_id) is None  # released: the bot may start it later
    store.close()


def test_break_glass_runs_at_once_and_needs_someone_else_to_review(env, tmp_path) -> None:
    refused = run_cli(
        ["selftest", "production", "--yes", "--break-glass", "--reason", "outage"], env
    )
    assert refused.returncode == 2 and "--incident" in refused.stderr
    ran = run_cli(
        [
            "selftest",
            "production",
            "--yes",
            "--json",
            "--break-glass",
            "--reason",
            "api down",
            "--incident",
            "PD-42",
            "--workdir",
            str(tmp_path / "home" / "w"),
        ],
        env,
    )
    assert ran.returncode == 0, ran.stderr
    execution_id = json.loads(ran.stdout)["id"]
    reviews = json.loads(run_cli(["approvals.reviews", "--json"], env).stdout)
    assert [(r["id"], r["incident"], r["state"]) for r in reviews] == [
        (execution_id, "PD-42", "open")
    ]
    own = run_cli(["approvals.ack-review", execution_id], env)
    assert own.returncode == 2 and "someone else must review" in own.stderr
    carol = run_cli(["approvals.ack-review", execution_id], as_user(env, "carol"))
    assert carol.returncode == 2, carol.stdout + carol.stderr
    said = " ".join(carol.stderr.split())  # rich wraps long lines
    assert (
        f"Carol may not acknowledge the break-glass review of {execution_id} "
        "(selftest in production, requested by Alice); only sre may, never the requester"
    ) in said
    assert (
        run_cli(
            ["approvals.ack-review", execution_id, "--note", "ok"], as_user(env, "bob")
        ).returncode
        == 0
    )
    assert json.loads(run_cli(["approvals.reviews", "--json"], env).stdout) == []
    actions = audit_actions(env, execution_id)
    assert "break_glass.used" in actions and "break_glass.reviewed" in actions


def test_policy_explain(env: dict[str, str]) -> None:
    result = run_cli(["policy.explain", "selftest", "production", "--as", "carol"], env)
    assert result.returncode == 0
    assert "Carol (developers) may NOT request it" in result.stdout
    assert "needs 2 approval(s) from sre" in result.stdout
    mine = run_cli(["policy.explain", "selftest", "staging"], env)
    assert "Alice (sre) MAY request it" in mine.stdout
    bad = run_cli(["policy.explain", "selftest", "prod"], env)
    assert bad.returncode == 2 and "unknown environment 'prod'" in bad.stderr


def test_listings_never_cut_an_execution_id(env: dict[str, str], tmp_path: Path) -> None:
    pending = run_cli(
        ["selftest", "staging", "--yes", "--no-wait", "--workdir", str(tmp_path / "home" / "n")],
        env,
    )
    assert pending.returncode == 3, pending.stdout + pending.stderr
    [execution_id] = set(re.findall(r"\brb-[0-9a-f]{6}\b", pending.stdout))
    for listing in (["approvals.list"], ["runs.list"]):
        shown = run_cli(listing, {**env, "COLUMNS": "40"})
        assert shown.returncode == 0 and execution_id in shown.stdout, shown.stdout
