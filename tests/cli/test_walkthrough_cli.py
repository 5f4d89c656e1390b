"""What a new user meets at the terminal (issue 29's walkthrough leftovers), through the real
CLI against the sandbox's Kubernetes emulators; the oracles are the emulators' own state
(read with kubectl or the cluster object), ``policy.yaml`` and ``environments.yaml`` read
with plain YAML."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import BIN, ROOT, KubeSandbox, run_cli
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the runbook CLI and invoke as subprocesses


@pytest.fixture
def env(cli_env: dict[str, str], kube: KubeSandbox) -> dict[str, str]:
    return {**cli_env, "KUBECONFIG": str(kube.kubeconfig)}


def _policy_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text(encoding="utf-8"))
    return list(document["rules"])


def _rule_index(runbook: str, environment: str) -> int:
    """The oracle for "which rule decides": the first rule naming this runbook (or *) and
    environment (or *), read from policy.yaml itself."""
    for index, rule in enumerate(_policy_rules()):
        runbooks, environments = rule["runbooks"], rule["environments"]
        glob = runbooks.endswith("*") and runbook.startswith(runbooks[:-1])
        if (runbooks in {"*", runbook} or glob) and (
            "*" in environments or environment in environments
        ):
            return index
    raise AssertionError(f"no rule for {runbook} in {environment}")


def _replicas(kube: KubeSandbox, namespace: str) -> int:
    done = kube.kubectl("get", "deploy", "api-deployment", "-n", namespace, "-o", "json")
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["spec"]["replicas"])


def test_a_request_that_needs_no_approval_says_so_not_approved(
    env: dict[str, str], kube: KubeSandbox
) -> None:
    rule = _rule_index("scale.pods", "development")
    assert _policy_rules()[rule]["approvals"] == 0
    done = run_cli(
        ["scale.pods", "development", "--service", "api", "--replicas", "5", "--yes"], env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f": no approval needed: policy.yaml rules[{rule}] (* in development)" in done.stdout
    assert ": approved" not in done.stdout  # nobody approved it
    assert _replicas(kube, "development") == 5


def test_a_request_that_needs_approval_says_at_once_who_approves_how_and_that_no_wait_returns(
    env: dict[str, str], kube: KubeSandbox
) -> None:
    rule = _policy_rules()[_rule_index("scale.pods", "staging")]
    assert rule["approvals"] == 1 and rule["approvers"] == ["sre"]
    before = _replicas(kube, "staging")
    waiting = subprocess.Popen(
        [str(BIN / "invoke"), "scale.pods", "staging", "--service=api", "--replicas=5", "--yes"],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert waiting.stdout is not None
        lines.extend(waiting.stdout)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("approval(s) before it runs" in x for x in lines), what="the news")
        said = next(x for x in lines if "approval(s) before it runs" in x)
        execution_id = said.split()[0]
        assert said.startswith(f"{execution_id} needs 1 approval(s) before it runs; this terminal")
        # Who may approve: the sre group's people from policy.yaml, never alice herself.
        assert "Who may approve: sre: Bob (bob), Dave (dave) (never the requester)" in said
        assert f"`invoke approvals.approve {execution_id}` or on the card in Slack" in said
        assert "Ctrl-C stops waiting" in said
        assert "with --no-wait the command prints the id and returns at once" in said
        assert waiting.poll() is None and _replicas(kube, "staging") == before  # it waits
        approved = run_cli(
            ["approvals.approve", execution_id, "--yes"], {**env, "RUNBOOK_USER": "bob"}
        )
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert waiting.wait(timeout=120) == 0, "".join(lines)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        reader.join(timeout=30)
        assert waiting.stdout is not None
        waiting.stdout.close()
    assert _replicas(kube, "staging") == 5
    # --no-wait: the id, exit 3 (pending), nothing scaled.
    pending = run_cli(
        ["scale.pods", "staging", "--service", "api", "--replicas", "6", "--yes", "--no-wait"],
        env,
    )
    assert pending.returncode == 3, pending.stdout + pending.stderr
    assert any(x.startswith("rb-") and len(x.split()) == 1 for x in pending.stdout.splitlines())
    assert _replicas(kube, "staging") == 5


def test_an_allowed_dry_run_says_so_and_by_whom_it_would_be_approved(
    env: dict[str, str], kube: KubeSandbox
) -> None:
    staging = _rule_index("rollback", "staging")
    development = _rule_index("rollback", "development")
    waits = run_cli(["rollback", "staging", "--dry-run"], env)
    assert waits.returncode == 0, waits.stderr
    assert (
        "the real request would be allowed now, then wait for 1 approval(s) from sre: "
        f"policy.yaml rules[{staging}] (rollback in staging)"
    ) in waits.stdout
    at_once = run_cli(["rollback", "development", "--dry-run", "--json"], env)
    assert at_once.returncode == 0, at_once.stderr
    document = json.loads(at_once.stdout)
    assert document["would_refuse"] is None and document["approvals"] == 0
    assert document["verdict"] == (
        "the real request would be allowed now and run without approval: "
        f"policy.yaml rules[{development}] (* in development)"
    )
    refused = run_cli(["rollback", "production", "--dry-run"], {**env, "RUNBOOK_USER": "carol"})
    assert refused.returncode == 0, refused.stderr
    assert "the real request would be refused now: Carol may not request rollback" in (
        refused.stdout
    )
    assert "would be allowed" not in refused.stdout


def test_the_banner_names_the_environment_used_not_its_tier(cli_env: dict[str, str]) -> None:
    document = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    tiers = {name: env["tier"] for name, env in document["environments"].items()}
    assert tiers["rehearsal"] == "staging"  # the case that read as another environment
    for environment, tier in tiers.items():
        done = run_cli(["selftest", environment, "--dry-run", "--json"], cli_env)
        assert done.returncode == 0, done.stderr
        label = done.stdout and json.loads(done.stdout)["banner"].split(" · ")[0]
        expected = environment.upper() + ("" if tier == environment else f" ({tier} tier)")
        assert label == expected, (environment, label)
    shown = run_cli(["selftest", "rehearsal", "--dry-run"], cli_env)
    assert shown.stdout.lstrip().startswith("REHEARSAL (staging tier) · config "), shown.stdout
    assert "STAGING" not in shown.stdout


def test_rollback_history_marks_the_releases_a_rollback_moved_away_from(
    env: dict[str, str], kube: KubeSandbox
) -> None:
    before = run_cli(["rollback.history", "development"], env)
    assert before.returncode == 0, before.stderr
    assert "rolled back" not in before.stdout
    done = run_cli(["rollback", "development", "--yes"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    execution_id = done.stdout.strip().splitlines()[-1].split()[1]
    # The oracle: kubectl's own history says which revision is current now.
    rollout = kube.kubectl("rollout", "history", "deploy/api-deployment", "-n", "development")
    assert rollout.returncode == 0, rollout.stderr
    after = run_cli(["rollback.history", "development"], env)
    assert after.returncode == 0, after.stderr
    lines = [x for x in after.stdout.splitlines() if "us-east-1 api-deployment revision" in x]
    marked = [x for x in lines if "✗ rolled back" in x]
    assert len(marked) == 1, after.stdout
    assert "revision 3: app-api:1.4.2" in marked[0]
    assert "rolled back at " in marked[0] and f"by {execution_id} (Alice)" in marked[0]
    current = [x for x in lines if "← current" in x]
    assert len(current) == 1 and "app-api:1.4.1" in current[0], after.stdout
    assert "revision 4" in current[0] and "4" in rollout.stdout.split()


@pytest.mark.parametrize("program", ["invoke", "runbook"])
def test_list_shows_a_collection_s_default_task_by_its_plain_name(
    program: str, tmp_path: Path
) -> None:
    listed = subprocess.run(
        [str(BIN / program), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PATH": str(BIN), "COLUMNS": "200", "XDG_CACHE_HOME": str(tmp_path)},
    )
    # `  name   description`; a wrapped description is indented further
    rows = [line for line in listed.stdout.splitlines()[1:] if line.strip()]
    names = [row.split()[0] for row in rows if not row.startswith(" " * 4)]
    assert "rollback.rollback" not in listed.stdout and "(rollback)" not in listed.stdout
    assert "rollback" in names and "rollback.history" in names
    assert names.index("rollback") + 1 == names.index("rollback.history")  # together, bare first
    # ... and the name listed is the one that runs it.
    help_text = subprocess.run(
        [str(BIN / program), "rollback", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={"PATH": str(BIN), "XDG_CACHE_HOME": str(tmp_path)},
    )
    assert help_text.returncode == 0 and "Roll a service back" in help_text.stdout
