"""The real Prometheus and Alertmanager for the tests, one of each per session.

``monitoring`` (session-scoped) starts Debian's ``prometheus`` (scraping every second, the
shipped rules loaded, every query logged) and ``prometheus-alertmanager`` (alone, no
cluster) on free ports with storage in a temporary directory, beside the sandbox's signal
exporter, and stops them at the end. Without the binaries the tests that use it skip, except
under ``CI=true``, where they fail: ``.ci/run`` installs them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sandbox.prometheus import Alertmanager, Prometheus, alertmanager_binary, prometheus_binary
from sandbox.signals import SignalExporter
from tests.support.waiting import wait_for

#: Prometheus scrapes and evaluates every second here (the spec's is 15 s).
SCRAPE_S = 1.0
PACKAGES = "apt-get install prometheus prometheus-alertmanager"


def need(*tools: str) -> dict[str, str]:
    """The tools' paths; skip without them, or fail under CI=true (CI must have them)."""
    found: dict[str, str] = {}
    for tool in tools:
        path = {
            "prometheus": prometheus_binary,
            "alertmanager": alertmanager_binary,
        }.get(tool, lambda tool=tool: shutil.which(tool))()
        if path is None:
            message = f"{tool} is not installed ({PACKAGES})"
            if os.environ.get("CI"):  # CI=true: the tools must be there
                pytest.fail(f"CI must have {tool}: .ci/run installs it ({PACKAGES})")
            pytest.skip(message)
        found[tool] = path
    return found


@dataclass
class Monitoring:
    prometheus: Prometheus
    alertmanager: Alertmanager
    exporter: SignalExporter

    def scraped(self, expr: str, *, timeout: float = 20.0, what: str = "") -> None:
        """Wait until ``expr`` has a sample in Prometheus (the exporter's state was scraped)."""
        wait_for(lambda: bool(self.prometheus.query(expr)), timeout=timeout, what=what or expr)

    def value(self, expr: str) -> float | None:
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="session")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    tools = need("prometheus", "alertmanager")
    root = tmp_path_factory.mktemp("monitoring")
    exporter = SignalExporter().start()
    alertmanager = Alertmanager(root / "alertmanager", executable=tools["alertmanager"])
    # The rules are loaded (the real server checks them) but alert nowhere: the tests post
    # the alerts they need to Alertmanager themselves, so none fires into another test.
    prometheus = Prometheus(root / "prometheus", interval=SCRAPE_S, executable=tools["prometheus"])
    prometheus.scrape("signals", [exporter.address])
    try:
        alertmanager.start()
        prometheus.start()
        # Prometheus applies new targets at most every 5 s: wait once, here.
        wait_for(lambda: prometheus.targets_up("signals"), what="Prometheus scraping the exporter")
        yield Monitoring(prometheus, alertmanager, exporter)
    finally:
        prometheus.stop()
        alertmanager.stop()
        exporter.stop()
