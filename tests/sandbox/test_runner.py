"""The sandbox as a user runs it: `python -m sandbox up --bot` (what `python3 dev.py serve`
execs), then the real `runbook` command against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.models import TERMINAL_STATES
from runbooks.engine.settings import read_sandbox_env
from sandbox.prometheus import alertmanager_binary, prometheus_binary
from tests.conftest import BIN, ROOT, run_cli
from tests.support.aws_cli import aws_cli
from tests.support.bots import _answers, free_port
from tests.support.state import stored
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the sandbox, the bot and the CLI as processes


def invoke(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "invoke"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_sandbox_up_with_bot_serves_and_a_terminal_rolls_back(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("RUNBOOK_BOT_LOG", "KUBECONFIG")}
    home = Path(env["RUNBOOK_BOT_HOME"])
    port = free_port()
    proc = subprocess.Popen(
        # The port from $PORT, as `PORT=3300 python3 dev.py serve` gives it: the bot serves
        # there and the env file's RUNBOOK_BOT_URL says so (it said 3000 before).
        [sys.executable, "-m", "sandbox", "up", "--bot"],
        env={**env, "PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        env_file = home / "sandbox" / "env"
        wait_for(env_file.exists, what="the sandbox env file")
        kubeconfig = read_sandbox_env(env_file)["KUBECONFIG"]
        assert Path(kubeconfig).exists()
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), what="the bot")
        # A terminal with the sandbox config finds the emulators through the env file alone.
        dry = run_cli(["rollback", "development", "--dry-run", "--json"], env)
        assert dry.returncode == 0, dry.stderr
        plan = json.loads(dry.stdout)
        assert plan["steps"][0]["description"] == (
            "roll back deployment api-deployment in development (us-east-1): revision 3 "
            "(app-api:1.4.2) → revision 2 (app-api:1.4.1)"
        )
        done = run_cli(["rollback", "development", "--yes", "--json"], env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["state"] == "succeeded"
        history = run_cli(["rollback.history", "development", "--json"], env)
        assert any(
            "app-api:1.4.1" in n and "current" in n for n in json.loads(history.stdout)["notes"]
        )

        # The Slack flow without a workspace: the bot talks to the sandbox's Slack emulator.
        sandbox_env = read_sandbox_env(env_file)
        assert sandbox_env["SLACK_API_URL"].endswith("/api/")
        # The bot's token is a Secrets Manager reference the bot resolves at start (the Slack
        # emulator refuses any other token, so the flow below proves it was resolved).
        assert sandbox_env["SLACK_BOT_TOKEN"] == "aws-secretsmanager:runbook-bot/slack#bot_token"
        assert sandbox_env["RUNBOOK_BOT_URL"] == f"http://127.0.0.1:{port}"
        typed = invoke(["sandbox.slack", "--as", "alice", "/rollback staging"], env)
        assert typed.returncode == 0, typed.stdout + typed.stderr
        assert "--- #C0OPS (only you)" in typed.stdout
        assert "[Confirm] [Cancel]" in typed.stdout
        assert "revision 3 (app-api:1.4.2) → revision 2 (app-api:1.4.1)" in typed.stdout
        confirmed = invoke(["sandbox.click", "--as", "alice", "Confirm"], env)
        assert "--- #C0APPROVALS" in confirmed.stdout, confirmed.stdout + confirmed.stderr
        assert "[Approve] [Deny]" in confirmed.stdout
        approved = invoke(["sandbox.click", "--as", "bob", "Approve"], env)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "Approvals* 1/1: Bob" in approved.stdout

        # Waits poll the state file with sqlite3 (an independent reader, no process start per
        # poll); what is asserted once they end is read through the CLI.
        def ended(runbook: str, environment: str) -> bool:
            sql = "SELECT state FROM executions WHERE runbook = ? AND environment = ?"
            return bool(set(stored(env, sql, runbook, environment)) & TERMINAL_STATES)

        wait_for(lambda: ended("rollback", "staging"), timeout=60, what="the staging rollback")
        rows = json.loads(run_cli(["runs.list", "--json"], env).stdout)
        assert any(r["environment"] == "staging" and r["state"] == "succeeded" for r in rows)

        # The requester's direct message (the outcome) is visible from the sandbox too.
        def told() -> bool:
            dms = invoke(["sandbox.dms", "--as", "alice"], env).stdout
            return "--- direct message to alice" in dms and "staging" in dms

        wait_for(told, timeout=30, what="alice's outcome DM")
        nobody = invoke(["sandbox.click", "--as", "bob", "Approve"], env)
        assert nobody.returncode == 1 and "no message visible to U0BOB" in nobody.stdout

        # The AWS CLI works against the sandbox's moto server with the env file alone (its
        # AWS_* lines; the driver runs in this process, tests/support/aws_cli.py).
        for key, value in read_sandbox_env(env_file).items():
            if key.startswith("AWS_"):
                monkeypatch.setenv(key, value)
        assert _weights() == {"us-east-1": 100, "us-west-2": 0}
        assert _desired("us-west-2", "prod-api-usw2") == 2

        # Production DR failover from Slack: two approvals (bob and dave), never alice's own.
        typed = invoke(["sandbox.slack", "--as", "alice", "/dr failover us-west-2"], env)
        assert typed.returncode == 0, typed.stdout + typed.stderr
        assert "promote the production database in us-west-2" in typed.stdout
        assert "[Confirm] [Cancel]" in typed.stdout
        confirmed = invoke(["sandbox.click", "--as", "alice", "Confirm"], env)
        assert "[Approve] [Deny]" in confirmed.stdout, confirmed.stdout + confirmed.stderr
        own = invoke(["sandbox.click", "--as", "alice", "Approve"], env)
        assert "someone else must approve" in own.stdout, own.stdout
        first = invoke(["sandbox.click", "--as", "bob", "Approve"], env)
        assert "Approvals* 1/2: Bob" in first.stdout, first.stdout
        assert _weights() == {"us-east-1": 100, "us-west-2": 0}  # one is not enough
        second = invoke(["sandbox.click", "--as", "dave", "Approve"], env)
        assert "2/2" in second.stdout, second.stdout

        def finished(runbook: str) -> str | None:
            rows = json.loads(run_cli(["runs.list", "--json"], env).stdout)
            for row in rows:
                if row["runbook"] == runbook and row["state"] not in {
                    "awaiting_approval",
                    "approved",
                    "running",
                    "compensating",
                }:
                    return str(row["state"])
            return None

        wait_for(lambda: ended("dr.failover", "production"), timeout=90, what="the failover")
        assert finished("dr.failover") == "succeeded"
        # The independent oracle: the AWS CLI sees the traffic and the capacity in us-west-2.
        assert _weights() == {"us-east-1": 0, "us-west-2": 100}
        assert _desired("us-west-2", "prod-api-usw2") == 4
        status = run_cli(["dr.status", "--json"], env)
        assert "active: us-west-2" in status.stdout and "primary in us-west-2" in status.stdout

        # Failback from a terminal: requested by alice, approved by bob and dave at theirs.
        pending = run_cli(["dr.failback", "--yes", "--no-wait", "--json"], env)
        assert pending.returncode == 3, pending.stdout + pending.stderr
        failback_id = json.loads(pending.stdout)["id"]
        for approver in ("bob", "dave"):
            approved_cli = run_cli(
                ["approvals.approve", failback_id, "--yes"], {**env, "RUNBOOK_USER": approver}
            )
            assert approved_cli.returncode in (0, 3), approved_cli.stdout + approved_cli.stderr
        wait_for(lambda: ended("dr.failback", "production"), timeout=90, what="the failback")
        assert finished("dr.failback") == "succeeded"
        assert _weights() == {"us-east-1": 100, "us-west-2": 0}

        # A production rollback from a terminal, run by the bot once bob approves: it ends
        # with the Prometheus gate, which the bot reaches through the sandbox's env alone.
        asked = run_cli(["rollback", "production", "--yes", "--no-wait", "--json"], env)
        assert asked.returncode == 3, asked.stdout + asked.stderr
        rollback_id = json.loads(asked.stdout)["id"]
        approved_cli = run_cli(
            ["approvals.approve", rollback_id, "--yes"], {**env, "RUNBOOK_USER": "bob"}
        )
        assert approved_cli.returncode in (0, 3), approved_cli.stdout + approved_cli.stderr

        def shown() -> dict[str, Any]:
            return dict(json.loads(run_cli(["runs.show", rollback_id, "--json"], env).stdout))

        def rollback_ended() -> bool:
            found = stored(env, "SELECT state FROM executions WHERE id = ?", rollback_id)
            return bool(set(found) & TERMINAL_STATES)

        wait_for(rollback_ended, timeout=90, what="the rollback")
        done_rollback = shown()
        assert done_rollback["state"] == "succeeded", done_rollback
        watch = done_rollback["steps"][-1]
        assert watch["description"].startswith("watch api in production (us-east-1, us-west-2)")
        assert any("us-west-2: healthy for 3.0s" in line for line in watch["output"]), watch

        # A reset under the running sandbox and bot is refused and changes nothing.
        refused = invoke(["sandbox.reset", "--yes"], env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "the sandbox (pid" in refused.stderr and "a bot (" in refused.stderr
        assert Path(env["RUNBOOK_BOT_STATE"]).exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "sandbox stopped" in out
    # With the binaries the sandbox runs the real Prometheus, says so, and the production
    # rollback's gate was evaluated there (its query log); without them, the emulator.
    if prometheus_binary() and alertmanager_binary():
        assert "prometheus: the real prometheus, version" in out, out
        log = home / "sandbox" / "monitoring" / "prometheus" / "queries.log"
        gate = [
            line
            for line in log.read_text().splitlines()
            if 'environment=\\"production\\"' in line and 'service=\\"api\\"' in line
        ]
        assert gate, "the gate's queries in the real Prometheus's query log"
    else:
        assert "prometheus: the emulator at" in out, out
    assert not (home / "sandbox" / "env").exists()
    records = len(run_cli(["audit.tail", "-n", "100000", "--json"], env).stdout)
    # Stopped: without a terminal and without --yes it still asks, so it refuses...
    assert invoke(["sandbox.reset"], env).returncode == 2
    # ...with --yes it sets the store aside, audit log included, instead of deleting it.
    done = invoke(["sandbox.reset", "--yes"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    state = Path(env["RUNBOOK_BOT_STATE"])
    assert not state.exists()
    [copy] = state.parent.glob(state.name + ".*Z")
    kept = {**env, "RUNBOOK_BOT_STATE": str(copy)}
    assert run_cli(["audit.verify"], kept).returncode == 0
    assert len(run_cli(["audit.tail", "-n", "100000", "--json"], kept).stdout) == records


def _weights() -> dict[str, int]:
    """The production traffic split as the AWS CLI reads it."""
    zone_id = aws_cli("route53", "list-hosted-zones-by-name")["HostedZones"][0]["Id"]
    records = aws_cli("route53", "list-resource-record-sets", "--hosted-zone-id", zone_id)
    return {
        r["SetIdentifier"]: r["Weight"]
        for r in records["ResourceRecordSets"]
        if r["Name"] == "api-production.example.com."
    }


def _desired(region: str, group: str) -> int:
    found = aws_cli(
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        group,
        region=region,
    )
    return int(found["AutoScalingGroups"][0]["DesiredCapacity"])


def test_sandbox_up_without_the_bot_exits_0_on_sigterm_with_clients_still_connected(
    cli_env: dict[str, str],
) -> None:
    """``python -m sandbox up`` (no --bot), a client still connected to its database and a
    kubectl watch open, then SIGTERM: it says "sandbox stopped" and the process ends with 0
    (it once printed that and never exited). The bound is generous: a hang, not a speed."""
    import pymongo

    env = {k: v for k, v in cli_env.items() if k not in ("RUNBOOK_BOT_LOG", "KUBECONFIG")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env_file = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox" / "env"
    watch: subprocess.Popen[bytes] | None = None
    client: pymongo.MongoClient[dict[str, Any]] | None = None
    try:
        wait_for(lambda: proc.poll() is not None or env_file.exists(), timeout=120, what="env")
        assert proc.poll() is None, proc.communicate(timeout=30)[0]
        sandbox = read_sandbox_env(env_file)
        client = pymongo.MongoClient(sandbox["PRODUCTION_MONGODB_URI"])
        assert client.admin.command("ping")["ok"] == 1
        watch = subprocess.Popen(
            ["kubectl", "--context", "us-east-1", "get", "pods", "-A", "--watch"],
            env={**env, "KUBECONFIG": sandbox["KUBECONFIG"]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if watch is not None:
            watch.kill()
            watch.wait()
        if client is not None:
            client.close()
    assert proc.returncode == 0, out
    assert out.rstrip().endswith("sandbox stopped"), out[-2000:]
    assert not env_file.exists()  # the running sandbox's marker is gone


def test_a_second_sandbox_on_the_same_state_refuses_and_touches_nothing(
    cli_env: dict[str, str],
) -> None:
    """A sandbox already runs on this state (its pid file names a live process: this test's
    own): a second ``sandbox up`` refuses in one line and leaves the first one's files alone
    (it used to rewrite the env file, kubeconfig and Git repositories, and delete them when it
    stopped, so the first sandbox became unreachable)."""
    env = {k: v for k, v in cli_env.items() if k not in ("RUNBOOK_BOT_LOG", "KUBECONFIG")}
    directory = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pid").write_text(str(os.getpid()))
    (directory / "env").write_text("export KUBECONFIG=/the/first/one\n")
    before = sorted(p.relative_to(directory) for p in directory.rglob("*"))
    result = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--bot", "--port", str(free_port())],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"runbook-bot cannot start: the sandbox (pid {os.getpid()}) already runs on" in (
        result.stderr
    )
    assert "RUNBOOK_BOT_HOME=" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.relative_to(directory) for p in directory.rglob("*")) == before
    assert (directory / "env").read_text() == "export KUBECONFIG=/the/first/one\n"
    assert (directory / "pid").read_text() == str(os.getpid())


def test_a_malformed_setting_stops_the_sandbox_in_one_line(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("RUNBOOK_BOT_LOG", "KUBECONFIG")}
    for command in (["up", "--bot"], ["channel", "C0OPS"]):
        result = subprocess.run(
            [sys.executable, "-m", "sandbox", *command],
            env={**env, "RUNBOOK_BOT_SWEEP_INTERVAL": "2s"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip() == (
            "runbook-bot cannot start: RUNBOOK_BOT_SWEEP_INTERVAL='2s' is not a positive number "
            "of seconds (default 2)"
        )
