"""``python -m sandbox slack|click``: act as a person in the sandbox workspace.

Reads the running sandbox's ``env`` file for the bot's URL, the signing secret and the Slack
emulator, sends one signed request, waits until the bot has stopped posting (or 15 s), and
prints what this person can now see that is new or changed: messages rendered as text, with
their buttons listed in brackets.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from bot.slack.render import REFUSAL_MARK
from runbooks.engine import Settings, read_sandbox_env
from sandbox.slack import AmbiguousButton, SlackUser, buttons_of, text_of

#: A refusal's exit code, as the CLI's (runbook_cli.program.EXIT_REFUSED).
EXIT_REFUSED = 2
QUIET_S = 1.5
MAX_WAIT_S = 15.0
#: An execution id as the bot shows it (``runbooks.engine.ids.new_execution_id``).
EXECUTION_ID = re.compile(r"\brb-[0-9a-f]{6}\b")


def _fingerprint(messages: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(m["channel"], m["ts"]): m["updates"] for m in messages}


def act(settings: Settings, args: argparse.Namespace) -> int:
    from runbooks.engine import load_config

    env = read_sandbox_env(settings.state_dir / "sandbox" / "env")
    if "RUNBOOK_BOT_SANDBOX_SLACK" not in env:
        print("the sandbox is not running: start it with `python3 dev.py serve` first")
        return 2
    config = load_config(settings.config_dir)
    person = config.policy.people.get(args.user)
    if person is None or not person.slack_id:
        known = ", ".join(k for k, p in config.policy.people.items() if p.slack_id)
        print(f"unknown person {args.user!r}; people with a Slack id: {known}")
        return 2
    user = SlackUser(
        person.slack_id,
        bot_url=env["RUNBOOK_BOT_URL"],
        slack_url=env["RUNBOOK_BOT_SANDBOX_SLACK"],
        signing_secret=env["SLACK_SIGNING_SECRET"],
        user_name=args.user,
    )
    if args.command == "dms":
        direct = [m for m in user.visible() if m["channel"] == person.slack_id]
        for message in direct:
            print(f"--- direct message to {args.user}")
            print(text_of(message))
        if not direct:
            print(f"no direct messages to {args.user}")
        return 0
    before = _fingerprint(user.visible())
    try:
        if args.command == "slack":
            delivery = user.command(args.text, channel=args.channel)
        else:
            message, button = user.pick(args.label, execution=args.execution, card=args.card)
            delivery = user.interaction(user.click_payload(message, button))
    except AmbiguousButton as exc:
        print(exc)
        return 2
    except LookupError as exc:
        print(exc)
        return 1
    except OSError as exc:
        print(f"the bot at {env['RUNBOOK_BOT_URL']} did not answer: {exc}")
        return 1
    if delivery.status != 200:
        print(f"the bot answered HTTP {delivery.status}: {delivery.body}")
        return 1
    refused = False
    # The request this is about: the card clicked (Approve on rb-…), the immediate answer
    # ("Submitted rb-…"); what the bot posts about it elsewhere is not "elsewhere".
    about: set[str] = set() if args.command == "slack" else executions_of(message)
    if delivery.body.strip():
        immediate = answer_text(delivery.body)
        about |= set(EXECUTION_ID.findall(immediate))
        refused = immediate.startswith(REFUSAL_MARK)
        print(f"--- the bot's immediate answer (only you)\n{immediate}")
    if args.command == "click" and args.label.lower() == "deny":
        view = _wait_for_view(user)
        if view is None:
            print("the bot opened no Deny dialog")
            return 1
        reason = args.reason or "denied from the sandbox"
        answer = user.view_submission(view, {"reason": reason})
        if answer.body.strip():
            print(f"--- the dialog's answer\n{answer_text(answer.body)}")
    here = args.channel if args.command == "slack" else message["channel"]
    changed = _print_changes(user, before, channel=here, about=about)
    if refused or any(
        m["ephemeral_to"] == user.user_id and text_of(m).startswith(REFUSAL_MARK) for m in changed
    ):
        # The bot refused what this person did (said privately above): a refusal's exit code,
        # as in a terminal.
        return EXIT_REFUSED
    return 0


def answer_text(body: str) -> str:
    """What Slack shows for an ack's body: its message as text (``{"text": …}`` or blocks),
    a dialog's field errors, or the body itself when it is not JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if not isinstance(document, dict):
        return body
    errors = document.get("errors")
    if document.get("response_action") == "errors" and isinstance(errors, dict):
        return "\n".join(f"{field}: {problem}" for field, problem in errors.items())
    return text_of(document) or body


def _wait_for_view(user: SlackUser) -> dict[str, Any] | None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        view = user.last_view()
        if view is not None:
            return view
        time.sleep(0.1)
    return None


def executions_of(message: dict[str, Any]) -> set[str]:
    """The execution ids a message names: in its text, or its buttons' values."""
    found = set(EXECUTION_ID.findall(text_of(message)))
    for button in buttons_of(message):
        found.update(EXECUTION_ID.findall(str(button.get("value", ""))))
    return found


def _print_changes(
    user: SlackUser,
    before: dict[tuple[str, str], int],
    *,
    channel: str | None,
    about: set[str] | frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Print what is new or changed for this person since ``before``; returns those messages.

    The answer first (what only you see, then the channel you typed in, then your direct
    messages); then what changed in other channels about the same request (``about``, and
    the executions the answer names: the approval card of the request a Confirm submitted),
    marked with its id; what changed elsewhere meanwhile (another run's card, a drill's
    announcement) last, marked ``elsewhere``: it may have nothing to do with what you typed."""
    # Wait for the bot's first answer (planning may take seconds: a DR plan reads DNS, both
    # regions, the database and /health), then until it has been quiet for QUIET_S.
    start = time.monotonic()
    last_change: float | None = None
    seen = before
    while time.monotonic() - start < MAX_WAIT_S and (
        last_change is None or time.monotonic() - last_change < QUIET_S
    ):
        time.sleep(0.2)
        now = _fingerprint(user.visible())
        if now != seen:
            seen, last_change = now, time.monotonic()
    changed = [m for m in user.visible() if before.get((m["channel"], m["ts"])) != m["updates"]]

    def placed(message: dict[str, Any]) -> int:
        if message["ephemeral_to"] == user.user_id:
            return 0
        if message["channel"] == channel:
            return 1
        return 2 if message["channel"] == user.user_id else 3

    ours = set(about)
    for message in changed:
        if placed(message) < 3:
            ours |= executions_of(message)

    def same_request(message: dict[str, Any]) -> list[str]:
        return sorted(executions_of(message) & ours)

    def rank(message: dict[str, Any]) -> int:
        where = placed(message)
        return where if where < 3 or same_request(message) else 4

    changed.sort(key=rank)  # stable: each group keeps Slack's order
    for message in changed:
        where = message["channel"]
        if where == user.user_id:
            where = "direct message to you"
        if message["ephemeral_to"]:
            where += " (only you)"
        if message["thread_ts"]:
            where += " (thread)"
        if rank(message) == 3:
            where += f" ({', '.join(same_request(message))}: the same request)"
        elif rank(message) == 4:
            where += " (elsewhere: meanwhile, maybe not about this)"
        print(f"--- #{where}")
        print(text_of(message))
    return changed
