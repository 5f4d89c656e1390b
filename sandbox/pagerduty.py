"""A local PagerDuty over TLS: the REST API v2 and Events API v2 parts the bot uses, and the
webhooks v3 PagerDuty would send.

The official ``pagerduty`` package refuses base URLs that are not ``https://``, so the
emulator serves TLS with a throwaway certificate authority (``trustme``): its CA file is what
``PAGERDUTY_CA_BUNDLE`` names. It answers, checking ``Authorization: Token token=<key>``:

- ``GET /incidents`` (``statuses[]``, ``service_ids[]``, classic ``offset``/``limit``
  pagination), ``GET /incidents/{id}``, ``PUT /incidents/{id}`` (status ``acknowledged`` or
  ``resolved``, needs a ``From`` header naming a known user's email), ``POST`` and ``GET
  /incidents/{id}/notes`` (``From`` required), ``GET /services``, ``GET /abilities``;
- ``POST /v2/enqueue`` (Events API v2: ``routing_key``, ``event_action`` trigger /
  acknowledge / resolve, ``dedup_key``): a trigger opens an incident on the routing key's
  service or adds to the open one with that key; resolve resolves it; 202 with the key.

It records every request and can answer ``429`` with PagerDuty's ``ratelimit-reset`` (and
``Retry-After``) when asked (``rate_limit(path_prefix, count, reset=seconds)``).
``send_webhook(url, secret, event_type, incident)`` posts a v3 webhook with
``X-PagerDuty-Signature: v1=<HMAC-SHA256>`` and ``X-Webhook-Id``.

Sandbox hooks (not PagerDuty's API, no token): ``POST /_sandbox/incidents {"title": ...,
"service_id": "PSVCSTAG", "urgency": "low"}`` opens an incident (``invoke sandbox.incident``);
``POST /_sandbox/rate_limit {"path_prefix": "/", "count": 3}`` makes the next calls answer
429 (``invoke sandbox.fault pagerduty-429``); ``POST /_sandbox/revoke {"revoked": true}``
makes the REST token answer 401 (``false`` restores it). Bad input answers 400.

Gaps: no users/escalation policies/schedules API, no alerts API, no cursor pagination, no
incident priorities or urgencies beyond a field, one page of notes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import ssl
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandbox.local_http import JsonHandler, LocalServer, QuietServer

SANDBOX_API_TOKEN = "sandbox-pagerduty-token"  # noqa: S105 - the local emulator's own
SANDBOX_ROUTING_KEY = "R0SANDBOXROUTINGKEY0000000000000"
SANDBOX_WEBHOOK_SECRET = "sandbox-pagerduty-webhook-secret"  # noqa: S105
USERS = {"alice@example.com": "PUALICE", "bob@example.com": "PUBOB", "dave@example.com": "PUDAVE"}
#: Services of the sandbox (id → name, environment); config/environments.yaml maps them.
SERVICES = {
    "PSVCPROD": {"name": "api (production)", "environment": "production"},
    "PSVCSTAG": {"name": "api (staging)", "environment": "staging"},
}

URGENCIES = ("high", "low")
#: What ``GET /abilities`` lists (PagerDuty's account abilities; any valid token reads them).
ABILITIES = ("teams", "read_only_users", "service_support_hours", "urgencies")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PagerDutyState:
    token: str = SANDBOX_API_TOKEN
    routing_keys: dict[str, str] = field(default_factory=lambda: {SANDBOX_ROUTING_KEY: "PSVCPROD"})
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    rate_limits: dict[str, int] = field(default_factory=dict)
    rate_limit_reset: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_incident(
        self,
        title: str,
        service_id: str,
        *,
        dedup_key: str | None = None,
        number: int | None = None,
    ) -> dict[str, Any]:
        n = number or next(self._ids)
        incident_id = f"P{n:05d}X"
        incident = {
            "id": incident_id,
            "type": "incident",
            "incident_number": n,
            "title": title,
            "status": "triggered",
            "urgency": "high",
            "created_at": _now_iso(),
            "incident_key": dedup_key,
            "service": {
                "id": service_id,
                "type": "service_reference",
                "summary": SERVICES.get(service_id, {}).get("name", service_id),
            },
            "html_url": f"https://sandbox.pagerduty.local/incidents/{incident_id}",
            "alert_counts": {"triggered": 1, "resolved": 0, "all": 1},
        }
        self.incidents[incident_id] = incident
        self.notes[incident_id] = []
        return incident


class _Handler(JsonHandler):
    server: _Server

    def _handle(self, method: str) -> None:
        state = self.server.state
        parsed = urllib.parse.urlparse(self.path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        try:
            body = self._body() if method in ("POST", "PUT") else {}
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "Invalid JSON", "code": 2001}})
            return
        with state.lock:
            state.calls.append(
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "body": body,
                    "from": self.headers.get("From"),
                    "at": time.time(),
                }
            )
            if path.startswith("/_sandbox/") and method == "POST":
                self._sandbox(state, path, body)
                return
            for prefix, count in list(state.rate_limits.items()):
                if path.startswith(prefix) and count > 0:
                    state.rate_limits[prefix] = count - 1
                    reset = str(state.rate_limit_reset)
                    self._send(
                        429,
                        {"error": {"message": "Rate Limit Exceeded"}},
                        {
                            "ratelimit-limit": "960",
                            "ratelimit-remaining": "0",
                            "ratelimit-reset": reset,
                            "Retry-After": reset,
                        },
                    )
                    return
            if path == "/v2/enqueue":
                self._enqueue(state, body)
                return
            auth = self.headers.get("Authorization", "")
            if auth != f"Token token={state.token}":
                self._send(401, {"error": {"message": "Unauthorized", "code": 2006}})
                return
            self._rest(state, method, path, query, body)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    # --- sandbox hooks (never part of PagerDuty's API) -----------------------------------

    def _sandbox(self, state: PagerDutyState, path: str, body: Any) -> None:
        if not isinstance(body, dict):
            self._send(400, {"error": {"message": "a JSON object is required", "code": 2001}})
            return
        if path == "/_sandbox/incidents":
            title = body.get("title")
            service = body.get("service_id", "PSVCPROD")
            urgency = body.get("urgency", "high")
            problem = None
            if not isinstance(title, str) or not title.strip() or len(title) > 1024:
                problem = "title: a non-empty string of at most 1024 characters"
            elif service not in SERVICES:
                problem = f"service_id: one of {', '.join(SERVICES)}"
            elif urgency not in URGENCIES:
                problem = f"urgency: {' or '.join(URGENCIES)}"
            if problem is not None:
                self._send(400, {"error": {"message": f"Invalid Input Provided: {problem}"}})
                return
            incident = state.new_incident(str(title), str(service))
            incident["urgency"] = urgency
            self._send(201, {"incident": incident})
            return
        if path == "/_sandbox/revoke":
            # The REST token stops working (as when someone deletes it); {"revoked": false}
            # brings it back.
            state.token = "" if body.get("revoked", True) else SANDBOX_API_TOKEN
            self._send(200, {"ok": True})
            return
        if path == "/_sandbox/rate_limit":
            try:
                count = int(body.get("count", 1))
                reset = int(body.get("reset", 1))
            except (TypeError, ValueError):
                self._send(400, {"error": {"message": "count and reset are integers"}})
                return
            state.rate_limits[str(body.get("path_prefix", "/"))] = count
            state.rate_limit_reset = reset
            self._send(200, {"ok": True})
            return
        self._send(404, {"error": {"message": f"no sandbox hook {path}", "code": 2100}})

    # --- REST ----------------------------------------------------------------------------

    def _rest(
        self, state: PagerDutyState, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> None:
        parts = [p for p in path.split("/") if p]
        if parts == ["abilities"] and method == "GET":
            self._send(200, {"abilities": list(ABILITIES)})
            return
        if parts == ["services"] and method == "GET":
            services = [
                {"id": sid, "type": "service", "name": s["name"], "summary": s["name"]}
                for sid, s in SERVICES.items()
            ]
            self._send(200, {"services": services, "limit": 25, "offset": 0, "more": False})
            return
        if parts == ["incidents"] and method == "GET":
            statuses = query.get("statuses[]") or ["triggered", "acknowledged"]
            wanted = query.get("service_ids[]")
            found = [
                i
                for i in state.incidents.values()
                if i["status"] in statuses and (not wanted or i["service"]["id"] in wanted)
            ]
            offset = int((query.get("offset") or ["0"])[0])
            limit = int((query.get("limit") or ["25"])[0])
            page = found[offset : offset + limit]
            more = offset + limit < len(found)
            self._send(
                200,
                {"incidents": page, "limit": limit, "offset": offset, "more": more, "total": None},
            )
            return
        if len(parts) >= 2 and parts[0] == "incidents":
            incident = state.incidents.get(parts[1])
            if incident is None:
                self._send(404, {"error": {"message": "Not Found", "code": 2100}})
                return
            if len(parts) == 2 and method == "GET":
                self._send(200, {"incident": incident})
                return
            sender = self.headers.get("From")
            if method in ("PUT", "POST") and sender not in USERS:
                self._send(
                    400,
                    {
                        "error": {
                            "message": "Requester User Not Found",
                            "code": 2001,
                            "errors": ["A valid From header is required"],
                        }
                    },
                )
                return
            if len(parts) == 2 and method == "PUT":
                status = (body.get("incident") or {}).get("status")
                if status not in ("acknowledged", "resolved"):
                    self._send(400, {"error": {"message": "Invalid Input Provided", "code": 2001}})
                    return
                incident["status"] = status
                self._send(200, {"incident": incident})
                return
            if parts[2:] == ["notes"] and method == "POST":
                content = str((body.get("note") or {}).get("content", ""))
                if not content.strip():
                    self._send(
                        400, {"error": {"message": "Note content is required", "code": 2001}}
                    )
                    return
                note = {
                    "id": f"PN{uuid.uuid4().hex[:8].upper()}",
                    "content": content,
                    "created_at": _now_iso(),
                    "user": {"id": USERS[str(sender)], "type": "user_reference", "summary": sender},
                }
                state.notes[incident["id"]].append(note)
                self._send(201, {"note": note})
                return
            if parts[2:] == ["notes"] and method == "GET":
                self._send(200, {"notes": state.notes[incident["id"]]})
                return
        self._send(404, {"error": {"message": f"no route {method} {path}", "code": 2100}})

    # --- Events API v2 -------------------------------------------------------------------

    def _enqueue(self, state: PagerDutyState, body: Any) -> None:
        key = body.get("routing_key")
        action = body.get("event_action")
        if key not in state.routing_keys:
            self._send(
                400,
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["Invalid routing key"],
                },
            )
            return
        if action not in ("trigger", "acknowledge", "resolve"):
            self._send(400, {"status": "invalid event", "errors": ["Invalid event_action"]})
            return
        dedup = body.get("dedup_key") or uuid.uuid4().hex
        if len(dedup) > 255:
            self._send(400, {"status": "invalid event", "errors": ["dedup_key too long"]})
            return
        state.events.append(dict(body, dedup_key=dedup))
        open_one = next(
            (
                i
                for i in state.incidents.values()
                if i.get("incident_key") == dedup and i["status"] != "resolved"
            ),
            None,
        )
        if action == "trigger":
            payload = body.get("payload") or {}
            if (
                not payload.get("summary")
                or not payload.get("source")
                or not payload.get("severity")
            ):
                self._send(
                    400,
                    {
                        "status": "invalid event",
                        "errors": ["payload.summary, source and severity are required"],
                    },
                )
                return
            if open_one is None:
                state.new_incident(payload["summary"], state.routing_keys[key], dedup_key=dedup)
            else:
                open_one["alert_counts"]["all"] += 1
        elif open_one is not None:
            open_one["status"] = "resolved" if action == "resolve" else "acknowledged"
        self._send(202, {"status": "success", "message": "Event processed", "dedup_key": dedup})


class _Server(QuietServer):
    state: PagerDutyState


class PagerDutyEmulator(LocalServer[_Server]):
    """The local PagerDuty on https://127.0.0.1 (a free port unless given); its CA certificate
    is written to ``directory / "pagerduty-ca.pem"``. ``ca`` reuses a certificate authority
    (the tests make one per session); without it each emulator makes its own."""

    scheme = "https"

    def __init__(self, directory: Path, *, port: int = 0, ca: Any | None = None) -> None:
        import trustme

        directory.mkdir(parents=True, exist_ok=True)
        self.ca = ca if ca is not None else trustme.CA()
        self.ca_path = directory / "pagerduty-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        server = _Server(("127.0.0.1", port), _Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.state = PagerDutyState()
        super().__init__(server)

    @property
    def state(self) -> PagerDutyState:
        return self.server.state

    def calls(self, path_prefix: str = "") -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(c) for c in self.state.calls if c["path"].startswith(path_prefix)]

    def rate_limit(self, path_prefix: str, count: int = 1, *, reset: int = 1) -> None:
        with self.state.lock:
            self.state.rate_limits[path_prefix] = count
            self.state.rate_limit_reset = reset

    def open_incident(self, title: str, service_id: str = "PSVCPROD") -> dict[str, Any]:
        with self.state.lock:
            return dict(self.state.new_incident(title, service_id))

    def notes(self, incident_id: str) -> list[dict[str, Any]]:
        with self.state.lock:
            return [dict(n) for n in self.state.notes.get(incident_id, [])]


def webhook_body(
    event_type: str, incident: dict[str, Any], *, occurred_at: str | None = None
) -> bytes:
    """A webhooks v3 body as PagerDuty sends it."""
    return json.dumps(
        {
            "event": {
                "id": uuid.uuid4().hex,
                "event_type": event_type,
                "resource_type": "incident",
                "occurred_at": occurred_at or _now_iso(),
                "agent": None,
                "client": None,
                "data": {
                    "id": incident["id"],
                    "type": "incident",
                    "self": f"https://api.pagerduty.com/incidents/{incident['id']}",
                    "html_url": incident.get("html_url"),
                    "number": incident.get("incident_number"),
                    "status": incident.get("status"),
                    "title": incident.get("title"),
                    "service": incident.get("service"),
                    "urgency": incident.get("urgency", "high"),
                },
            }
        }
    ).encode()


def signature(secret: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_webhook(
    url: str,
    body: bytes,
    *,
    secrets: list[str],
    webhook_id: str | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """POST a v3 webhook signed with each secret (several during rotation)."""
    request = urllib.request.Request(  # noqa: S310 - a local bot
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-PagerDuty-Signature": ",".join(signature(s, body) for s in secrets),
            "X-Webhook-Id": webhook_id or uuid.uuid4().hex,
            "User-Agent": "PagerDuty-Webhook/V3.0",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as refused:
        raw = refused.read()
        return refused.code, json.loads(raw) if raw else None
