"""The bot process, started as a user starts it, probed over real HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import ROOT
from tests.support.bots import Bot, _answers, free_port, get, start_replicas, stop_replicas  # noqa: F401
from tests.support.held import start_held_run
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot processes


@pytest.fixture
def bot_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("example"))
    return {**cli_env, "RUNBOOK_BOT_CONFIG": str(config), "RUNBOOK_BOT_LOG": "-"}


@pytest.fixture
def bot(bot_env: dict[str, str]) -> Iterator[Bot]:
    running = Bot(bot_env, free_port())
    running.wait_ready()
    yield running
    running.stop()


def test_health_and_ready(bot: Bot, bot_env: dict[str, str]) -> None:
    assert get(bot.base + "/health") == (200, {"status": "ok"})
    # Ready once the SDKs are imported (a second or so after /health answers).
    wait_for(lambda: get(bot.base + "/ready")[0] == 200, what="readiness")
    status, body = get(bot.base + "/ready")
    assert status == 200
    assert body["checks"] == {"store": "ok", "config": "ok", "kube": "ok", "warm": "ok"}
    # Break the configuration under the running bot: readiness says so, liveness does not.
    policy = Path(bot_env["RUNBOOK_BOT_CONFIG"]) / "policy.yaml"
    policy.write_text(policy.read_text() + "\nunexpected_key: 1\n")
    status, body = get(bot.base + "/ready")
    assert status == 503
    assert "unexpected_key" in str(body["checks"])
    assert get(bot.base + "/health")[0] == 200
    status, body = get(bot.base + "/nope")
    assert status == 404 and "/health" in str(body["routes"])


def test_port_comes_from_PORT_when_no_flag(bot_env: dict[str, str]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1"],
        env={**bot_env, "PORT": str(port)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), what="bot on $PORT")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in out


def test_invalid_configuration_refuses_to_start_with_the_reason(bot_env: dict[str, str]) -> None:
    env_file = Path(bot_env["RUNBOOK_BOT_CONFIG"]) / "environments.yaml"
    env_file.write_text(env_file.read_text().replace("    primary_region: us-east-1\n", "", 1))
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", str(free_port())],
        env=bot_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert (
        "environments.yaml: environments.development.primary_region: required key is missing"
        in result.stdout
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "RUNBOOK_BOT_SWEEP_INTERVAL",
            "2s",
            "'2s' is not a positive number of seconds (default 2)",
        ),
        (
            "RUNBOOK_BOT_GITOPS_INTERVAL",
            "0",
            "'0' is not a positive number of seconds (default 30)",
        ),
        ("RUNBOOK_BOT_SLACK_WORKERS", "2.5", "'2.5' is not a positive whole number (default 4)"),
        (
            "RUNBOOK_BOT_SLACK_INTERVAL",
            "1s",
            "'1s' is not a number of seconds, 0 or more (default 1)",
        ),
    ],
)
def test_a_malformed_tuning_variable_refuses_to_start_naming_it(
    bot_env: dict[str, str], name: str, value: str, expected: str
) -> None:
    """Read with the settings, not at import: one line naming the variable, exit 2, no
    traceback (before, ``float()`` at import raised ValueError out of ``import bot.server``)."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", str(free_port())],
        env={**bot_env, name: value},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"runbook-bot cannot start: {name}={expected}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_port_in_use_refuses_to_start_in_one_line(bot: Bot, bot_env: dict[str, str]) -> None:
    """A second bot on the port the first one holds: one line, exit 2, no traceback (before:
    waitress's OSError after a log line saying it served)."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", "serve", "--port", str(bot.port), "--host", "127.0.0.1"],
        env=bot_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"runbook-bot cannot start: cannot listen on 127.0.0.1:{bot.port}: " in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert '"runbook-bot serving"' not in result.stdout
    assert get(bot.base + "/health")[0] == 200  # the first one is untouched


def test_bot_resumes_an_orphaned_execution_at_start_up(
    bot_env: dict[str, str], tmp_path: Path
) -> None:
    proc, workdir, hold, store, execution_id = start_held_run(bot_env, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    lease = store.get_lease(execution_id)
    assert lease is not None
    expiry = lease.until + 0.05
    wait_for(lambda: time.time() > expiry, what="the lease to expire")
    hold.touch()
    bot = Bot(bot_env, free_port())
    try:
        bot.wait_ready()
        fresh = SqliteStore(bot_env["RUNBOOK_BOT_STATE"])
        wait_for(
            lambda: fresh.get_execution(execution_id).state == "succeeded",
            what="the bot to finish the orphaned execution",
        )
    finally:
        out = bot.stop()
    assert (workdir / "journal").read_text().split() == ["step-1", "step-2", "step-3"]
    assert "resuming orphaned execution" in out


def test_without_slack_settings_the_bot_serves_the_rest_and_says_slack_is_off(
    bot_env: dict[str, str],
) -> None:
    env = {k: v for k, v in bot_env.items() if not k.startswith("SLACK_")}
    running = Bot(env, free_port())
    running.wait_ready()
    request = urllib.request.Request(  # noqa: S310 - local test server
        running.base + "/slack/events", data=b"x", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)  # noqa: S310 - local test server
    caught.value.close()
    assert caught.value.code == 404
    with urllib.request.urlopen(running.base + "/metrics", timeout=5) as response:  # noqa: S310
        assert b"runbook_bot_pending_approvals" in response.read()
    out = running.stop()
    assert "slack off: SLACK_BOT_TOKEN is not set" in out
