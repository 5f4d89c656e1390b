"""``incident.*`` from a terminal against the TLS PagerDuty emulator (the official client in the
CLI process): list the environments' open incidents, show one with its notes, acknowledge,
note and resolve as the person at the terminal (From: their email), refusals that say why."""

from __future__ import annotations

import json

import pytest

from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses


@pytest.fixture
def emulator(pagerduty_emulator: PagerDutyEmulator) -> PagerDutyEmulator:
    return pagerduty_emulator


@pytest.fixture
def env(cli_env: dict[str, str], emulator: PagerDutyEmulator) -> dict[str, str]:
    return {
        **cli_env,
        "PAGERDUTY_API_URL": emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
    }


def test_list_show_ack_note_resolve(env: dict[str, str], emulator: PagerDutyEmulator) -> None:
    prod = emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    stag = emulator.open_incident("staging latency", "PSVCSTAG")["id"]
    emulator.open_incident("someone else's service", "PSVCOTHER")
    listed = run_cli(["incident.list"], env)
    assert listed.returncode == 0, listed.stderr
    assert prod in listed.stdout and "[production]" in listed.stdout
    assert stag in listed.stdout and "someone else" not in listed.stdout
    only = json.loads(run_cli(["incident.list", "--environment", "staging", "--json"], env).stdout)
    assert [i["id"] for i in only] == [stag]

    assert run_cli(["incident.ack", prod], env).stdout.strip() == f"{prod} acknowledged"
    noted = run_cli(["incident.note", prod, "rolled back api to 1.4.1"], env)
    assert noted.returncode == 0, noted.stderr
    shown = run_cli(["incident.show", prod], env)
    assert "acknowledged" in shown.stdout and "rolled back api to 1.4.1" in shown.stdout
    assert run_cli(["incident.resolve", prod], env).returncode == 0
    assert emulator.state.incidents[prod]["status"] == "resolved"
    senders = {c["from"] for c in emulator.calls(f"/incidents/{prod}") if c["method"] != "GET"}
    assert senders == {"alice@example.com"}  # RUNBOOK_USER=alice, her email in policy.yaml
    actions = run_cli(["audit.export", "--format", "jsonl"], env).stdout
    for action in ("incident.acknowledged", "incident.noted", "incident.resolved"):
        assert action in actions


def test_refusals_say_what_is_wrong(env: dict[str, str], cli_env: dict[str, str]) -> None:
    off = run_cli(["incident.list"], cli_env)
    assert off.returncode == 2 and "set PAGERDUTY_API_TOKEN" in off.stderr
    missing = run_cli(["incident.show", "PNOPE00"], env)
    # Not found is invalid input in the CLI contract: exit 2, and a sentence, not an HTTP code.
    assert missing.returncode == 2, missing.stderr
    assert "PagerDuty has no incident PNOPE00" in missing.stderr
    assert "incident.list" in missing.stderr
    unknown_ack = run_cli(["incident.ack", "PNOPE00"], env)
    assert unknown_ack.returncode == 2 and "no incident PNOPE00" in unknown_ack.stderr
    empty = run_cli(["incident.note", "PNOPE00", "  "], env)
    assert empty.returncode == 2 and "a note needs text" in empty.stderr
    plain = run_cli(["incident.list"], {**env, "PAGERDUTY_API_URL": "http://127.0.0.1:9"})
    assert plain.returncode == 2 and "must be an https:// URL" in plain.stderr
