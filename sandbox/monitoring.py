"""The sandbox's monitoring: the real Prometheus and Alertmanager when their binaries are
installed (``apt-get install prometheus prometheus-alertmanager``), else the emulator.

With the binaries, the sandbox's application exports its request signals per environment,
region and service (``sandbox/signals.py``), driven by the existing fault hooks of the
health server (``POST /_sandbox/error_rate``, ``/_sandbox/signal``, ``/_sandbox/health``:
per region, for every environment and service there); the real Prometheus scrapes them and
the bot every half second, evaluates the shipped rules (deploy/prometheus/rules.yaml) and
alerts to its Alertmanager, which delivers to the bot's webhook with the sandbox's token.
The bot's ``prometheus.url`` (``$RUNBOOK_BOT_SANDBOX_PROMETHEUS``) is then the real server.

The emulator (``sandbox/health.py``'s ``/api/v1/query``) stays for what the real server
cannot be made to do on demand (a query that errors, a server that is down): the tests use it
for those, and the sandbox without the binaries.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from runbooks.engine import Config
from sandbox.health import DEFAULTS, HealthServer
from sandbox.prometheus import (
    Alertmanager,
    Prometheus,
    alertmanager_binary,
    prometheus_binary,
    version,
)
from sandbox.signals import SignalExporter

#: Scrapes every half second: the sandbox's rollback gate reads a 2 s window at first.
SCRAPE_S = 0.5
#: Requests a second each service serves in each region (the exporter's traffic).
RPS = 50.0


@dataclass
class RealMonitoring:
    prometheus: Prometheus
    alertmanager: Alertmanager
    exporter: SignalExporter
    stop_driving: threading.Event
    described: str

    def stop(self) -> None:
        self.stop_driving.set()
        self.prometheus.stop()
        self.alertmanager.stop()
        self.exporter.stop()


def series(config: Config) -> list[tuple[str, str, str]]:
    """(environment, region, service) the sandbox's application serves."""
    return [
        (name, region, service)
        for name in config.environment_names()
        for region in config.environment(name).regions
        for service in config.environment(name).services
    ]


def drive(
    exporter: SignalExporter, health: HealthServer, serving: list[tuple[str, str, str]]
) -> None:
    """Set the exporter's traffic from the health server's fault hooks (per region)."""
    state = health.server
    for environment, region, service in serving:
        error_rate = state.error_rates.get(region)
        if error_rate is None:
            error_rate = state.signals.get(("error_rate", region), DEFAULTS["error_rate"])
        latency = state.signals.get(("latency_p95", region), DEFAULTS["latency_p95"])
        failures = state.signals.get(("health_failures", region), DEFAULTS["health_failures"])
        no_data = error_rate is None or math.isnan(error_rate) or latency is None
        exporter.set_traffic(
            environment,
            region,
            service,
            rps=0.0 if no_data else RPS,
            error_ratio=0.0 if no_data else float(error_rate or 0.0),
            latency=0.1 if latency is None or math.isnan(latency) else float(latency),
        )
        failing = region in state.failing or bool(failures and not math.isnan(failures))
        exporter.set_probe(environment, region, service, not failing)


def start(
    directory: Path,
    config: Config,
    health: HealthServer,
    *,
    bot: str | None,
    token: str,
) -> RealMonitoring | None:
    """Start the real Prometheus and Alertmanager, or None when a binary is missing.
    ``bot`` is the bot's host:port (scraped; its webhook receives the alerts)."""
    prometheus_exe, alertmanager_exe = prometheus_binary(), alertmanager_binary()
    if prometheus_exe is None or alertmanager_exe is None:
        return None
    exporter = SignalExporter().start()
    serving = series(config)
    drive(exporter, health, serving)
    alertmanager = Alertmanager(directory / "alertmanager", executable=alertmanager_exe)
    if bot is not None:
        alertmanager.route_to(f"http://{bot}/webhooks/alertmanager", token=token)
    prometheus = Prometheus(
        directory / "prometheus",
        interval=SCRAPE_S,
        alertmanager=alertmanager.address,
        executable=prometheus_exe,
    )
    prometheus.scrape("application", [exporter.address])
    if bot is not None:
        prometheus.scrape("runbook-bot", [bot])
    alertmanager.start()
    try:
        prometheus.start()
    except RuntimeError:
        alertmanager.stop()
        exporter.stop()
        raise
    stop = threading.Event()

    def driving() -> None:
        while not stop.wait(0.25):
            drive(exporter, health, serving)

    threading.Thread(target=driving, daemon=True, name="sandbox-traffic").start()
    described = (
        f"prometheus: the real {version(prometheus_exe)} ({prometheus_exe}) at {prometheus.url}, "
        f"scraping the application's exporter ({exporter.address}) and the bot every "
        f"{SCRAPE_S:g}s, rules deploy/prometheus/rules.yaml; alertmanager: "
        f"{version(alertmanager_exe)} at {alertmanager.url}"
        + (f" → http://{bot}/webhooks/alertmanager" if bot else "")
    )
    return RealMonitoring(prometheus, alertmanager, exporter, stop, described)


def wait_scraped(monitoring: RealMonitoring, *, timeout: float = 30.0) -> bool:
    """Until the application's request rates can be read (targets apply within ~5 s)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if monitoring.prometheus.query("sum(rate(http_requests_total[2s]))"):
                return True
        except OSError:
            pass
        time.sleep(0.25)
    return False
