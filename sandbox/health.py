"""Each region's service ``/health`` and its error rate for the sandbox, with switches.

``GET /{region}/health`` answers 200 ``{"status": "ok"}`` or 503 once the region is switched
off with ``POST /_sandbox/health {"region": "us-west-2", "healthy": false}``.

``GET /api/v1/query?query=...`` answers like Prometheus's instant query: the error rate of the
region named by the query's ``region="..."`` label matcher (0.2 % unless set with ``POST
/_sandbox/error_rate {"region": "us-west-2", "rate": 0.08}``); a query naming no region gets
an empty vector (no data), one that is not balanced gets Prometheus's ``bad_data`` error.
``POST /_sandbox/error_rate {"up": false}`` makes the query endpoint answer 503.

The rollback gate's other two signals are told apart by metric name: a query over
``http_request_duration_seconds`` answers the region's p95 in seconds (0.18 until set), one
over ``probe_success`` the number of failing health probes (0 until set); ``POST
/_sandbox/signal {"signal": "latency_p95", "region": "us-east-1", "value": 1.4}`` sets one
(``null``: no data, ``"NaN"``: a NaN sample). PromQL itself is not evaluated: only the region
label and the metric name are read.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse

from sandbox.local_http import JsonHandler, LocalServer, QuietServer

DEFAULT_ERROR_RATE = 0.002
#: What each signal answers until set: error rate 0.2 %, p95 180 ms, no failing probes.
DEFAULTS: dict[str, float | None] = {
    "error_rate": DEFAULT_ERROR_RATE,
    "latency_p95": 0.18,
    "health_failures": 0.0,
}


class _Handler(JsonHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/api/v1/query":
            self._query(urllib.parse.parse_qs(url.query).get("query", [""])[0])
            return
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

    def _query(self, expr: str) -> None:
        self.server.queries.append(expr)
        if not self.server.prometheus_up:
            self._send(503, {"status": "error", "errorType": "unavailable", "error": "down"})
            return
        if not expr or expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
            self._send(
                400,
                {"status": "error", "errorType": "bad_data", "error": f"parse error: {expr!r}"},
            )
            return
        match = re.search(r'region="([^"]+)"', expr)
        result = []
        if match:
            region, signal = match.group(1), signal_of(expr)
            if signal == "error_rate" and region in self.server.error_rates:
                value: float | None = self.server.error_rates[region]
            else:
                value = self.server.signals.get((signal, region), DEFAULTS[signal])
            if value is not None:
                text = "NaN" if math.isnan(value) else repr(value)
                result = [{"metric": {}, "value": [time.time(), text]}]
        self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def do_POST(self) -> None:
        doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/_sandbox/health":
            if doc.get("healthy", True):
                self.server.failing.discard(doc["region"])
            else:
                self.server.failing.add(doc["region"])
            self._send(200, {"failing": sorted(self.server.failing)})
            return
        if self.path == "/_sandbox/error_rate":
            self.server.prometheus_up = bool(doc.get("up", True))
            if "region" in doc:
                self.server.error_rates[doc["region"]] = float(doc["rate"])
            self._send(200, {"error_rates": self.server.error_rates})
            return
        if self.path == "/_sandbox/signal":
            value = doc.get("value")
            self.server.signals[doc["signal"], doc["region"]] = (
                None if value is None else float(value)
            )
            self._send(200, {"signal": doc["signal"], "region": doc["region"], "value": value})
            return
        self._send(404, {"error": f"no route {self.path}"})


def signal_of(expr: str) -> str:
    """Which trigger signal a query reads, by its metric name."""
    if "http_request_duration_seconds" in expr:
        return "latency_p95"
    if "probe_success" in expr:
        return "health_failures"
    return "error_rate"


class _Server(QuietServer):
    failing: set[str]
    hits: dict[str, int]
    error_rates: dict[str, float]
    queries: list[str]
    prometheus_up: bool
    signals: dict[tuple[str, str], float | None]


class HealthServer(LocalServer[_Server]):
    def __init__(self, port: int = 0) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.failing = set()
        server.hits = {}
        server.error_rates = {}
        server.queries = []
        server.prometheus_up = True
        server.signals = {}
        super().__init__(server)

    def fail(self, region: str, failing: bool = True) -> None:
        if failing:
            self.server.failing.add(region)
        else:
            self.server.failing.discard(region)

    def set_error_rate(self, region: str, rate: float) -> None:
        self.server.error_rates[region] = rate

    def set_signal(self, signal: str, region: str, value: float | None) -> None:
        """``error_rate`` (0..1), ``latency_p95`` (s) or ``health_failures`` (failing probes);
        None answers an empty vector (no data), ``float("nan")`` a NaN sample."""
        if signal == "error_rate":
            self.server.error_rates.pop(region, None)
        self.server.signals[signal, region] = value

    def set_up(self, up: bool) -> None:
        self.server.prometheus_up = up

    @property
    def queries(self) -> list[str]:
        return list(self.server.queries)
