"""A deployed bot reaches each region's cluster through its own context, never by falling back
to the cluster it runs in: a context that cannot be resolved makes the bot unready (/ready 503
naming it) and `config.check` exit 2; a runbook that needs it fails naming it. Processes: the
bot and the CLI as a user starts them, with no kubeconfig (a pod with only in-cluster
credentials) or a kubeconfig that lacks a region."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, unreachable_kubeconfig
from tests.support.bots import Bot, free_port, get
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # a bot process and the CLI as subprocesses


def no_kubeconfig(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """What a pod without the kubeconfig Secret has: no KUBECONFIG, no ~/.kube/config, and
    the in-cluster service's address (as the kubelet sets it)."""
    env = {k: v for k, v in cli_env.items() if k != "KUBECONFIG"}
    return {
        **env,
        "HOME": str(tmp_path / "pod-home"),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": "9",
    }


def test_config_check_refuses_contexts_that_cannot_be_resolved(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    checked = run_cli(["config.check"], no_kubeconfig(cli_env, tmp_path))
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "production us-west-2: context 'us-west-2' cannot be resolved: no kubeconfig" in (
        checked.stderr
    )
    assert "named in-cluster" in checked.stderr  # what would be right
    assert "Traceback" not in checked.stderr

    # A kubeconfig with one region only: the other is named.
    partial = unreachable_kubeconfig(tmp_path / "one-region")
    doc = json.loads(partial.read_text())
    doc["contexts"] = [c for c in doc["contexts"] if c["name"] == "us-east-1"]
    partial.write_text(json.dumps(doc))
    checked = run_cli(["config.check"], {**cli_env, "KUBECONFIG": str(partial)})
    assert checked.returncode == 2
    assert "context 'us-west-2' is not in the kubeconfig" in checked.stderr
    assert "us-east-1: context" not in checked.stderr

    assert run_cli(["config.check"], cli_env).returncode == 0  # both regions resolve


def test_the_bot_without_its_kubeconfig_is_not_ready_and_acts_on_no_cluster(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = no_kubeconfig(cli_env, tmp_path)
    bot = Bot(env, free_port())
    try:
        bot.wait_ready()
        wait_for(lambda: "warming" not in str(get(bot.base + "/ready")[1]), what="the SDKs to load")
        status, body = get(bot.base + "/ready")
        assert status == 503, body
        assert (
            "production us-west-2: context 'us-west-2' cannot be resolved"
            in (body["checks"]["kube"])
        )
        assert get(bot.base + "/health")[0] == 200
    finally:
        bot.stop()
    # A runbook that needs a cluster fails naming the context; nothing falls back in-cluster.
    history = run_cli(["rollback.history", "production", "--region", "us-west-2"], env)
    assert history.returncode != 0
    assert "cannot configure Kubernetes context 'us-west-2'" in history.stderr, history.stderr
    assert "no kubeconfig" in history.stderr


def test_config_check_in_the_sandbox_reads_the_kubeconfig_it_announces(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """With the sandbox running, its env file names the kubeconfig (runbooks read it without
    `source`): config.check must judge the contexts against that one, not say INVALID."""
    env = no_kubeconfig(cli_env, tmp_path)
    announced = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox" / "env"
    announced.parent.mkdir(parents=True, exist_ok=True)
    kubeconfig = unreachable_kubeconfig(tmp_path / "sandbox-kubeconfig")
    announced.write_text(f"export KUBECONFIG={kubeconfig}\n")
    checked = run_cli(["config.check"], env)
    assert checked.returncode == 0, checked.stderr
    assert "configuration OK" in checked.stdout
