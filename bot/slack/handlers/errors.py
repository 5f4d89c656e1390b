"""The one place where an error a Slack listener raises, or the work it hands to the pool
after its ack, becomes what the person sees (issue #31).

Two roads lead to ``ErrorMapper.answer``:

* Bolt's global error handler (``app.error(mapper.bolt_error)``, in ``register``): what a
  listener function raises on Bolt's listener thread. Bolt passes it ``ack``, ``respond`` and
  ``body``, and, while the request is not yet acknowledged, the HTTP response it will send
  (status 500 unless the handler returns a ``BoltResponse``): the answer is then that response,
  a 200 carrying the private text (or, in a dialog, the error under its field). After an ack
  Bolt passes no response and the answer goes out like one after the ack. Requests no listener
  takes come here too (``App(raise_error_for_unhandled_request=True)``): logged, and Bolt's 404
  kept. Bolt's handler never sees what runs elsewhere: lazy listeners (not used here) only log,
  and our work pool is ours.
* The work pool (``Listening.later``): most work runs after the ack on threads Bolt does not
  know; their wrapper hands what they raise to the same ``answer``.

What the person sees, by error (``said``): a ``RunbookError`` (a refusal of any
``RefusalKind``, ``NotFound``, ``StoreFull``...) is its message and hint after the refusal
mark; a command's ``UsageError`` is a warning with the right form; a button whose value is not
ours is ``NOT_UNDERSTOOD``; anything else is ``UNEXPECTED`` (never the error's own text) and a
traceback in the log. Where: in the ack while Slack waits for it, else a command's
``response_url`` (private by default) or, for a button, privately to the clicker (``whisper``).
Everything sent passes the redactor, as the listeners' own answers do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from slack_bolt import Ack, BoltResponse, Respond
from slack_bolt.error import BoltUnhandledRequestError

from bot.slack.buttons import ButtonNotUnderstood
from bot.slack.commands import UsageError
from bot.slack.guard import redacting
from bot.slack.render import REFUSAL_MARK
from runbooks.engine.errors import RunbookError, StoreFull

log = structlog.get_logger("runbook_bot.slack")

NOT_UNDERSTOOD = (
    ":warning: I did not understand that button (it may come from an old or altered "
    "message); nothing was done. Run the command again for a fresh one."
)
UNEXPECTED = (
    ":warning: Something went wrong in the bot; its log has the details for the operators. "
    "`/runbook list` shows whether anything started."
)
#: A dialog's error is shown under its field; Slack keeps it short.
FIELD_ERROR_MAX = 150

Whisper = Callable[[dict[str, Any], str, Respond | None], None]


def error_text(exc: RunbookError) -> str:
    """A ``RunbookError`` as the person reads it: what was wrong, then the hint."""
    if isinstance(exc, UsageError):  # bad command text: a warning and the right form
        return f":warning: {exc.message}\n{exc.hint or ''}".rstrip()
    text = f"{REFUSAL_MARK} {exc.message}"
    if exc.hint:
        text += f"\n{exc.hint}"
    return text


def said(error: Exception) -> str:
    """What the person is told about ``error``."""
    if isinstance(error, RunbookError):
        return error_text(error)
    if isinstance(error, ButtonNotUnderstood):
        return NOT_UNDERSTOOD
    return UNEXPECTED


def field_error(error: Exception) -> str:
    """``error`` under a dialog's field: the message alone (the field is the context)."""
    text = error.message if isinstance(error, RunbookError) else UNEXPECTED
    return text[:FIELD_ERROR_MAX]


def where(body: dict[str, Any]) -> dict[str, Any]:
    """Which listener a request went to, for the log line."""
    if body.get("command"):
        return {"command": body["command"]}
    actions = body.get("actions") or [{}]
    if body.get("type") == "block_actions":
        return {"action_id": actions[0].get("action_id")}
    if body.get("type") == "view_submission":
        return {"callback_id": (body.get("view") or {}).get("callback_id")}
    return {"type": body.get("type")}


def _logged(error: Exception, body: dict[str, Any], work: str | None) -> None:
    place = where(body)
    if work is not None:
        place["work"] = work
    if isinstance(error, StoreFull):  # one line, no traceback: the message says it all
        log.error("state store full", **place, error=error.message)
    elif isinstance(error, ButtonNotUnderstood):
        user = (body.get("user") or {}).get("id")
        log.warning("slack button not understood", **place, user=user, why=str(error))
    elif not isinstance(error, RunbookError):  # refusals are the engine's to audit and log
        log.error("slack work failed", **place, exc_info=error)


def _first_field(body: dict[str, Any]) -> str | None:
    blocks = (body.get("view") or {}).get("blocks") or []
    return next((b.get("block_id") for b in blocks if b.get("type") == "input"), None)


class ErrorMapper:
    """Turns an error raised while serving a request into the person's answer; ``whisper``
    answers a button's clicker privately (``Listening.whisper``)."""

    def __init__(self, whisper: Whisper) -> None:
        self.whisper = whisper

    def bolt_error(
        self,
        error: Exception,
        body: dict[str, Any],
        ack: Ack,
        respond: Respond | None,
        response: BoltResponse | None,
    ) -> BoltResponse | None:
        """Bolt's global error handler (``app.error``): Bolt fills these arguments by name.
        ``response`` is None once the listener has acknowledged the request."""
        if isinstance(error, BoltUnhandledRequestError):
            log.warning("slack request not handled", **where(body))
            return None  # Bolt answers 404, as it does without this handler
        unanswered = response is not None and ack.response is None
        return self.answer(
            error,
            body,
            redacting(respond) if respond is not None else None,
            ack=redacting(ack) if unanswered else None,
        )

    def answer(
        self,
        error: Exception,
        body: dict[str, Any],
        respond: Respond | None,
        *,
        ack: Ack | None = None,
        work: str | None = None,
    ) -> BoltResponse | None:
        """Log ``error`` as it deserves and tell the person. ``ack``: the request is not
        acknowledged yet, and the answer returned is Bolt's HTTP response. ``respond`` and
        ``ack`` must already redact (the listeners' are wrapped by ``redacting``)."""
        _logged(error, body, work)
        acked: BoltResponse | None = None
        try:
            if ack is not None:
                if body.get("type") == "view_submission":
                    field = _first_field(body)
                    if field is None:
                        return ack()  # no field to show it under: the dialog closes
                    return ack(response_action="errors", errors={field: field_error(error)})
                if body.get("command"):
                    return ack(text=said(error), response_type="ephemeral")
                acked = ack()  # a button's ack carries no text: answered below, privately
            if body.get("command"):
                if respond is not None:
                    respond(text=said(error))
            else:
                self.whisper(body, said(error), respond)
        except Exception:  # the answer itself failed (Slack unreachable): logged, not raised
            log.exception("slack error answer failed", **where(body), error=type(error).__name__)
        return acked
