"""``POST /webhooks/pagerduty``: PagerDuty's webhooks v3 (signed with ``X-PagerDuty-Signature``),
checked for age and replay, turned into runbook suggestions for the incident's card."""

from __future__ import annotations

import hmac
import json
import os
from typing import TYPE_CHECKING, Any

import structlog

from runbooks.engine import redact_value
from runbooks.engine.models import Actor, Origin

if TYPE_CHECKING:
    from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.webhooks")
#: The largest event accepted (PagerDuty's are a few KiB).
MAX_BODY = 1 << 20


PAGERDUTY = Actor("pagerduty", "PagerDuty", Origin.PAGERDUTY)
SEEN_KEY = "pagerduty.webhook.{}"
#: How old an event may be (PagerDuty signs no timestamp: ``occurred_at`` is what ages).
DEFAULT_MAX_AGE_S = 600.0
#: How far ahead of our clock an event may claim to be (clock skew). Further ahead, it is
#: refused: a signed event dated in the future would stay replayable until then.
DEFAULT_MAX_SKEW_S = 300.0
#: A delivery whose handling started this long ago and never finished (the process died) no
#: longer blocks PagerDuty's retry of it.
CLAIM_S = 60.0


def signature_matches(header: str, body: bytes, secrets: list[str]) -> bool:
    """``X-PagerDuty-Signature`` may hold several ``v1=<hex>`` entries, comma-separated (during
    a secret rotation): accept when any matches an HMAC-SHA256 of the raw body under any of
    our secrets, compared in constant time. Every pair is compared (no early exit)."""
    import hashlib

    wanted = [
        hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        for secret in secrets
        if secret
    ]
    matched = False
    for entry in header.split(","):
        version, _, value = entry.strip().partition("=")
        if version != "v1" or not value:
            continue
        for expected in wanted:
            matched |= hmac.compare_digest(value.strip().encode(), expected)
    return matched


