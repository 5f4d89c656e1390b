"""A read-only report typed in Slack comes back with its lines (end to end, the bot process)."""

from __future__ import annotations

from sandbox.slack import text_of
from tests.bot.conftest import SlackWorld


def test_rollback_history_in_slack_shows_the_revisions(world: SlackWorld) -> None:
    assert world.user("alice").command("/rollback history production").status == 200
    reply = world.wait_for_message(
        lambda m: m["ephemeral_to"] == "U0ALICE" or "rollback.history" in text_of(m),
        what="the history report",
    )
    shown = text_of(reply)
    assert "app-api:1.4.1" in shown and "app-api:1.4.2" in shown
    assert "no steps" not in shown
