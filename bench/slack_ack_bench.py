"""Slack ack latency under 20 concurrent signed requests: the bot vs. a bare Bolt app.

The bot runs as users run it (``python -m sandbox up --bot``: waitress, the Bolt app, the
Kubernetes and Slack emulators) and receives ``/rollback production --dry-run``; each request
also starts a lazy listener that plans against the emulators and posts the plan to the
response URL, so acks compete with real work. The baseline is a bare Bolt ``App`` with one
no-op command, behind the same WSGI adapter and waitress with the same thread count, in its own
process. 20 client threads send signed requests at once, in rounds; the two servers alternate
per round. Latency is measured from sending the request to reading the whole response.

    python bench/slack_ack_bench.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
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

from runbooks.engine.settings import read_sandbox_env  # noqa: E402
from sandbox.slack import SANDBOX_SIGNING_SECRET, SlackUser  # noqa: E402

CONCURRENCY = 20

BARE_APP = textwrap.dedent(
    """
    import sys
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient
    from waitress.server import create_server

    app = App(
        client=WebClient(token="xoxb-sandbox-bot-token", base_url=sys.argv[2]),
        signing_secret=sys.argv[3],
        token_verification_enabled=False,
    )

    @app.command("/noop")
    def noop(ack):
        ack()

    server = create_server(SlackRequestHandler(app), host="127.0.0.1", port=int(sys.argv[1]),
                           threads=8)
    print("ready", flush=True)
    server.run()
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30, *, ok_only: bool = False) -> None:
    """Wait until ``url`` answers (any status; with ``ok_only``, a 2xx: e.g. ``/ready``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - local
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            if not ok_only:
                return  # answering (404/405 is fine)
            time.sleep(0.1)
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def burst(user: SlackUser, text: str, channel: str) -> list[float]:
    """CONCURRENCY requests released together; seconds each."""
    bodies = [user.command_body(text, channel=channel) for _ in range(CONCURRENCY)]
    results: list[float] = [0.0] * CONCURRENCY
    gate = threading.Barrier(CONCURRENCY)

    def one(i: int) -> None:
        gate.wait()
        started = time.perf_counter()
        answer = user.post(bodies[i], "application/x-www-form-urlencoded")
        results[i] = time.perf_counter() - started
        if answer.status != 200:
            raise SystemExit(f"HTTP {answer.status}: {answer.body}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="slack-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK", "SLACK_", "KUBE"))}
    env.update(RUNBOOK_BOT_HOME=str(home), RUNBOOK_BOT_LOG=str(home / "bot.jsonl"))
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
        deadline = time.monotonic() + 30
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        sandbox_env = read_sandbox_env(env_file)
        wait_http(f"http://127.0.0.1:{bot_port}/health")
        bare = subprocess.Popen(
            [
                sys.executable,
                "-c",
                BARE_APP,
                str(bare_port),
                sandbox_env["SLACK_API_URL"],
                SANDBOX_SIGNING_SECRET,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert bare.stdout is not None
        bare.stdout.readline()
        slack_url = sandbox_env["RUNBOOK_BOT_SANDBOX_SLACK"]
        alice_bot = SlackUser(
            "U0ALICE", bot_url=f"http://127.0.0.1:{bot_port}", slack_url=slack_url
        )
        alice_bare = SlackUser(
            "U0ALICE", bot_url=f"http://127.0.0.1:{bare_port}", slack_url=slack_url
        )
        for _ in range(2):  # warm-up: imports, first plans, connection setup
            burst(alice_bot, "/rollback production --dry-run", "C0OPS")
            burst(alice_bare, "/noop", "C0OPS")
        time.sleep(2)
        bot_times: list[float] = []
        bare_times: list[float] = []
        for i in range(args.rounds):
            if i % 2:
                bot_times += burst(alice_bot, "/rollback production --dry-run", "C0OPS")
                bare_times += burst(alice_bare, "/noop", "C0OPS")
            else:
                bare_times += burst(alice_bare, "/noop", "C0OPS")
                bot_times += burst(alice_bot, "/rollback production --dry-run", "C0OPS")
        n = len(bot_times)
        print(f"{n} requests each, {CONCURRENCY} concurrent, {args.rounds} rounds")
        print("| server | p50 | p99 | max |")
        print("| --- | --- | --- | --- |")
        for name, values in [
            ("bare Bolt app, no-op /noop", bare_times),
            ("runbook-bot, /rollback production --dry-run", bot_times),
        ]:
            print(
                f"| {name} | {pct(values, 0.5) * 1000:.1f} ms | {pct(values, 0.99) * 1000:.1f} ms"
                f" | {max(values) * 1000:.1f} ms |"
            )
        print(
            f"ratio p50 {pct(bot_times, 0.5) / pct(bare_times, 0.5):.2f}x, "
            f"p99 {pct(bot_times, 0.99) / pct(bare_times, 0.99):.2f}x; "
            f"mean bot {statistics.mean(bot_times) * 1000:.1f} ms"
        )
        expected = (2 + args.rounds) * CONCURRENCY
        drained_from = time.perf_counter()
        plans = 0
        while time.perf_counter() - drained_from < 300:
            plans = sum(
                1
                for m in alice_bot.visible()
                if m["ephemeral_to"] == "U0ALICE" and "dry run" in str(m["blocks"])
            )
            if plans >= expected:
                break
            time.sleep(0.5)
        print(
            f"plans posted after the acks: {plans}/{expected}; the work pool finished "
            f"{time.perf_counter() - drained_from:.1f} s after the last burst"
        )
    finally:
        if bare is not None:
            bare.kill()
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=30)


if __name__ == "__main__":
    main()
