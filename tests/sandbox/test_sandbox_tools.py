"""``invoke sandbox.channel``, ``sandbox.incident`` and ``sandbox.fault`` against the running
sandbox (``python -m sandbox up --bot``), judged by what the emulators recorded, read over
their own HTTP (and kubectl) rather than through the tools."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, ROOT, run_cli
from tests.support.sandbox_process import sandbox_with_bot
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the sandbox and the CLI as processes


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


def _http(url: str, *, headers: dict[str, str] | None = None, ca: str | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - local
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _pagerduty(sandbox: dict[str, str], path: str) -> Any:
    status, doc = _http(
        sandbox["PAGERDUTY_API_URL"] + path,
        headers={"Authorization": f"Token token={sandbox['PAGERDUTY_API_TOKEN']}"},
        ca=sandbox["PAGERDUTY_CA_BUNDLE"],
    )
    assert status == 200, doc
    return doc


def _posted(sandbox: dict[str, str], channel: str) -> list[dict[str, Any]]:
    _, messages = _http(sandbox["RUNBOOK_BOT_SANDBOX_SLACK"] + "/_sandbox/messages")
    return [m for m in messages if m["channel"] == channel and m["ephemeral_to"] is None]


def _oom_pods(sandbox: dict[str, str], region: str, cache: Path) -> list[str]:
    """Pods whose container was OOMKilled, as kubectl reads them."""
    done = subprocess.run(
        [
            str(shutil.which("kubectl")),
            "--context",
            region,
            "--cache-dir",
            str(cache),
            "get",
            "pods",
            "-A",
            "-o",
            "json",
        ],
        env={"KUBECONFIG": sandbox["KUBECONFIG"], "HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [
        pod["metadata"]["name"]
        for pod in json.loads(done.stdout)["items"]
        for status in pod["status"].get("containerStatuses", [])
        if status.get("lastState", {}).get("terminated", {}).get("reason") == "OOMKilled"
    ]


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is the oracle; it is preinstalled on this project's machines and CI",
)
def test_channel_incident_and_faults_act_on_the_running_sandbox(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in cli_env.items() if k != "RUNBOOK_BOT_LOG"}
    with sandbox_with_bot(env, ROOT) as sandbox:
        # --- sandbox.channel: the bot's posts in a channel, oldest first -------------------
        empty = invoke(["sandbox.channel", "C0NOBODY"], env)
        assert empty.returncode == 0 and "nothing posted in #C0NOBODY yet" in empty.stdout
        paused = run_cli(["drills.pause", "annual-dr-simulation", "--reason", "first"], env)
        assert paused.returncode == 0, paused.stderr
        resumed = run_cli(["drills.resume", "annual-dr-simulation"], env)
        assert resumed.returncode == 0, resumed.stderr
        wait_for(lambda: len(_posted(sandbox, "C0OPS")) >= 2, timeout=60, what="two posts")
        shown = invoke(["sandbox.channel", "#C0OPS"], env)
        assert shown.returncode == 0, shown.stderr
        posted = _posted(sandbox, "C0OPS")
        assert shown.stdout.count("--- #C0OPS") == len(posted)
        first = shown.stdout.index("paused by Alice: annual-dr-simulation (first)")
        assert first < shown.stdout.index("resumed by Alice: annual-dr-simulation; next at ")
        assert "paused by Alice" in posted[0]["text"]  # the emulator's order, oldest first

        # --- sandbox.incident: one in PagerDuty, its id printed ----------------------------
        before = _pagerduty(sandbox, "/incidents")["incidents"]
        bad = invoke(["sandbox.incident", "api 5xx", "--urgency", "urgent"], env)
        assert bad.returncode == 2 and "--urgency 'urgent': use high or low" in bad.stderr
        unknown = invoke(["sandbox.incident", "api 5xx", "--service", "PNOPE"], env)
        assert unknown.returncode == 2 and "no service 'PNOPE'" in unknown.stderr
        assert _pagerduty(sandbox, "/incidents")["incidents"] == before  # nothing created
        opened = invoke(
            ["sandbox.incident", "api 5xx in staging", "--service", "PSVCSTAG", "--urgency", "low"],
            env,
        )
        assert opened.returncode == 0, opened.stderr
        incident_id = opened.stdout.splitlines()[0]
        found = _pagerduty(sandbox, f"/incidents/{incident_id}")["incident"]
        assert found["title"] == "api 5xx in staging" and found["urgency"] == "low"
        assert found["service"]["id"] == "PSVCSTAG" and found["status"] == "triggered"
        # ... and the bot's own tasks find it (what the printed hint says to try).
        shown_incident = run_cli(["incident.show", incident_id], {**env, "RUNBOOK_USER": "dave"})
        assert shown_incident.returncode == 0, shown_incident.stderr
        assert "api 5xx in staging" in shown_incident.stdout

        # --- sandbox.fault: health, Prometheus signals, OOM; bad input changes nothing -----
        health = sandbox["RUNBOOK_BOT_SANDBOX_HEALTH"]
        for args, words in (
            (["nosuch"], "no fault 'nosuch'; known: oom, broken-image"),
            (["health", "--region", "eu-west-1"], "no region 'eu-west-1' in the sandbox"),
            (["oom", "--value", "lots"], "oom --value 'lots' is not a memory quantity"),
            (["oom"], "oom needs --value (a memory quantity"),
            (["error-rate", "--value", "8%"], "error-rate --value '8%' is not a number"),
            (["error-rate", "--value", "8"], "is a fraction from 0 to 1"),
            (["health", "--value", "1"], "health takes no --value"),
        ):
            refused = invoke(["sandbox.fault", *args], env)
            assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
            assert words in refused.stderr, (args, refused.stderr)
        assert _http(f"{health}/us-west-2/health")[0] == 200

        on = invoke(["sandbox.fault", "health", "--region", "us-west-2"], env)
        assert on.returncode == 0, on.stderr
        assert _http(f"{health}/us-west-2/health")[0] == 503
        assert _http(f"{health}/us-east-1/health")[0] == 200
        assert (
            invoke(["sandbox.fault", "health", "--region", "us-west-2", "--off"], env).returncode
            == 0
        )
        assert _http(f"{health}/us-west-2/health")[0] == 200

        def signal(metric: str, region: str) -> str:
            query = urllib.parse.quote(f'sum(rate({metric}{{region="{region}"}}[5m]))')
            _, doc = _http(f"{health}/api/v1/query?query={query}")
            return str(doc["data"]["result"][0]["value"][1])

        assert invoke(["sandbox.fault", "error-rate", "--value", "0.3"], env).returncode == 0
        assert signal("http_requests_total", "us-east-1") == "0.3"
        assert signal("http_requests_total", "us-west-2") == "0.3"
        assert invoke(["sandbox.fault", "error-rate", "--off"], env).returncode == 0
        assert signal("http_requests_total", "us-east-1") == "0.002"
        latency = ["sandbox.fault", "latency", "--region", "us-east-1", "--value", "2.5"]
        assert invoke(latency, env).returncode == 0
        assert signal("http_request_duration_seconds_bucket", "us-east-1") == "2.5"
        assert signal("http_request_duration_seconds_bucket", "us-west-2") == "0.18"

        cache = tmp_path / "kube-cache"
        assert _oom_pods(sandbox, "us-east-1", cache) == []
        oom = invoke(["sandbox.fault", "oom", "--region", "us-east-1", "--value", "3Gi"], env)
        assert oom.returncode == 0, oom.stderr
        assert "oom on in us-east-1: memory limits below 3Gi" in oom.stdout
        wait_for(lambda: _oom_pods(sandbox, "us-east-1", cache), timeout=30, what="OOMKilled")
        assert _oom_pods(sandbox, "us-west-2", cache) == []
        assert invoke(["sandbox.fault", "oom", "--off"], env).returncode == 0
        wait_for(lambda: not _oom_pods(sandbox, "us-east-1", cache), timeout=30, what="healed")


def _environment_of_service(service_id: str) -> str:
    """The oracle: which environment environments.yaml maps this PagerDuty service to."""
    import yaml

    document = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    [found] = [
        name
        for name, env in document["environments"].items()
        if service_id in ((env.get("pagerduty") or {}).get("services") or {})
    ]
    return str(found)


@pytest.mark.parametrize("service", ["PSVCPROD", "PSVCSTAG"])
def test_an_incident_s_next_step_is_in_the_incident_s_own_environment(
    service: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``invoke sandbox.incident`` against the sandbox's PagerDuty emulator (its env file as
    ``python -m sandbox up`` writes it): the hint it prints names the environment of the
    incident's service, never a fixed one (a production incident was pointed at staging)."""
    from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator

    pagerduty = PagerDutyEmulator(tmp_path / "pagerduty").start()
    try:
        sandbox = Path(cli_env["RUNBOOK_BOT_HOME"]) / "sandbox"
        sandbox.mkdir(parents=True)
        (sandbox / "env").write_text(
            f"export PAGERDUTY_API_URL={pagerduty.url}\n"
            f"export PAGERDUTY_CA_BUNDLE={pagerduty.ca_path}\n"
            f"export PAGERDUTY_API_TOKEN={SANDBOX_API_TOKEN}\n"
            # what marks a running sandbox to the tools (this test runs no Slack)
            "export RUNBOOK_BOT_SANDBOX_SLACK=http://127.0.0.1:9\n",
            encoding="utf-8",
        )
        opened = invoke(["sandbox.incident", "api 5xx", "--service", service], cli_env)
        assert opened.returncode == 0, opened.stdout + opened.stderr
        incident_id = opened.stdout.splitlines()[0]
        [incident] = [i for i in pagerduty.state.incidents.values() if i["id"] == incident_id]
        assert incident["service"]["id"] == service
        environment = _environment_of_service(service)
        hint = opened.stdout.splitlines()[-1]
        assert f"invoke rollback {environment} --incident {incident_id} --dry-run" in hint
        assert f"/incident {incident_id} rollback {environment} --dry-run" in hint
        other = {"PSVCPROD": "staging", "PSVCSTAG": "production"}[service]
        assert other not in hint, hint
    finally:
        pagerduty.stop()
