"""The application's request signals as a real exporter serves them, for a real Prometheus.

``GET /metrics`` answers the text exposition format with, per environment, region and
service: ``http_requests_total{code}`` (counters), ``http_request_duration_seconds``
(a histogram) and ``probe_success`` (1 or 0, as the blackbox exporter reports a health
probe). Traffic is a rate set per series (``set_traffic``): every scrape adds what was served
since the last one, so the counters only grow and a rate over any window is the traffic
served in it. A series appears at its first traffic (a service with no 5xx has no 5xx
series, as with prometheus_client's labelled counters).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox.local_http import JsonHandler, LocalServer, QuietServer

#: The histogram's bucket bounds, in seconds (the triggers: 0.5 s and 1 s are bounds).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)

Key = tuple[str, str, str]  # environment, region, service


@dataclass
class Traffic:
    rps: float = 0.0
    error_ratio: float = 0.0
    latency: float = 0.1


@dataclass
class _Series:
    traffic: Traffic = field(default_factory=Traffic)
    ok: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    duration_sum: float = 0.0
    count: float = 0.0
    since: float = 0.0


def _labels(key: Key, **more: str) -> str:
    environment, region, service = key
    pairs = {"environment": environment, "region": region, "service": service, **more}
    return ",".join(f'{k}="{v}"' for k, v in pairs.items())


class SignalExporter(LocalServer[QuietServer]):
    """Request counters per (environment, region, service), driven by ``set_traffic``."""

    def __init__(self, port: int = 0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.series: dict[Key, _Series] = {}
        self.probes: dict[Key, bool] = {}
        exporter = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exporter.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                try:
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the reader left (`| head`)
                    self.close_connection = True

        super().__init__(QuietServer(("127.0.0.1", port), Handler))

    def set_traffic(
        self,
        environment: str,
        region: str,
        service: str,
        *,
        rps: float,
        error_ratio: float = 0.0,
        latency: float = 0.1,
    ) -> None:
        """From now on the service serves ``rps`` requests a second, ``error_ratio`` of them
        5xx, each taking ``latency`` seconds. ``rps=0``: no traffic (the counters stay)."""
        key = (environment, region, service)
        with self.lock:
            series = self.series.setdefault(key, _Series(since=self.clock()))
            self._advance(series)
            series.traffic = Traffic(rps, error_ratio, latency)

    def set_probe(self, environment: str, region: str, service: str, healthy: bool) -> None:
        with self.lock:
            self.probes[environment, region, service] = healthy

    def forget(self) -> None:
        """No series at all (between tests)."""
        with self.lock:
            self.series.clear()
            self.probes.clear()

    def _advance(self, series: _Series) -> None:
        now = self.clock()
        served = series.traffic.rps * (now - series.since)
        series.since = now
        if served <= 0:
            return
        errors = served * series.traffic.error_ratio
        series.errors += errors
        series.ok += served - errors
        latency = series.traffic.latency
        for bound in BUCKETS:
            if latency <= bound:
                series.buckets[bound] = series.buckets.get(bound, 0.0) + served
        series.count += served
        series.duration_sum += served * latency

    def render(self) -> str:
        lines = [
            "# HELP http_requests_total Requests served, by status code.",
            "# TYPE http_requests_total counter",
        ]
        with self.lock:
            for series in self.series.values():
                self._advance(series)
            for key, series in sorted(self.series.items()):
                if series.ok > 0:
                    lines.append(f"http_requests_total{{{_labels(key, code='200')}}} {series.ok}")
                if series.errors > 0:
                    lines.append(
                        f"http_requests_total{{{_labels(key, code='500')}}} {series.errors}"
                    )
            lines += [
                "# HELP http_request_duration_seconds Time to serve a request.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for key, series in sorted(self.series.items()):
                if series.count <= 0:
                    continue
                for bound in BUCKETS:
                    value = series.buckets.get(bound, 0.0)
                    lines.append(
                        "http_request_duration_seconds_bucket"
                        f"{{{_labels(key, le=repr(bound))}}} {value}"
                    )
                lines.append(
                    f"http_request_duration_seconds_bucket{{{_labels(key, le='+Inf')}}} "
                    f"{series.count}"
                )
                lines.append(
                    f"http_request_duration_seconds_sum{{{_labels(key)}}} {series.duration_sum}"
                )
                lines.append(
                    f"http_request_duration_seconds_count{{{_labels(key)}}} {series.count}"
                )
            lines += [
                "# HELP probe_success Whether the service's health probe succeeded.",
                "# TYPE probe_success gauge",
            ]
            for key, healthy in sorted(self.probes.items()):
                lines.append(f"probe_success{{{_labels(key)}}} {1 if healthy else 0}")
        return "\n".join(lines) + "\n"
