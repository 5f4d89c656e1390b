"""``POST /webhooks/alertmanager``: Alertmanager's wire format (payload version 4) and its
authentication; the intake (``runbooks.engine.requesters.alerts``) decides.

Alertmanager cannot sign its notifications (alertmanager#4248); its receivers send a bearer
token (``http_config.authorization``) or basic auth (``http_config.basic_auth``). The bot
accepts either, compared in constant time with ``ALERTMANAGER_WEBHOOK_TOKEN`` (basic auth's
password; its user name must be ``ALERTMANAGER_WEBHOOK_USER``, default ``alertmanager``).
Answers: 200 with what was decided per alert; 400 with the reason for a body that is not a
version-4 payload; 401 without valid credentials; 413 over 1 MiB. Anything but 200 changes
nothing (it is audited as ``webhook.rejected``).
"""

from __future__ import annotations

import base64
import hmac
import json
import os
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runbooks.engine import ALERTMANAGER, Alert, AlertBatch, AlertIntake
from runbooks.engine.errors import InvalidInput

if TYPE_CHECKING:
    from runbooks.engine.wiring import Runtime

log = structlog.get_logger("runbook_bot.webhooks")
#: The largest notification accepted (Alertmanager sends a group's alerts in one body).
MAX_BODY = 1 << 20


class _Alert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str = ""
    fingerprint: str = ""


class _Notification(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str
    status: str = ""
    receiver: str = ""
    groupKey: str = ""
    alerts: list[_Alert]


def parse_notification(body: bytes) -> AlertBatch:
    """Alertmanager's webhook body (payload version 4) as the intake's ``AlertBatch``;
    InvalidInput says what is wrong."""
    if len(body) > MAX_BODY:
        raise InvalidInput(f"body of {len(body)} bytes is over the {MAX_BODY}-byte limit")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("body must be a JSON object (Alertmanager's webhook payload)")
    if str(doc.get("version")) != "4":
        raise InvalidInput(
            f"payload version {doc.get('version')!r} is not supported; Alertmanager's webhook "
            'payload version is "4"'
        )
    try:
        wire = _Notification.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"payload: {where}: {first['msg']}") from None
    return AlertBatch(
        alerts=[
            Alert(
                status=a.status,
                labels=dict(a.labels),
                annotations=dict(a.annotations),
                starts_at=a.startsAt,
                fingerprint=a.fingerprint,
            )
            for a in wire.alerts
        ],
        receiver=wire.receiver,
        group_key=wire.groupKey,
        status=wire.status,
    )


class AlertmanagerWebhook:
    def __init__(
        self, runtime: Runtime, *, token: str | None = None, user: str | None = None
    ) -> None:
        self.runtime = runtime
        self.token = token if token is not None else os.environ.get("ALERTMANAGER_WEBHOOK_TOKEN")
        self.user = user or os.environ.get("ALERTMANAGER_WEBHOOK_USER") or "alertmanager"
        self.intake = AlertIntake(runtime.engine, runtime.config.alerts)
        #: Called after an alert was accepted (wakes the follower that requests it).
        self.on_accepted: Any = None

    def describe(self) -> str:
        if self.token:
            return "on (bearer token or basic auth)"
        if not self.runtime.config.alerts.require_auth:
            return "on WITHOUT authentication (alerts.yaml require_auth: false)"
        return "refusing: ALERTMANAGER_WEBHOOK_TOKEN is not set"

    def _authenticated(self, environ: dict[str, Any]) -> str | None:
        """None when the request may pass, else why not."""
        if not self.token:
            if not self.runtime.config.alerts.require_auth:
                return None
            return (
                "the bot has no ALERTMANAGER_WEBHOOK_TOKEN, and alerts.yaml requires "
                "authentication: set the token on the bot and in Alertmanager's receiver"
            )
        header = str(environ.get("HTTP_AUTHORIZATION") or "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            if hmac.compare_digest(value.strip().encode(), self.token.encode()):
                return None
            return "wrong bearer token"
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return "malformed basic auth"
            same_user = hmac.compare_digest(user.encode(), self.user.encode())
            same_password = hmac.compare_digest(password.encode(), self.token.encode())
            if same_user and same_password:
                return None
            return "wrong basic auth user or password"
        return "no credentials: send Authorization: Bearer <token> or basic auth"

    def _reject(self, status: int, why: str, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.runtime.engine.audit.record(
            "webhook.rejected",
            actor=ALERTMANAGER,
            outcome=str(status),
            target={"webhook": "alertmanager", "source": str(environ.get("REMOTE_ADDR", ""))},
            detail={"why": why},
        )
        log.info("alertmanager webhook rejected", status=status, why=why)
        return status, {"error": why}

    def __call__(self, environ: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        refusal = self._authenticated(environ)
        if refusal is not None:
            return self._reject(401, refusal, environ)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return self._reject(400, "Content-Length is not a number", environ)
        if length > MAX_BODY:
            return self._reject(413, f"body over {MAX_BODY} bytes", environ)
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            notification = parse_notification(body)
        except InvalidInput as exc:
            return self._reject(400, exc.message, environ)
        done = self.intake.receive(notification, source=str(environ.get("REMOTE_ADDR", "")))
        if (done.count("accepted") or done.count("escalated")) and self.on_accepted is not None:
            self.on_accepted()
        return 200, done.to_doc()
