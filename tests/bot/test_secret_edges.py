"""One corpus of planted secrets (tests/support/secrets_corpus.py) through every outbound path
a person's text reaches: pasted as a request's reason, a denial's reason and a cancellation's
reason, in the terminal, on a run linked to a PagerDuty incident, on a break-glass run and on a
drill run by hand. Then everything that left is read back where it landed: the CLI's output
and log, the bot's log, the audit log (stored and exported), the state store (executions,
events, cancellations, key-values), every Slack Web API call the emulator received, every
request the PagerDuty emulator received, and the drill report (Markdown and HTML). No secret
may appear anywhere; the facts around them must."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.pagerduty import SANDBOX_API_TOKEN, PagerDutyEmulator
from sandbox.slack import text_of
from tests.bot.conftest import SlackWorld
from tests.conftest import ROOT, run_cli
from tests.support.secrets_corpus import corpus_text, leaks, missing_facts
from tests.support.waiting import wait_for

REASON = corpus_text(" ; ")
SELFTEST_RULE = '{runbooks: "selftest", environments: ["*"], requesters: [sre], approvals: 0}'
#: selftest needs one approval and allows break-glass, so a request waits for a decision.
SELFTEST_GATED = (
    '{runbooks: "selftest", environments: ["*"], requesters: [sre], approvers: [sre], '
    "approvals: 1, break_glass: true}"
)


#: A drill whose runbook plans in this world (selftest), so one run by hand reaches the report.
EDGE_DRILL = """
  - name: edge-drill
    runbook: selftest
    params: {environment: staging}
    cron: "0 3 1 1 *"
    timezone: UTC
    channel: C0OPS
"""


@pytest.fixture
def slack_env_extra(pagerduty_emulator: PagerDutyEmulator, tmp_path: Path) -> dict[str, str]:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text((ROOT / "schedules.yaml").read_text().rstrip() + "\n" + EDGE_DRILL)
    return {
        "RUNBOOK_BOT_SCHEDULES": str(schedules),
        "PAGERDUTY_API_URL": pagerduty_emulator.url,
        "PAGERDUTY_CA_BUNDLE": str(pagerduty_emulator.ca_path),
        "PAGERDUTY_API_TOKEN": SANDBOX_API_TOKEN,
        "RUNBOOK_BOT_LOG": str(tmp_path / "bot.jsonl"),
    }


class Terminal:
    """The ``runbook`` command on the bot's store, as ``user``; keeps everything it printed."""

    def __init__(self, world: SlackWorld, log: Path) -> None:
        self.env = {**world.env, "RUNBOOK_BOT_LOG": str(log)}
        self.printed: list[str] = []

    def run(self, *args: str, user: str = "alice", code: int = 0) -> str:
        result = run_cli(list(args), {**self.env, "RUNBOOK_USER": user})
        self.printed += [result.stdout, result.stderr]
        assert result.returncode == code, (args, result.stdout, result.stderr)
        return result.stdout

    def submit(self, *args: str) -> str:
        out = self.run(*args, "--no-wait", "--yes", "--json", code=3)
        return str(json.loads(out)["id"])


def _shows(words: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: words in text_of(message)


def store_text(path: str) -> str:
    db = sqlite3.connect(path)
    try:
        parts = [
            *(str(r[0]) for r in db.execute("SELECT doc FROM executions")),
            *(str(r[0]) for r in db.execute("SELECT payload FROM events")),
            *(str(r[0]) for r in db.execute("SELECT doc FROM cancels")),
            *(str(r[0]) for r in db.execute("SELECT value FROM kv")),
            *(bytes(r[0]).decode() for r in db.execute("SELECT body FROM audit")),
        ]
    finally:
        db.close()
    return "\n".join(parts)


@pytest.mark.policy_edit(SELFTEST_RULE, SELFTEST_GATED)
def test_no_planted_secret_leaves_by_any_path_and_the_facts_do(
    world: SlackWorld, pagerduty_emulator: PagerDutyEmulator, tmp_path: Path
) -> None:
    incident = pagerduty_emulator.open_incident("api 5xx above 5 %", "PSVCPROD")["id"]
    terminal = Terminal(world, tmp_path / "cli.jsonl")

    # A request linked to the incident, with the corpus as its reason; then withdrawn with it.
    linked = terminal.submit("selftest", "staging", "--reason", REASON, "--incident", incident)
    terminal.run("runs.cancel", linked, "--reason", REASON)
    # A drill run by hand, denied with the corpus as the denial's reason.
    drill = str(
        json.loads(
            terminal.run("drills.run", "edge-drill", "--no-wait", "--yes", "--json", code=3)
        )["id"]
    )
    terminal.run("approvals.deny", drill, "--reason", REASON, "--yes", user="bob")
    # A break-glass run in production, linked to the incident.
    terminal.run(
        "selftest",
        "production",
        "--break-glass",
        "--reason",
        REASON,
        "--incident",
        incident,
        "--yes",
        "--workdir",
        "edges",
    )

    def finished_notes() -> int:
        notes = pagerduty_emulator.notes(incident)
        return sum(n["content"].startswith("Finished:") for n in notes)

    wait_for(lambda: finished_notes() == 2, what="both runs' outcome notes on the incident")
    for execution_id, state in ((linked, "cancelled"), (drill, "denied")):
        world.wait_for_message(_shows(f"`{execution_id}` — {state}"), what=state)

    report = terminal.run("drills.report", "--name", "edge-drill")
    html = tmp_path / "drills.html"
    terminal.run("drills.report", "--format", "html", "--out", str(html))
    exported = terminal.run("audit.export")

    landed: dict[str, str] = {
        "terminal output": "\n".join(terminal.printed),
        "CLI log": (tmp_path / "cli.jsonl").read_text(),
        "bot log": Path(world.env["RUNBOOK_BOT_LOG"]).read_text(),
        "state store": store_text(world.env["RUNBOOK_BOT_STATE"]),
        "audit export": exported,
        "Slack": json.dumps(world.slack.calls()),
        "PagerDuty": json.dumps(pagerduty_emulator.calls()),
        "drill report": report,
        "drill report (html)": html.read_text(),
    }
    assert {where: leaks(text) for where, text in landed.items() if leaks(text)} == {}
    # The sentences around the secrets arrived (json.dumps keeps the plain words).
    for where in ("audit export", "state store", "Slack", "PagerDuty", "drill report"):
        assert missing_facts(landed[where]) == [], where

    # Over-redaction: the break-glass record says how many approvals it bypassed.
    records = [json.loads(line) for line in exported.splitlines() if line.strip()]
    (glass,) = [r for r in records if (r.get("detail") or {}).get("bypassed_approvals") is not None]
    assert glass["detail"]["bypassed_approvals"] == 1
