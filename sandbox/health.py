"""Each region's service ``/health`` for the sandbox, with a switch to make one fail.

``GET /{region}/health`` answers 200 ``{"status": "ok"}`` or 503 once the region is switched
off with ``POST /_sandbox/health {"region": "us-west-2", "healthy": false}``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[1] == "health":
            region = parts[0]
            self.server.hits[region] = self.server.hits.get(region, 0) + 1
            if region in self.server.failing:
                self._send(503, {"status": "failing", "region": region})
            else:
                self._send(200, {"status": "ok", "region": region})
            return
        self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/_sandbox/health":
            if doc.get("healthy", True):
                self.server.failing.discard(doc["region"])
            else:
                self.server.failing.add(doc["region"])
            self._send(200, {"failing": sorted(self.server.failing)})
            return
        self._send(404, {"error": f"no route {self.path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    failing: set[str]
    hits: dict[str, int]


class HealthServer:
    def __init__(self, port: int = 0) -> None:
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.failing = set()
        self.server.hits = {}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, region: str, failing: bool = True) -> None:
        if failing:
            self.server.failing.add(region)
        else:
            self.server.failing.discard(region)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
