"""Who may act on other people's work, drills and incidents, from a terminal (real processes,
one shared SQLite state): refusals are audited and change nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from runbooks.engine.models import State
from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from tests.conftest import ROOT, run_cli
from tests.support.held import start_held_selftest
from tests.support.state import drill_paused, everything_stored, stored

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses


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


DRILL = "quarterly-partial-failover"
#: Credentials a person might paste into a reason: a Slack bot token and a password.
PLANTED = ("xoxb-123456789012-plantedtoken", "hunter2planted")
SECRET_REASON = f"rotating {PLANTED[0]} and password={PLANTED[1]} this week"


def paused(env: dict[str, str]) -> dict[str, Any] | None:
    return drill_paused(env, DRILL)


def test_only_drill_operators_may_pause_resume_or_run_a_drill(cli_env: dict[str, str]) -> None:
    carol = as_user(cli_env, "carol")
    refused = run_cli(["drills.pause", DRILL, "--reason", "my release week"], carol)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Carol may not pause the drill {DRILL}; only sre may" in refused.stderr
    assert paused(cli_env) is None

    ok = run_cli(["drills.pause", DRILL, "--reason", "region migration week"], cli_env)
    assert ok.returncode == 0, ok.stderr
    assert paused(cli_env)["by"] == "Alice"
    refused = run_cli(["drills.resume", DRILL], carol)
    assert refused.returncode == 2 and "Carol may not resume the drill" in refused.stderr
    assert paused(cli_env)["reason"] == "region migration week"

    refused = run_cli(["drills.run", "monthly-restore-test", "--yes", "--json"], carol)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (
        "Carol may not run the drill monthly-restore-test" in json.loads(refused.stdout)["message"]
    )
    assert stored(cli_env, "SELECT id FROM executions") == []

    refusals = [r for r in audit(cli_env) if r["action"] == "drill.refused"]
    assert [(r["actor"]["id"], r["detail"]["verb"], r["target"]["drill"]) for r in refusals] == [
        ("carol", "pause", DRILL),
        ("carol", "resume", DRILL),
        ("carol", "run", "monthly-restore-test"),
    ]
    assert run_cli(["drills.resume", DRILL], as_user(cli_env, "bob")).returncode == 0
    assert paused(cli_env) is None


def test_a_pause_reason_is_masked_where_it_is_stored_and_echoed(cli_env: dict[str, str]) -> None:
    done = run_cli(["drills.pause", DRILL, "--reason", SECRET_REASON], cli_env)
    assert done.returncode == 0, done.stderr
    assert "paused: rotating xox?-*** and password=*** this week" in done.stdout
    listed = (
        run_cli(["drills.list"], cli_env).stdout
        + run_cli(["drills.list", "--json"], cli_env).stdout
    )
    everything = [done.stdout, listed, *everything_stored(cli_env)]
    assert any("rotating xox?-***" in text for text in everything[2:])  # the events row exists
    for planted in PLANTED:
        assert not [text for text in everything if planted in text], planted


def test_only_incident_responders_may_act_on_an_incident(
    cli_env: dict[str, str], pagerduty_emulator: PagerDutyEmulator
) -> None:
    """Carol (developers) is not in incidents.responders (sre, the on-call Slack group): her
    acknowledge, resolve and note are refused and audited before PagerDuty hears of them."""
    emulator = pagerduty_emulator
    env = {
        **cli_env,
        "PAGERDUTY_API_URL": emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
    }
    incident = emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    before = emulator.state.incidents[incident]["status"]
    for args, verb in (
        (["incident.ack", incident], "acknowledge"),
        (["incident.resolve", incident], "resolve"),
        (["incident.note", incident, "taking this one"], "note"),
    ):
        refused = run_cli(args, as_user(env, "carol"))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert (
            f"Carol may not {verb} PagerDuty incident {incident}; only sre, slack:S0ONCALL may"
            in refused.stderr
        )
    assert emulator.state.incidents[incident]["status"] == before == "triggered"
    assert [c for c in emulator.calls(f"/incidents/{incident}") if c["method"] != "GET"] == []
    assert emulator.notes(incident) == []
    refusals = [r for r in audit(env) if r["action"] == "incident.refused"]
    assert [(r["actor"]["id"], r["detail"]["verb"], r["incident"]) for r in refusals] == [
        ("carol", "acknowledge", incident),
        ("carol", "resolve", incident),
        ("carol", "note", incident),
    ]
    # Carol may still look; a responder's note reaches PagerDuty with its secrets masked.
    assert incident in run_cli(["incident.list"], as_user(env, "carol")).stdout
    noted = run_cli(["incident.note", incident, SECRET_REASON], env)
    assert noted.returncode == 0, noted.stderr
    (note,) = emulator.notes(incident)
    assert note["content"] == "rotating xox?-*** and password=*** this week"


@pytest.mark.parametrize(
    ("section", "error"),
    [
        (
            "incidents:\n  responders: [sre, oncall]\n",
            "incidents.responders: unknown group or person 'oncall'",
        ),
        ("incidents:\n  responder: [sre]\n", "incidents.responder"),
        ("incidents: [sre]\n", "incidents"),
        ("drills:\n  operators: [sre, ops]\n", "drills.operators: unknown group or person 'ops'"),
    ],
)
def test_a_bad_drills_or_incidents_section_is_refused_naming_it(
    cli_env: dict[str, str], tmp_path: Path, section: str, error: str
) -> None:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("example"))
    policy = config / "policy.yaml"
    text = policy.read_text()
    for key in (
        "drills:\n  operators: [sre]\n",
        "incidents:\n  responders: [sre, slack:S0ONCALL]\n",
    ):
        assert key in text
        text = text.replace(key, "")
    policy.write_text(text.replace("rules:\n", section + "rules:\n", 1))
    checked = run_cli(["config.check"], {**cli_env, "RUNBOOK_BOT_CONFIG": str(config)})
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert error in checked.stdout + checked.stderr
