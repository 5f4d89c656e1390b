"""The bot on a state store whose disk fills up (a real tmpfs, filled): a Slack requester is
told what happened and what to do, and the bot's log says it in one line per loop, with no
traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.small_disk import SmallDisk
from tests.support.waiting import wait_for


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk")
    try:
        yield small
    finally:
        small.unmount()


@pytest.fixture
def slack_env_extra(disk: SmallDisk, tmp_path: Path) -> dict[str, str]:
    return {
        "RUNBOOK_BOT_STATE": str(disk.path / "state.db"),
        "RUNBOOK_BOT_LOG": str(tmp_path / "bot.jsonl"),
    }


def test_a_full_store_is_said_to_the_requester_and_logged_in_one_line(
    world: SlackWorld, disk: SmallDisk
) -> None:
    alice = world.user("alice")
    alice.command("/selftest development", channel="C0OPS")
    wait_for(lambda: alice.find_button("Confirm") is not None, what="alice's plan")
    disk.fill()
    before = len(ephemeral_to(world, "alice"))
    assert alice.click("Confirm").status == 200
    wait_for(lambda: len(ephemeral_to(world, "alice")) > before, what="the answer to Confirm")
    said = ephemeral_to(world, "alice")[-1]["text"]
    state = disk.path / "state.db"
    assert f"the state store at {state} is full; free space and try again" in said

    log = Path(world.env["RUNBOOK_BOT_LOG"])
    wait_for(lambda: '"state store full"' in log.read_text(), what="the log line")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    full = [e for e in lines if e.get("event") == "state store full"]
    # One line per place that met it (the housekeeper sweeps every 0.3 s: still one line).
    places = [e.get("where") or e.get("work") or e.get("action_id") for e in full]
    assert len(places) == len(set(places)), places
    assert all(str(state) in e["error"] for e in full)
    assert "Traceback" not in log.read_text()
    output = world.bot.stop()  # everything else it printed (stdlib logging, stderr)
    assert "Traceback" not in output, output[-3000:]
