"""``/drills`` in Slack: the list, and a drill run by hand as a normal request (plan first)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.conftest import AwsWorld
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
