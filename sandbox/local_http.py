"""The plumbing every sandbox emulator shares: a quiet JSON request handler and a threading
HTTP server on 127.0.0.1 (a free port unless given) served from a daemon thread.

The emulators (Atlas, PagerDuty, Slack, the health/Prometheus double, the metrics exporter,
Kubernetes, GitHub's pull requests) differ in what they answer, not in how they listen; this
module is the how.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log on stderr, JSON in and out."""

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY, as real API servers set it (Go's net/http does by default): the headers and
    #: the body go out in two writes, and with Nagle's algorithm on, the body waited for the
    #: client's delayed ACK of the headers, about 40 ms per answer on a kept-alive connection.
    disable_nagle_algorithm = True
    #: The Content-Type of ``_send``'s answers.
    content_type = "application/json"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _raw_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _body(self) -> Any:
        """The request's JSON body ({} when empty); json.JSONDecodeError when it is not JSON."""
        raw = self._raw_body()
        return json.loads(raw) if raw else {}


class QuietServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose request threads do not keep the process alive."""

    daemon_threads = True


ServerT = TypeVar("ServerT", bound=ThreadingHTTPServer)


class LocalServer(Generic[ServerT]):
    """``server`` (a ``QuietServer`` or subclass carrying the emulator's state) served from a
    daemon thread; ``start`` returns the emulator, ``stop`` closes the socket."""

    scheme = "http"

    def __init__(
        self,
        server: ServerT,
        *,
        poll_interval: float = 0.5,
        name: str | None = None,
    ) -> None:
        self.server = server
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(poll_interval,), daemon=True, name=name
        )

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket, at once: ``shutdown`` waits for the serving
        loop to look at its flag, which it does between ``select`` timeouts (``poll_interval``)
        or after a request; connections of our own wake it until it has stopped."""
        stopper = threading.Thread(target=self.server.shutdown, daemon=True)
        stopper.start()
        host, port = self.server.server_address[:2]
        while stopper.is_alive():
            with contextlib.suppress(OSError):
                socket.create_connection((str(host), int(port)), timeout=1).close()
            stopper.join(0.01)
        self.server.server_close()
