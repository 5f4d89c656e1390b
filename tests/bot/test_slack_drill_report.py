"""``/drills report`` in Slack: a drill run by hand from Slack (the real restore test, over the
sandbox's MongoDB and moto), then its report: the run's verdict and RTO/RPO in text, and the
trend chart uploaded to the channel as a PNG through ``files_upload_v2``."""

from __future__ import annotations

import pytest

from runbooks.engine.models import State
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.waiting import wait_for


@pytest.fixture
def slack_env_extra(production_backup: dict[str, str]) -> dict[str, str]:
    return production_backup


def test_a_drill_run_from_slack_then_its_report_with_the_chart_as_an_image(
    world: SlackWorld,
) -> None:
    alice = world.user("alice")
    alice.command("/drills report monthly-restore-test")
    wait_for(lambda: len(ephemeral_to(world, "alice")) == 1, what="the empty report")
    empty = ephemeral_to(world, "alice")[-1]["text"]
    summary = "0 of 0 passed, 0 with a missed objective"
    assert f"*monthly-restore-test* `restore.test` · {summary}" in empty
    assert world.slack.state.files == {}  # no run, no chart

    alice.command("/drills run monthly-restore-test")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the drill's plan")
    assert alice.click("Confirm").status == 200
    wait_for(
        lambda: any(e.state == State.SUCCEEDED for e in world.executions()),
        timeout=120,
        what="the restore test to pass",
    )
    (execution,) = world.executions()

    alice.command("/drills report")
    wait_for(lambda: len(ephemeral_to(world, "alice")) >= 3, what="the report")
    text = ephemeral_to(world, "alice")[-1]["text"]
    summary = "1 of 1 passed, 0 with a missed objective"
    assert f"*monthly-restore-test* `restore.test` · {summary}" in text
    assert f"*passed* · Alice {execution.id}" in text
    assert "RTO " in text and "/ 1h00m met" in text and "/ 24h00m" in text
    assert "*quarterly-partial-failover*" in text  # every drill, even without runs
    # The chart: one PNG for the one drill that ran, shared in the channel it was asked in.
    shared = world.wait_for_message(lambda m: bool(m["files"]), what="the chart")
    assert shared["channel"] == "C0OPS"
    assert shared["text"].startswith(f"monthly-restore-test: {summary}")
    (file,) = shared["files"]
    assert file["name"] == "monthly-restore-test-trend.png"
    data = world.slack.state.files[file["id"]]["data"]
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    methods = [c["method"] for c in world.slack.calls()]
    assert methods.count("files.getUploadURLExternal") == 1
    assert methods.count("files.completeUploadExternal") == 1
