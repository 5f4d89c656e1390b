"""``python -m sandbox slack|click`` (what ``invoke sandbox.slack`` and ``sandbox.click`` exec)
against a running bot and the Slack emulator: the bot's immediate answer is printed as the text
a person sees, and a button on one of several cards is chosen by execution or by number."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from runbooks.engine.models import State
from sandbox.slack import SANDBOX_SIGNING_SECRET
from tests.bot.conftest import SlackWorld, labels
from tests.conftest import ROOT
from tests.support.waiting import wait_for


def _workspace(world: SlackWorld, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the sandbox's workspace command with an env file that points at ``world``."""
    (home / "sandbox").mkdir(parents=True, exist_ok=True)
    (home / "sandbox" / "env").write_text(
        f"export RUNBOOK_BOT_URL={world.bot.base}\n"
        f"export RUNBOOK_BOT_SANDBOX_SLACK={world.slack.url}\n"
        f"export SLACK_SIGNING_SECRET={SANDBOX_SIGNING_SECRET}\n",
        encoding="utf-8",
    )
    env = {**world.env, "RUNBOOK_BOT_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "sandbox", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_immediate_answer_is_the_text_a_person_sees(world: SlackWorld, tmp_path: Path) -> None:
    typo = _workspace(
        world, tmp_path, "slack", "--as", "alice", "/rollback production --to-revison 2"
    )
    assert typo.returncode == 0, typo.stdout + typo.stderr
    assert "unknown flag --to-revison; did you mean --to-revision?" in typo.stdout
    assert "`/rollback ENVIRONMENT" in typo.stdout  # the right form follows
    assert '"text"' not in typo.stdout and "response_type" not in typo.stdout  # not raw JSON
    bare = _workspace(world, tmp_path, "slack", "--as", "alice", "/rollback")
    assert "missing ENVIRONMENT (one of: development, staging, production, rehearsal)" in (
        bare.stdout
    )
    assert world.executions() == []


def test_click_chooses_among_pending_cards(world: SlackWorld, tmp_path: Path) -> None:
    alice = world.user("alice")
    for text in ("/rollback staging", "/rollback production"):
        assert alice.command(text).status == 200
        wait_for(lambda: alice.find_button("Confirm") is not None, what=f"the plan of {text}")
        assert alice.click("Confirm").status == 200
        wait_for(lambda: alice.find_button("Confirm") is None, what="the plan confirmed")

    def pending() -> dict[str, str]:
        return {
            e.environment: e.id for e in world.executions() if e.state == State.AWAITING_APPROVAL
        }

    wait_for(lambda: len(pending()) == 2, what="two requests awaiting approval")
    ids = pending()
    wait_for(
        lambda: sum("Approve" in labels(m) for m in world.messages("C0APPROVALS")) == 2,
        what="two approval cards",
    )

    ambiguous = _workspace(world, tmp_path, "click", "--as", "bob", "Approve")
    assert ambiguous.returncode == 2, ambiguous.stdout + ambiguous.stderr
    assert "2 cards have a 'Approve' button; choose one with --execution ID or --card N" in (
        ambiguous.stdout
    )
    # Newest first: production's card is card 1, staging's card 2.
    assert f"card 1: {ids['production']} in #C0APPROVALS" in ambiguous.stdout
    assert f"card 2: {ids['staging']} in #C0APPROVALS" in ambiguous.stdout
    assert all(not e.valid_approvals() for e in world.executions())  # nothing was pressed

    unknown = _workspace(
        world, tmp_path, "click", "--as", "bob", "Approve", "--execution", "rb-000000"
    )
    assert unknown.returncode == 2 and "no 'Approve' button on a card of rb-000000" in (
        unknown.stdout
    )
    assert "card 1:" in unknown.stdout  # the candidates again

    second = _workspace(world, tmp_path, "click", "--as", "bob", "Approve", "--card", "2")
    assert second.returncode == 0, second.stdout + second.stderr

    def approved_by_bob() -> set[str]:
        return {
            e.environment
            for e in world.executions()
            if any(a.actor.id == "bob" for a in e.valid_approvals())
        }

    wait_for(lambda: approved_by_bob() == {"staging"}, what="bob's approval of staging only")

    chosen = _workspace(
        world,
        tmp_path,
        "click",
        "--as",
        "dave",
        "Approve",
        "--execution",
        ids["production"],
    )
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    wait_for(
        lambda: any(
            e.id == ids["production"] and any(a.actor.id == "dave" for a in e.valid_approvals())
            for e in world.executions()
        ),
        what="dave's approval of production",
    )


def test_a_refused_click_exits_2_and_shows_the_refusal(world: SlackWorld, tmp_path: Path) -> None:
    """Alice may not approve her own request: the bot refuses privately, nothing is approved,
    and ``sandbox.click`` exits 2 as a refused terminal command does (0 only when the bot
    took the click)."""
    alice = world.user("alice")
    assert alice.command("/rollback staging").status == 200
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the plan")
    assert alice.click("Confirm").status == 200
    wait_for(
        lambda: any("Approve" in labels(m) for m in world.messages("C0APPROVALS")),
        what="the approval card",
    )
    own = _workspace(world, tmp_path, "click", "--as", "alice", "Approve")
    assert own.returncode == 2, own.stdout + own.stderr
    assert ":no_entry: you requested rb-" in own.stdout, own.stdout
    [execution] = world.executions()
    assert execution.state == State.AWAITING_APPROVAL and not execution.valid_approvals()
    taken = _workspace(world, tmp_path, "click", "--as", "bob", "Approve")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    wait_for(
        lambda: any(a.actor.id == "bob" for e in world.executions() for a in e.valid_approvals()),
        what="bob's approval",
    )


def test_the_answer_comes_first_and_what_changed_elsewhere_is_marked(capsys: Any) -> None:
    """The walkthrough typed one command and read a drill's announcement and another run's
    card before the answer: the answer (only you, then the channel typed in, then direct
    messages) comes first; the rest follows, marked as elsewhere."""
    from sandbox.workspace import _print_changes

    def message(channel: str, ts: str, text: str, ephemeral_to: str | None = None) -> Any:
        return {"channel": channel, "ts": ts, "updates": 0, "text": text,
                "ephemeral_to": ephemeral_to, "thread_ts": None, "blocks": []}  # fmt: skip

    class Person:  # what _print_changes reads of a SlackUser: who, and what they can see
        user_id = "U0ALICE"

        def visible(self) -> list[dict[str, Any]]:
            return [
                message("C0APPROVALS", "1.1", "another run's card"),
                message("C0DRILLS", "1.2", "a drill starts in 15 minutes"),
                message("U0ALICE", "1.3", "a direct message"),
                message("C0OPS", "1.4", "the answer in the channel"),
                message("C0OPS", "1.5", "only alice sees this", ephemeral_to="U0ALICE"),
            ]

    shown = _print_changes(Person(), {}, channel="C0OPS")  # type: ignore[arg-type]
    assert [m["text"] for m in shown] == [
        "only alice sees this",
        "the answer in the channel",
        "a direct message",
        "another run's card",
        "a drill starts in 15 minutes",
    ]
    out = capsys.readouterr().out
    assert "--- #C0DRILLS (elsewhere: meanwhile, maybe not about this)" in out
    assert out.index("only alice sees this") < out.index("a drill starts in 15 minutes")


def test_confirm_shows_the_card_of_the_request_it_submitted_as_that_request(
    world: SlackWorld, tmp_path: Path
) -> None:
    """The walkthrough: ``sandbox.click --as alice Confirm`` printed the approval card of the
    request just submitted as "elsewhere: meanwhile, maybe not about this" (it is in another
    channel than the plan). It is that request: marked with its id, right after the answer."""
    alice = world.user("alice")
    assert alice.command("/rollback staging").status == 200
    wait_for(lambda: alice.find_button("Confirm") is not None, what="the plan")
    confirmed = _workspace(world, tmp_path, "click", "--as", "alice", "Confirm")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    [execution] = world.executions()
    out = confirmed.stdout
    assert f"--- #C0APPROVALS ({execution.id}: the same request)" in out, out
    assert "elsewhere" not in out, out
    assert out.index(f"Submitted `{execution.id}`") < out.index("--- #C0APPROVALS"), out


def test_what_names_the_request_acted_on_is_marked_so_and_the_rest_stays_elsewhere(
    capsys: Any,
) -> None:
    from sandbox.workspace import _print_changes

    def message(channel: str, ts: str, text: str, ephemeral_to: str | None = None) -> Any:
        return {"channel": channel, "ts": ts, "updates": 0, "text": text,
                "ephemeral_to": ephemeral_to, "thread_ts": None, "blocks": []}  # fmt: skip

    card = message("C0APPROVALS", "1.2", "")
    card["blocks"] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*rollback* `rb-0a1b2c`"}},
        {
            "type": "actions",
            "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Approve"},
                 "value": "rb-0a1b2c:approve"},
            ],
        },
    ]  # fmt: skip

    class Person:
        user_id = "U0ALICE"

        def visible(self) -> list[dict[str, Any]]:
            return [
                message("C0APPROVALS", "1.1", "*rollback* `rb-999999` — awaiting_approval"),
                card,
                message("C0DRILLS", "1.3", "a drill starts in 15 minutes"),
                message("C0OPS", "1.4", "Submitted `rb-0a1b2c`", ephemeral_to="U0ALICE"),
            ]

    shown = _print_changes(Person(), {}, channel="C0OPS")  # type: ignore[arg-type]
    assert [m["ts"] for m in shown] == ["1.4", "1.2", "1.1", "1.3"]
    out = capsys.readouterr().out
    assert "--- #C0APPROVALS (rb-0a1b2c: the same request)\n*rollback* `rb-0a1b2c`" in out
    assert out.count("(elsewhere: meanwhile, maybe not about this)") == 2
    # The card clicked names its request even when the answer does not.
    _print_changes(Person(), {}, channel="C0OPS", about={"rb-999999"})  # type: ignore[arg-type]
    assert "--- #C0APPROVALS (rb-999999: the same request)" in capsys.readouterr().out
