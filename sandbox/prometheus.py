"""The real Prometheus and Alertmanager (Debian's ``prometheus`` and
``prometheus-alertmanager``), run as child processes with our own configuration: bound to
127.0.0.1 on free ports, storage in a temporary directory, every query logged.

Used by the tests (one of each per session) and, when the binaries are present, the sandbox.
Scrape targets and the webhook receiver change with a rewritten configuration and a reload
(``--web.enable-lifecycle``), so one server serves many tests.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
START_TIMEOUT = 30.0


def binary(*names: str) -> str | None:
    """The first of ``names`` on PATH."""
    return next((found for name in names if (found := shutil.which(name))), None)


def prometheus_binary() -> str | None:
    return binary("prometheus")


def alertmanager_binary() -> str | None:
    return binary("prometheus-alertmanager", "alertmanager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local
        body = response.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _post(url: str, doc: Any = None, timeout: float = 5.0) -> None:
    data = json.dumps(doc).encode() if doc is not None else b""
    request = urllib.request.Request(  # noqa: S310 - local
        url, data=data, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        response.read()


class _Process:
    name = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> _Process:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}: "
                    f"{self.log.read_text()[-2000:]}"
                )
            try:
                _get(f"{self.url}/-/ready", timeout=1.0)
                return self
            except (OSError, ValueError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {START_TIMEOUT:.0f} s: see {self.log}")

    def reload(self) -> None:
        _post(f"{self.url}/-/reload")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class Prometheus(_Process):
    """A Prometheus evaluating ``rules`` every ``interval`` seconds, scraping the targets
    set with ``scrape`` and alerting to ``alertmanager`` (host:port) when given."""

    name = "prometheus"

    def __init__(
        self,
        directory: Path,
        *,
        interval: float = 1.0,
        rules: list[Path] | None = None,
        alertmanager: str | None = None,
        executable: str | None = None,
    ) -> None:
        super().__init__(directory)
        self.executable = executable or prometheus_binary() or "prometheus"
        self.interval = interval
        self.rules = [RULES] if rules is None else rules
        self.alertmanager = alertmanager
        self.jobs: dict[str, list[str]] = {}
        self.config_file = directory / "prometheus.yml"
        self.query_log = directory / "queries.log"
        self._write_config()

    def _write_config(self) -> None:
        every = f"{round(self.interval * 1000)}ms"  # Prometheus durations take no decimals
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": every,
                "evaluation_interval": f"{max(1000, round(self.interval * 1000))}ms",
                "query_log_file": str(self.query_log),
            },
            "rule_files": [str(r) for r in self.rules],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in sorted(self.jobs.items())
            ],
        }
        if self.alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]
            }
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    def scrape(self, job: str, targets: list[str]) -> None:
        """Scrape ``targets`` (host:port) as ``job`` from now on (an empty list: stop)."""
        if targets:
            self.jobs[job] = list(targets)
        else:
            self.jobs.pop(job, None)
        self._write_config()
        if self.process is not None:
            self.reload()

    def query(self, expr: str) -> list[dict[str, Any]]:
        doc = _get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def targets_up(self, job: str) -> bool:
        doc = _get(f"{self.url}/api/v1/targets?state=active")
        mine = [t for t in doc["data"]["activeTargets"] if t["labels"].get("job") == job]
        return bool(mine) and all(t["health"] == "up" for t in mine)

    def logged_queries(self) -> list[dict[str, Any]]:
        """Every query the server evaluated (its query log), oldest first."""
        if not self.query_log.exists():
            return []
        return [json.loads(line) for line in self.query_log.read_text().splitlines() if line]


class Alertmanager(_Process):
    """An Alertmanager alone (no cluster), routing every alert to ``webhook`` when set."""

    name = "alertmanager"

    def __init__(
        self,
        directory: Path,
        *,
        executable: str | None = None,
        repeat_interval: str = "1h",
    ) -> None:
        super().__init__(directory)
        self.executable = executable or alertmanager_binary() or "alertmanager"
        self.config_file = directory / "alertmanager.yml"
        self.repeat_interval = repeat_interval
        self.route_to(None)

    def route_to(
        self,
        webhook: str | None,
        *,
        token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        repeat_interval: str | None = None,
    ) -> None:
        """Send every alert to ``webhook`` (None: to a receiver with nowhere to send)."""
        receiver: dict[str, Any] = {"name": "runbook-bot"}
        if webhook:
            config: dict[str, Any] = {"url": webhook, "send_resolved": True}
            if token is not None:
                config["http_config"] = {"authorization": {"type": "Bearer", "credentials": token}}
            elif basic_auth is not None:
                config["http_config"] = {
                    "basic_auth": {"username": basic_auth[0], "password": basic_auth[1]}
                }
            receiver["webhook_configs"] = [config]
        doc = {
            "route": {
                "receiver": "runbook-bot",
                "group_by": ["alertname", "environment", "service", "region"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": repeat_interval or self.repeat_interval,
            },
            "receivers": [receiver],
        }
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        if self.process is not None:
            self.reload()

    def _command(self) -> list[str]:
        return [
            self.executable,
            f"--config.file={self.config_file}",
            f"--storage.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fire(self, labels: dict[str, str], annotations: dict[str, str] | None = None) -> None:
        """Post one firing alert to the API, as Prometheus's rule evaluation would."""
        _post(
            f"{self.url}/api/v2/alerts",
            [{"labels": labels, "annotations": annotations or {}}],
        )


def version(executable: str) -> str:
    """``prometheus --version``'s first line, e.g. "prometheus, version 2.42.0+ds (...)"."""
    try:
        out = subprocess.run(  # our own arguments
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        return f"unknown version ({exc})"
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
