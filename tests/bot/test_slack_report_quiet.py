"""A read-only report (``rollback.history``) is shown where it was asked for, stored and
audited, with no approval lines, no execution id and no direct message: from a terminal and
from Slack alike (the bot process, the Slack emulator, the Kubernetes sandbox)."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.slack import text_of
from tests.bot.conftest import PEOPLE, SlackWorld
from tests.conftest import run_cli
from tests.support.waiting import wait_for


def direct_messages(world: SlackWorld, user: str) -> list[str]:
    """What the bot wrote to this person privately (its DM channel is their user id)."""
    return [text_of(m) for m in world.messages(PEOPLE[user]) if not m["ephemeral_to"]]


def test_a_report_is_shown_stored_and_audited_without_approval_noise_or_a_dm(
    world: SlackWorld, tmp_path: Path
) -> None:
    terminal = {**world.env, "RUNBOOK_BOT_LOG": str(tmp_path / "cli-log.jsonl")}
    history = run_cli(["rollback.history", "production"], terminal)
    assert history.returncode == 0, history.stderr
    assert "app-api:1.4.1" in history.stdout and "app-api:1.4.2" in history.stdout
    assert "approval" not in history.stdout.lower(), history.stdout
    assert not re.search(r"\brb-[0-9a-f]{6}\b", history.stdout), history.stdout

    assert world.user("alice").command("/rollback history production").status == 200
    world.wait_for_message(
        lambda m: m["channel"] == "C0OPS" and "app-api:1.4.1" in text_of(m),
        what="the history report where it was asked for",
    )

    reports = [e for e in world.executions() if e.runbook == "rollback.history"]
    assert len(reports) == 2 and {e.state for e in reports} == {"succeeded"}
    audited = {r.get("execution_id") for r in world.audit_actions()}
    assert {e.id for e in reports} <= audited

    # A run that is not a report does get its outcome DM; the notifier delivers in order, so
    # once it is there, any DM about the two reports before it would be there too.
    ran = run_cli(["selftest", "development", "--yes"], terminal)
    assert ran.returncode == 0, ran.stderr
    wait_for(
        lambda: any("selftest" in text for text in direct_messages(world, "alice")),
        what="the selftest outcome DM",
    )
    assert not [t for t in direct_messages(world, "alice") if "rollback.history" in t]
