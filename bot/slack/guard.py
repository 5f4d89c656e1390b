"""What stands between the internet and Bolt: size, signature and shape, then redaction out.

Inbound (``SlackGate.admit``): every request to ``/slack/events`` is checked before Bolt sees
it, so that a malformed request gets 400, 401 or 413 and never a 500 (slack_sdk's verifier
raises ``ValueError`` on a non-numeric timestamp, Bolt's WSGI adapter ``UnicodeDecodeError``
on a binary body, and a ``payload`` that is not a JSON object breaks its parsing):

1. a body over ``MAX_BODY`` bytes is refused with 413 before it is read (Slack's own requests
   are a few KB);
2. the signature headers must be present and the timestamp numeric, and the signature must
   verify (timestamps older than five minutes are refused): else 401;
3. the body must be UTF-8, and a form's ``payload`` or a JSON body a JSON object: else 400.

Refusals are anonymous (no verified identity): each is counted, and audited as a security
event at most once a minute per reason with the count since the last record, so a flood
cannot fill the audit log.

Outbound: ``RedactingWebClient`` and ``redacting`` mask anything credential-shaped in what is
posted to Slack (a token pasted into a ``--reason`` is repeated in the private plan reply
and in the Confirm button's value otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from slack_sdk import WebClient
from slack_sdk.web.slack_response import SlackResponse

from runbooks.engine import AuditLog, redact_text
from runbooks.engine.clock import Clock
from runbooks.engine.models import Actor, Origin

MAX_BODY = 64 * 1024
#: Slack's replay window: requests signed more than five minutes away are refused.
MAX_AGE_S = 300
AUDIT_EVERY_S = 60.0
ANONYMOUS = Actor(id="anonymous", name="anonymous", origin=Origin.SLACK)


def scrub(value: Any) -> Any:
    """Mask credential-shaped text in every string of a JSON-like value."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


#: Arguments that carry the credential Slack needs for the call itself: scrubbing them would
#: send a masked token (Socket Mode's ``apps.connections.open`` passes the app-level token
#: this way, and failed with ``invalid_auth`` until this list existed).
CREDENTIAL_ARGS = frozenset({"token"})


def _scrub_but_credentials(params: dict[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    return {k: v if k in CREDENTIAL_ARGS else scrub(v) for k, v in params.items()}


class RedactingWebClient(WebClient):
    """A WebClient whose every call's arguments pass through the redactor."""

    def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> SlackResponse:
        return super().api_call(
            api_method,
            http_verb=http_verb,
            files=files,
            data=scrub(data),
            params=_scrub_but_credentials(params),
            json=scrub(json),
            headers=headers,
            auth=auth,
        )


SendT = TypeVar("SendT", bound=Callable[..., Any])


def redacting(send: SendT) -> SendT:
    """Wrap ``respond`` or ``ack``: their text and blocks pass through the redactor."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return send(*scrub(list(args)), **scrub(kwargs))

    return cast(SendT, call)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # a code: too_large, unsigned, bad_signature, not_utf8, bad_payload
    message: str


class SlackGate:
    def __init__(self, signing_secret: str, *, audit: AuditLog, clock: Clock) -> None:
        self._secret = signing_secret.encode()
        self.audit = audit
        self.clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._last_audit: dict[str, float] = {}
        self.refused: dict[str, int] = {}  # totals by reason, for /metrics and tests

    def admit(self, environ: dict[str, Any]) -> Refusal | None:
        """Check the request; on success ``environ['wsgi.input']`` holds the body again."""
        refusal = self._check(environ)
        if refusal is not None:
            self._record(refusal, environ)
        return refusal

    def _check(self, environ: dict[str, Any]) -> Refusal | None:
        length_text = str(environ.get("CONTENT_LENGTH") or "0")
        if not length_text.isdigit():
            return Refusal(400, "bad_length", "Content-Length must be a number of bytes")
        length = int(length_text)
        if length > MAX_BODY:
            return Refusal(
                413, "too_large", f"request body of {length} bytes; at most {MAX_BODY} accepted"
            )
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        timestamp = str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP") or "")
        signature = str(environ.get("HTTP_X_SLACK_SIGNATURE") or "")
        if not timestamp.isdigit() or not signature.startswith("v0="):
            return Refusal(
                401,
                "unsigned",
                "X-Slack-Request-Timestamp (seconds) and X-Slack-Signature (v0=...) required",
            )
        if abs(self.clock.now() - int(timestamp)) > MAX_AGE_S:
            return Refusal(401, "stale", "the request timestamp is more than five minutes off")
        # Over the raw bytes (slack_sdk's verifier decodes the body first and raises on
        # bytes that are not UTF-8); compared in constant time.
        expected = (
            "v0="
            + hmac.new(
                self._secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256
            ).hexdigest()
        )
        if not hmac.compare_digest(expected, signature):
            return Refusal(401, "bad_signature", "invalid signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Refusal(400, "not_utf8", "the body is not UTF-8 text")
        content_type = str(environ.get("CONTENT_TYPE") or "")
        if content_type.startswith("application/json"):
            return None if _is_object(text) else _bad("the JSON body must be an object")
        form = urllib.parse.parse_qs(text, keep_blank_values=True)
        if "payload" in form and not _is_object(form["payload"][0]):
            return _bad("payload= must hold a JSON object")
        return None

    def _record(self, refusal: Refusal, environ: dict[str, Any]) -> None:
        now = self.clock.now()
        with self._lock:
            self.refused[refusal.reason] = self.refused.get(refusal.reason, 0) + 1
            self._counts[refusal.reason] = self._counts.get(refusal.reason, 0) + 1
            last = self._last_audit.get(refusal.reason)
            if last is not None and now - last < AUDIT_EVERY_S:
                return
            count, self._counts[refusal.reason] = self._counts[refusal.reason], 0
            self._last_audit[refusal.reason] = now
        self.audit.record(
            "security.slack_request_refused",
            actor=ANONYMOUS,
            outcome=refusal.reason,
            target={"path": "/slack/events"},
            detail={
                "status": refusal.status,
                "why": refusal.message,
                "remote": environ.get("REMOTE_ADDR"),
                "refused_since_last_record": count,
            },
        )


def _bad(message: str) -> Refusal:
    return Refusal(400, "bad_payload", message)


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