class PagerDutyWebhook:
    """``POST /webhooks/pagerduty``: verified, de-duplicated on ``X-Webhook-Id``, fresh. An
    ``incident.triggered`` on a service that environments.yaml maps becomes a card in that
    environment's channel suggesting its runbooks (Run buttons: a click is a request from the
    clicker, linked to the incident). Everything is audited; nothing else changes."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        secrets: list[str] | None = None,
        max_age: float | None = None,
        max_skew: float | None = None,
    ) -> None:
        self.runtime = runtime
        raw = os.environ.get("PAGERDUTY_WEBHOOK_SECRETS", "")
        self.secrets = secrets if secrets is not None else [s for s in raw.split(",") if s]
        self.max_age = (
            max_age
            if max_age is not None
            else float(os.environ.get("PAGERDUTY_WEBHOOK_MAX_AGE") or DEFAULT_MAX_AGE_S)
        )
        self.max_skew = (
            max_skew
            if max_skew is not None
            else float(os.environ.get("PAGERDUTY_WEBHOOK_MAX_SKEW") or DEFAULT_MAX_SKEW_S)
        )

    def describe(self) -> str:
        if not self.secrets:
            return "refusing: PAGERDUTY_WEBHOOK_SECRETS is not set"
        return (
            f"on ({len(self.secrets)} secret(s), events up to {int(self.max_age)} s old "
            f"and {int(self.max_skew)} s ahead)"
        )

    def _audit(self, outcome: str, why: str, detail: dict[str, Any] | None = None) -> None:
        self.runtime.engine.audit.record(
            "webhook.pagerduty",
            actor=PAGERDUTY,
            outcome=outcome,
            target={"webhook": "pagerduty"},
            detail={"why": why, **(detail or {})},
        )

    def __call__(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._audit("400", "bad or missing Content-Length")
            return 400, {"error": "Content-Length must be a number up to 1 MiB"}
        body = environ["wsgi.input"].read(length) if length else b""
        if not self.secrets:
            self._audit("401", "no PAGERDUTY_WEBHOOK_SECRETS configured")
            return 401, {"error": "the bot has no PAGERDUTY_WEBHOOK_SECRETS: nothing can verify"}
        header = str(environ.get("HTTP_X_PAGERDUTY_SIGNATURE") or "")
        if not header:
            self._audit("401", "unsigned")
            return 401, {"error": "no X-PagerDuty-Signature"}
        if not signature_matches(header, body, self.secrets):
            self._audit("401", "signature does not match")
            return 401, {"error": "signature does not match"}
        webhook_id = str(environ.get("HTTP_X_WEBHOOK_ID") or "").strip()
        if not webhook_id or len(webhook_id) > 200:
            self._audit("400", "no X-Webhook-Id")
            return 400, {"error": "no X-Webhook-Id (PagerDuty sends one with every delivery)"}
        try:
            event_type, occurred, data = parse_event(body)
        except ValueError as exc:
            self._audit("400", f"malformed event: {exc}"[:300], {"webhook_id": webhook_id})
            return 400, {"error": f"body is not a PagerDuty v3 event: {exc}"}
        now = self.runtime.engine.clock.now()
        age = now - occurred
        if age > self.max_age:
            self._audit("401", "stale", {"age_s": round(age), "webhook_id": webhook_id})
            return 401, {
                "error": f"event is {round(age)} s old; the limit is {int(self.max_age)} s"
            }
        if -age > self.max_skew:
            self._audit(
                "401", "from the future", {"ahead_s": round(-age), "webhook_id": webhook_id}
            )
            return 401, {
                "error": f"event is dated {round(-age)} s ahead of the bot's clock; at most "
                f"{int(self.max_skew)} s of clock skew is accepted"
            }
        if not self._claim(webhook_id, now):
            self._audit("duplicate", "delivered before", {"webhook_id": webhook_id})
            return 200, {"duplicate": True}
        try:
            answer = self._handle(webhook_id, event_type, data)
        except BaseException:
            # Not handled: PagerDuty's retry of this delivery must not count as a duplicate.
            self.runtime.engine.store.kv_set(SEEN_KEY.format(webhook_id), {"failed": now})
            raise
        self.runtime.engine.store.kv_set(SEEN_KEY.format(webhook_id), {"handled": now})
        return answer

    def _claim(self, webhook_id: str, now: float) -> bool:
        """Take the delivery for handling: False when it was handled (or is being handled)."""
        store = self.runtime.engine.store
        key = SEEN_KEY.format(webhook_id)
        if store.kv_insert(key, {"handling": now}):
            return True
        seen = store.kv_get(key)
        abandoned = isinstance(seen, dict) and (
            "failed" in seen or now - float(seen.get("handling", now)) > CLAIM_S
        )
        return abandoned and store.kv_swap(key, seen, {"handling": now})

    def _handle(self, webhook_id: str, event_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        detail = {"webhook_id": webhook_id, "event_type": event_type, "incident": data.get("id")}
        if event_type != "incident.triggered":
            self._audit("ignored", "not incident.triggered", detail)
            return 200, {"ignored": event_type}
        suggestion = self._suggestion(data)
        if suggestion is None:
            self._audit("ignored", "service not mapped in environments.yaml", detail)
            return 200, {"ignored": "service not mapped"}
        engine = self.runtime.engine
        engine.store.append_event(
            None, "incident.suggest", redact_value(suggestion), engine.clock.now()
        )
        self._audit("suggested", "card posted", {**detail, "runbooks": suggestion["runbooks"]})
        return 200, {"suggested": suggestion["runbooks"]}

    def _suggestion(self, data: dict[str, Any]) -> dict[str, Any] | None:
        config = self.runtime.config
        service_id = str((data.get("service") or {}).get("id") or "")
        for name in config.environment_names():
            pagerduty = config.environment(name).pagerduty
            mapped = pagerduty.services.get(service_id) if pagerduty else None
            if pagerduty is None or mapped is None:
                continue
            channel = pagerduty.channel or config.policy.slack.approvals_channel(name)
            return {
                "channel": channel,
                "incident": str(data.get("id")),
                "title": str(data.get("title") or "")[:300],
                "url": str(data.get("html_url") or ""),
                "environment": name,
                "service": mapped.service,
                "runbooks": list(mapped.suggest),
            }
        return None


def parse_event(body: bytes) -> tuple[str, float, dict[str, Any]]:
    """``(event_type, occurred_at, data)`` of a v3 body, or ValueError saying what is wrong.
    Every field the bot reads is checked for its type here, so a signed but malformed body is
    a 400, never a 500."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc
    event = doc.get("event") if isinstance(doc, dict) else None
    if not isinstance(event, dict):
        raise ValueError("no event object")
    event_type, occurred_at = event.get("event_type"), event.get("occurred_at")
    if not isinstance(event_type, str) or not isinstance(occurred_at, str):
        raise ValueError("event.event_type and event.occurred_at must be strings")
    data = event.get("data")
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError("event.data must be an object")
    for name in ("id", "title", "html_url"):
        if data.get(name) is not None and not isinstance(data[name], str | int):
            raise ValueError(f"event.data.{name} must be a string")
    service = data.get("service")
    if service is not None and not isinstance(service, dict):
        raise ValueError("event.data.service must be an object")
    if service is not None and not isinstance(service.get("id") or "", str):
        raise ValueError("event.data.service.id must be a string")
    return event_type, _parse_time(occurred_at), data


def _parse_time(text: str) -> float:
    from datetime import datetime

    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("event.occurred_at has no time zone")
    return when.timestamp()
