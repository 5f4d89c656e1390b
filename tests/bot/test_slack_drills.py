"""``/drills`` in Slack: the list, and a drill run by hand as a normal request (plan first)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.conftest import AwsWorld, run_cli
from tests.support.waiting import wait_for


@pytest.fixture
def slack_env_extra(aws: AwsWorld, health: Any, cluster: Any) -> dict[str, str]:
    """The bot also reaches the sandbox's AWS, /health and Atlas (a failover plan reads them)."""
    import os

    keys = ("PRODUCTION_MONGODB_URI", "ATLAS_API_URL", "ATLAS_PUBLIC_KEY", "ATLAS_PRIVATE_KEY")
    return {
        **aws.env,
        "RUNBOOK_BOT_SANDBOX_HEALTH": health.url,
        "RUNBOOK_BOT_SANDBOX_PROMETHEUS": health.url,
        **{key: os.environ[key] for key in keys},
    }


def test_drills_list_and_run_from_slack(world: SlackWorld) -> None:
    world.user("alice").command("/drills list")
    wait_for(lambda: len(ephemeral_to(world, "alice")) == 1, what="the drills")
    shown = ephemeral_to(world, "alice")[-1]["text"]
    assert "*monthly-restore-test* `restore.test` · next " in shown
    assert "*quarterly-partial-failover* `dr.failover` · next " in shown
    assert "EST)" in shown or "EDT)" in shown
    # Run by hand: the drill's request from the person, its plan first, nothing submitted.
    world.user("alice").command("/drills run quarterly-partial-failover")
    wait_for(lambda: len(ephemeral_to(world, "alice")) == 2, what="the drill's plan")
    plan = json.dumps(ephemeral_to(world, "alice")[-1])
    assert "10 %" in plan and "us-west-2" in plan, plan[:2000]
    assert "drill quarterly-partial-failover (run by hand)" in plan
    assert world.executions() == []
    world.user("alice").command("/drills run nope")
    wait_for(lambda: len(ephemeral_to(world, "alice")) == 3, what="the refusal")
    assert "no drill 'nope' in schedules.yaml" in ephemeral_to(world, "alice")[-1]["text"]


def test_a_drill_run_by_hand_from_slack_is_a_fire_recorded_and_announced(
    world: SlackWorld,
) -> None:
    """``/drills run NAME`` then Confirm: the execution names its drill, the drill's history
    has the fire with who ran it, and the drill's channel hears of it as of a scheduled fire."""
    alice = world.user("alice")
    alice.command("/drills run quarterly-partial-failover")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the drill's plan")
    assert alice.click("Confirm").status == 200
    wait_for(lambda: len(world.executions()) == 1, what="the submitted drill run")
    (execution,) = world.executions()
    assert execution.drill == "quarterly-partial-failover"
    assert execution.requester.id == "alice"

    posted = world.wait_for_message(
        lambda m: m["channel"] == "C0OPS" and "started: quarterly-partial-failover" in m["text"],
        what="the drill's announcement",
    )
    assert "run by hand by Alice" in posted["text"], posted["text"]
    assert f"dr.failover {execution.id}; awaiting 2 approval(s)" in posted["text"]

    history = run_cli(
        ["drills.history", "--name", "quarterly-partial-failover", "--json"], world.env
    )
    assert history.returncode == 0, history.stderr
    (row,) = json.loads(history.stdout)
    assert row["execution_id"] == execution.id and row["by"] == "Alice"
    assert row["state"] == "requested"
