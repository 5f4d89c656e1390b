"""Every Slack listener, registered by ``register(app, ...)``: the slash commands
(``commands.py``) and the buttons and dialog (``actions.py``), over one shared kit
(``base.py``: identity, private answers, the work pool after the ack), and the one error
mapper (``errors.py``) as Bolt's global error handler and the work pool's."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bot.slack.commands import command_names
from bot.slack.handlers.actions import Actions
from bot.slack.handlers.base import Listening
from bot.slack.handlers.commands import Commands

if TYPE_CHECKING:
    from slack_bolt import App

    from bot.slack.notify import Notifier
    from runbooks.engine.wiring import Runtime


def register(
    app: App, runtime: Runtime, notifier: Notifier, kick: Callable[[], None]
) -> ThreadPoolExecutor:
    """Register every command, button and dialog listener on ``app``, and the error mapper as
    its error handler; returns the pool the work after each ack runs on (the caller drains it
    at shutdown)."""
    kit = Listening(runtime, notifier, kick)
    # What a listener raises on Bolt's thread; the work pool's wrapper calls the same mapper.
    app.error(kit.errors.bolt_error)
    commands = Commands(kit)
    actions = Actions(kit, commands)
    for name in command_names(runtime.engine.registry):
        app.command(name)(commands.on_command)
    for action_id, work in [
        ("rb_confirm", actions.on_confirm),
        ("rb_dismiss", actions.on_dismiss),
        ("rb_approve", actions.on_approve),
        ("rb_deny", actions.on_deny),
        ("rb_cancel_run", actions.on_cancel),
        ("rb_reconfirm", actions.on_reconfirm),
        ("rb_incident_run", actions.on_incident_run),
    ]:
        app.action(action_id)(kit.deferred(work))
    # One button per choice of a step's question (action ids are unique within a block).
    app.action(re.compile(r"^rb_answer_\d+$"))(kit.deferred(actions.on_answer))
    app.view("rb_deny_modal")(actions.on_deny_submitted)
    return kit.work
