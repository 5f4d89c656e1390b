"""What our buttons carry in their ``value``, typed: built when a card is rendered, read back
(and checked) when the button is clicked.

Slack caps a button's value at 2,000 characters and hands it back as the clicker's payload, so
it is short on the wire and never trusted: a click whose value is not what we wrote (an old
card, an altered payload) is ``ButtonNotUnderstood`` and nothing happens. The wire keys stay
what earlier releases wrote, so cards already in channels keep working after an upgrade.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

_EXECUTION_ID = re.compile(r"^rb-[0-9a-f]{6}$")


class ButtonNotUnderstood(Exception):
    """A signed click whose ``value`` is not what our buttons carry (an old or forged card)."""


def _object(action: dict[str, Any], *required: str) -> dict[str, Any]:
    """A button value holding a JSON object with ``required`` keys."""
    try:
        value = json.loads(str(action.get("value") or ""))
    except ValueError:
        raise ButtonNotUnderstood("value is not JSON") from None
    if not isinstance(value, dict):
        raise ButtonNotUnderstood("value is not a JSON object")
    missing = [key for key in required if key not in value]
    if missing:
        raise ButtonNotUnderstood(f"value lacks {', '.join(missing)}")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ButtonNotUnderstood(f"value's {what} is not text")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    return None if value is None or value == "" else _text(value, what)


@dataclass(frozen=True)
class ConfirmValue:
    """A plan's Confirm (and Cancel) button: the request exactly as shown, bound to the plan's
    hash and to the person who asked for it."""

    runbook: str
    params: dict[str, Any]
    plan_hash: str
    requester: str
    channel: str | None = None
    reason: str | None = None
    incident: str | None = None
    break_glass: bool = False
    drill: str | None = None
    trigger: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "r": self.runbook,
                "p": self.params,
                "h": self.plan_hash,
                "u": self.requester,
                "c": self.channel,
                "reason": self.reason,
                "incident": self.incident,
                "bg": self.break_glass,
                "d": self.drill,
                "t": self.trigger,
            },
            separators=(",", ":"),
        )

    def with_hash(self, plan_hash: str) -> ConfirmValue:
        return replace(self, plan_hash=plan_hash)

    @staticmethod
    def read(action: dict[str, Any]) -> ConfirmValue:
        value = _object(action, "r", "p", "h", "u")
        if not isinstance(value["p"], dict):
            raise ButtonNotUnderstood("value's parameters are not an object")
        return ConfirmValue(
            runbook=_text(value["r"], "runbook"),
            params=value["p"],
            plan_hash=_text(value["h"], "plan hash"),
            requester=_text(value["u"], "requester"),
            channel=_optional_text(value.get("c"), "channel"),
            reason=_optional_text(value.get("reason"), "reason"),
            incident=_optional_text(value.get("incident"), "incident"),
            break_glass=bool(value.get("bg")),
            drill=_optional_text(value.get("d"), "drill"),
            trigger=_optional_text(value.get("t"), "trigger"),
        )


@dataclass(frozen=True)
class IncidentRunValue:
    """A PagerDuty incident card's Run button: the suggested runbook for that incident."""

    runbook: str
    environment: str
    incident: str
    service: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "runbook": self.runbook,
                "environment": self.environment,
                "service": self.service,
                "incident": self.incident,
            },
            separators=(",", ":"),
        )

    @staticmethod
    def read(action: dict[str, Any]) -> IncidentRunValue:
        value = _object(action, "runbook", "environment", "incident")
        return IncidentRunValue(
            runbook=_text(value["runbook"], "runbook"),
            environment=_text(value["environment"], "environment"),
            incident=_text(value["incident"], "incident"),
            service=_optional_text(value.get("service"), "service"),
        )


def execution_value(action: dict[str, Any]) -> tuple[str, str]:
    """``execution id`` and the rest of an ``id:...`` button value (approve, deny, cancel,
    answer)."""
    value = action.get("value")
    if not isinstance(value, str):
        raise ButtonNotUnderstood("value is not text")
    execution_id, _, rest = value.partition(":")
    if not _EXECUTION_ID.match(execution_id):
        raise ButtonNotUnderstood("value does not start with an execution id")
    return execution_id, rest
