"""The Alertmanager burst through the real Alertmanager (Debian's 0.25): how many rollbacks,
and how fast the bot's webhook answers.

The bot runs as users run it (``python -m sandbox up --bot``). A real Alertmanager of our own,
grouping by every label (``group_by: ['...']``: each alert its own group, so its own
notification, sent concurrently), receives N firing ``HighErrorRate`` alerts for
development/api at once (differing only by an ``instance`` label, as from N scrape targets)
and delivers them to the bot's webhook with the sandbox's bearer token. Measured: the bot's
answer time per notification (its ``runbook_bot_webhook_seconds{webhook="alertmanager"}``
histogram: the handler's time, waitress's queueing excluded), Alertmanager's own counts of
notifications sent and failed, and the rollbacks started (exactly one).

    python bench/alertmanager_real_bench.py [--alerts N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.alertmanager_bench import rollbacks  # noqa: E402
from bench.slack_ack_bench import free_port, wait_http  # noqa: E402
from runbooks.engine.settings import read_sandbox_env  # noqa: E402
from sandbox.prometheus import Alertmanager, _post, alertmanager_binary, version  # noqa: E402


def metric_lines(url: str, prefix: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - local
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def histogram(url: str) -> tuple[list[tuple[float, float]], float, float]:
    """(upper bound, cumulative count) buckets, sum, count of the Alertmanager webhook."""
    lines = metric_lines(url, "runbook_bot_webhook_seconds")
    buckets = []
    total = count = 0.0
    for name, value in lines.items():
        if 'webhook="alertmanager"' not in name:
            continue
        if name.startswith("runbook_bot_webhook_seconds_bucket"):
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
        elif name.startswith("runbook_bot_webhook_seconds_sum"):
            total = value
        elif name.startswith("runbook_bot_webhook_seconds_count"):
            count = value
    return sorted(buckets), total, count


def quantile_bound(buckets: list[tuple[float, float]], q: float) -> float:
    """The smallest bucket bound below which at least ``q`` of the answers fall."""
    count = buckets[-1][1]
    return next(bound for bound, seen in buckets if seen >= q * count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=200)
    args = parser.parse_args()
    executable = alertmanager_binary()
    if executable is None:
        raise SystemExit("needs prometheus-alertmanager (apt-get install prometheus-alertmanager)")
    home = Path(tempfile.mkdtemp(prefix="alertmanager-real-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK", "SLACK_", "KUBE"))}
    env.update(RUNBOOK_BOT_HOME=str(home), RUNBOOK_BOT_LOG=str(home / "bot.jsonl"))
    env.pop("ALERTMANAGER_WEBHOOK_TOKEN", None)
    bot_port = free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up", "--bot", "--port", str(bot_port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    alertmanager = Alertmanager(home / "bench-alertmanager", executable=executable)
    try:
        env_file = home / "sandbox" / "env"
        deadline = time.monotonic() + 120
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        token = read_sandbox_env(env_file)["ALERTMANAGER_WEBHOOK_TOKEN"]
        bot = f"http://127.0.0.1:{bot_port}"
        wait_http(f"{bot}/ready", ok_only=True)
        alertmanager.route_to(f"{bot}/webhooks/alertmanager", token=token)
        doc = alertmanager.config_file.read_text().replace(
            "group_by:\n  - alertname\n  - environment\n  - service\n  - region",
            "group_by:\n  - '...'",
        )
        alertmanager.config_file.write_text(doc)
        alertmanager.start()
        before = histogram(f"{bot}/metrics")[2]
        alerts = [
            {
                "labels": {
                    "alertname": "HighErrorRate",
                    "environment": "development",
                    "service": "api",
                    "region": "us-east-1",
                    "trigger": "rollback",
                    "instance": f"10.0.0.{i}:3000",
                },
                "annotations": {"summary": "error rate 7 %"},
            }
            for i in range(args.alerts)
        ]
        started = time.monotonic()
        _post(f"{alertmanager.url}/api/v2/alerts", alerts)
        am_metrics = f"{alertmanager.url}/metrics"
        answered = 0.0
        while time.monotonic() - started < 120:
            answered = histogram(f"{bot}/metrics")[2] - before
            if answered >= args.alerts:
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        sent = sum(
            v
            for k, v in metric_lines(am_metrics, "alertmanager_notifications_total").items()
            if 'integration="webhook"' in k
        )
        failed = sum(
            v
            for k, v in metric_lines(am_metrics, "alertmanager_notifications_failed_total").items()
            if 'integration="webhook"' in k
        )
        buckets, total, count = histogram(f"{bot}/metrics")
        print(f"{version(executable)}")
        print(
            f"{args.alerts} alerts, one group each: Alertmanager sent {sent:.0f} webhook "
            f"notifications, {failed:.0f} failed; the bot had answered all "
            f"{elapsed:.1f} s after the alerts were posted"
        )
        print(
            f"bot answered {answered:.0f}: mean {total / max(count, 1) * 1000:.1f} ms, "
            f"p50 <= {quantile_bound(buckets, 0.5) * 1000:.0f} ms, "
            f"p99 <= {quantile_bound(buckets, 0.99) * 1000:.0f} ms (histogram bounds)"
        )
        time.sleep(5)  # the follower requests, the supervisor starts
        found = rollbacks(home / "state.db")
        print(f"rollbacks: {len(found)} {found} (goal: exactly 1)")
    finally:
        alertmanager.stop()
        sandbox.terminate()
        sandbox.wait(timeout=60)


if __name__ == "__main__":
    main()
