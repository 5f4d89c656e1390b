"""A burst of Alertmanager notifications for one service: ack latency, and how many rollbacks.

The bot runs as users run it (``python -m sandbox up --bot``: waitress, the Kubernetes and
Slack emulators, SQLite state). 20 client threads send 200 authenticated notifications of
``HighErrorRate`` for development/api at once (repeats, as Alertmanager's group and repeat
intervals and an HA pair produce). Baseline: a bare WSGI app under waitress with the same
thread count, in its own process, that checks the bearer token, parses the JSON and answers
200. Latency is from sending to reading the whole answer. Then: exactly one rollback must have
been started (the store is read after the burst settles).

    python bench/alertmanager_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.slack_ack_bench import free_port, pct, wait_http  # noqa: E402
from runbooks.engine.settings import read_sandbox_env  # noqa: E402

THREADS = 20
PER_THREAD = 10

BARE_APP = textwrap.dedent(
    """
    import hmac, json, sys
    from waitress.server import create_server

    TOKEN = sys.argv[2].encode()

    def app(environ, start_response):
        header = environ.get("HTTP_AUTHORIZATION", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(header, TOKEN):
            start_response("401 Unauthorized", [("Content-Length", "0")])
            return [b""]
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        doc = json.loads(body)
        answer = json.dumps({"alerts": len(doc["alerts"])}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(answer)))])
        return [answer]

    server = create_server(app, host="127.0.0.1", port=int(sys.argv[1]), threads=8)
    print("ready", flush=True)
    server.run()
    """
)


def notification(index: int, status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": status,
            "receiver": "runbook-bot",
            "groupKey": '{}:{alertname="HighErrorRate"}',
            "alerts": [
                {
                    "status": status,
                    "labels": {
                        "alertname": "HighErrorRate",
                        "environment": "development",
                        "service": "api",
                        "replica": f"am-{index % 2}",
                    },
                    "annotations": {"summary": "5xx rate 7 %"},
                    "startsAt": "2026-12-02T03:00:00Z",
                    "fingerprint": "0123456789abcdef",
                }
            ],
        }
    ).encode()


def burst(url: str, token: str, status: str = "firing") -> list[float]:
    """THREADS threads released together, PER_THREAD notifications each; seconds each."""
    results: list[float] = []
    lock = threading.Lock()
    gate = threading.Barrier(THREADS)

    def one(thread: int) -> None:
        gate.wait()
        for i in range(PER_THREAD):
            request = urllib.request.Request(  # noqa: S310 - local
                url,
                data=notification(thread * PER_THREAD + i, status),
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - local
                answer.read()
                if answer.status != 200:
                    raise SystemExit(f"HTTP {answer.status}")
            with lock:
                results.append(time.perf_counter() - started)

    threads = [threading.Thread(target=one, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def rollbacks(state: Path) -> list[str]:
    from runbooks.engine.store.sqlite import SqliteStore

    store = SqliteStore(state)
    try:
        found = store.list_executions(limit=1000)
    finally:
        store.close()
    return [f"{e.id} {e.state}" for e in found if e.runbook == "rollback"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="first a burst of resolved notifications (no rollback): separates warm-up "
        "from the cost of the rollback starting during the first burst",
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="alertmanager-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK", "SLACK_", "KUBE"))}
    env.update(RUNBOOK_BOT_HOME=str(home), RUNBOOK_BOT_LOG=str(home / "bot.jsonl"))
    env.pop("ALERTMANAGER_WEBHOOK_TOKEN", None)
    bot_port, bare_port = free_port(), free_port()
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up", "--bot", "--port", str(bot_port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bare = None
    try:
        env_file = home / "sandbox" / "env"
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        token = read_sandbox_env(env_file)["ALERTMANAGER_WEBHOOK_TOKEN"]
        wait_http(f"http://127.0.0.1:{bot_port}/ready", ok_only=True)  # as a Service routes
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(bare_port), token],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert bare.stdout is not None
        bare.stdout.readline()
        bot_url = f"http://127.0.0.1:{bot_port}/webhooks/alertmanager"
        bare_url = f"http://127.0.0.1:{bare_port}/"
        bot_times: list[float] = []
        bare_times: list[float] = []
        if args.warm:
            warm = burst(bot_url, token, "resolved")
            print(f"warm-up (resolved): p99 {pct(warm, 0.99) * 1000:.1f} ms")
        for i in range(args.rounds):
            # Each round past the cooldown would be a new claim: the bench's rounds all fall
            # inside one cooldown, so every round after the first must be suppressed.
            if i % 2:
                bot_round = burst(bot_url, token)
                bare_times += burst(bare_url, token)
            else:
                bare_times += burst(bare_url, token)
                bot_round = burst(bot_url, token)
            bot_times += bot_round
            print(
                f"round {i + 1}: bot p50 {pct(bot_round, 0.5) * 1000:.1f} ms, "
                f"p99 {pct(bot_round, 0.99) * 1000:.1f} ms"
            )
        n = len(bot_times)
        print(f"{n} notifications each, {THREADS} threads x {PER_THREAD}, {args.rounds} rounds")
        print("| server | p50 | p99 | max |")
        print("| --- | --- | --- | --- |")
        for name, values in [
            ("bare WSGI app (token check, JSON parse)", bare_times),
            ("runbook-bot /webhooks/alertmanager", bot_times),
        ]:
            print(
                f"| {name} | {pct(values, 0.5) * 1000:.1f} ms | {pct(values, 0.99) * 1000:.1f} ms"
                f" | {max(values) * 1000:.1f} ms |"
            )
        print(
            f"ratio p50 {pct(bot_times, 0.5) / pct(bare_times, 0.5):.2f}x, "
            f"p99 {pct(bot_times, 0.99) / pct(bare_times, 0.99):.2f}x (goal: bot p99 < 100 ms)"
        )
        time.sleep(5)  # the follower requests, the supervisor starts
        started = rollbacks(home / "state.db")
        print(f"rollbacks: {len(started)} {started} (goal: exactly 1)")
    finally:
        if bare is not None:
            bare.terminate()
            bare.communicate(timeout=30)
        sandbox.terminate()
        sandbox.wait(timeout=60)


if __name__ == "__main__":
    main()
