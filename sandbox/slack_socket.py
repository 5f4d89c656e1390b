"""Socket Mode for the local Slack: ``apps.connections.open`` hands out a WebSocket URL this hub
serves, and the hub delivers slash commands and button clicks over it as Slack does.

What Slack does and the hub does too: the app opens the connection with its app-level token
(``xapp-``), receives ``{"type": "hello"}``, then envelopes ``{"envelope_id", "type":
"slash_commands" | "interactive", "payload", "accepts_response_payload"}``; the app answers each
with ``{"envelope_id", "payload"?}`` (the acknowledgement, and for a slash command the optional
immediate reply). With several connections (several replicas), each envelope goes to one of
them: round robin, or the one a test names. ``ack(envelope_id)`` waits for the answer and says
when none came (Slack retries an envelope unacknowledged after 3 s; the hub records the delay
and does not retry).

Gaps: no ``events_api`` envelopes (the bot subscribes to none), no ``disconnect`` warnings or
refresh, no retries, plain ``ws://`` (the SDK's client speaks TLS only to port 443).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

SANDBOX_APP_TOKEN = "xapp-1-sandbox-app-token"  # noqa: S105 - a fake token for the emulator
#: How long ``ack`` waits before saying the app did not acknowledge.
ACK_WAIT_S = 10.0


@dataclass
class Ack:
    envelope_id: str
    payload: dict[str, Any] | None
    #: Seconds from sending the envelope to its acknowledgement (Slack's limit: 3).
    after: float


@dataclass
class _Link:
    ticket: str
    connection: ServerConnection
    received: list[dict[str, Any]] = field(default_factory=list)


class SocketModeHub:
    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self._server: Server = serve(
            self._serve, host, 0, compression=None, ping_interval=None, max_size=2**22
        )
        self.host = host
        self.port = int(self._server.socket.getsockname()[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Condition()
        self._tickets: set[str] = set()
        self._links: list[_Link] = []
        self._sent: dict[str, float] = {}
        self._acks: dict[str, Ack] = {}
        self._ids = itertools.count(1)
        self._turn = itertools.count()
        #: Every envelope sent: (connection index, envelope).
        self.delivered: list[tuple[int, dict[str, Any]]] = []

    def start(self) -> SocketModeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    # --- apps.connections.open -------------------------------------------------------------

    def open_url(self) -> str:
        """A one-time URL for a new connection (what ``apps.connections.open`` answers)."""
        ticket = f"ticket-{next(self._ids)}"
        with self._lock:
            self._tickets.add(ticket)
        return f"ws://{self.host}:{self.port}/link/?ticket={ticket}&app_id=A0RUNBOOK"

    def connections(self) -> int:
        with self._lock:
            return sum(1 for link in self._links if _open(link.connection))

    def _serve(self, connection: ServerConnection) -> None:
        path = connection.request.path if connection.request is not None else ""
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._lock:
            if ticket not in self._tickets:
                connection.close(4001, "unknown or used ticket: call apps.connections.open")
                return
            self._tickets.discard(ticket)
            link = _Link(ticket, connection)
            self._links.append(link)
            count = len(self._links)
        connection.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {"host": "sandbox", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": "A0RUNBOOK"},
                }
            )
        )
        try:
            for raw in connection:
                doc = json.loads(raw)
                with self._lock:
                    link.received.append(doc)
                    envelope_id = str(doc.get("envelope_id") or "")
                    if envelope_id in self._sent and envelope_id not in self._acks:
                        self._acks[envelope_id] = Ack(
                            envelope_id,
                            doc.get("payload"),
                            time.monotonic() - self._sent[envelope_id],
                        )
                        self._lock.notify_all()
        except ConnectionClosed:
            pass

    # --- delivering --------------------------------------------------------------------------

    def deliver(self, kind: str, payload: dict[str, Any], *, to: int | None = None) -> str:
        """Send one envelope to one connection (``to``: its index; default round robin)."""
        with self._lock:
            live = [i for i, link in enumerate(self._links) if _open(link.connection)]
            if not live:
                raise AssertionError("no app is connected over Socket Mode")
            index = to if to is not None else live[next(self._turn) % len(live)]
            if index not in live:
                raise AssertionError(f"connection {index} is not open (open: {live})")
            envelope_id = f"env-{next(self._ids)}"
            envelope = {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind == "slash_commands",
                "retry_attempt": 0,
                "retry_reason": "",
            }
            self._sent[envelope_id] = time.monotonic()
            self.delivered.append((index, envelope))
            connection = self._links[index].connection
        connection.send(json.dumps(envelope))
        return envelope_id

    def ack(self, envelope_id: str, *, timeout: float = ACK_WAIT_S) -> Ack:
        """The app's acknowledgement of an envelope; AssertionError when none came."""
        with self._lock:
            if not self._lock.wait_for(lambda: envelope_id in self._acks, timeout=timeout):
                raise AssertionError(f"envelope {envelope_id} was not acknowledged")
            return self._acks[envelope_id]


def _open(connection: ServerConnection) -> bool:
    from websockets.protocol import State

    return bool(connection.state == State.OPEN)
