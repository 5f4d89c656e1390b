"""Bot processes as a user starts them (one, or several replicas), and HTTP helpers."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable

from tests.conftest import ROOT
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - local test server
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Bot:
    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self) -> None:
        def answering() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"bot exited: {self.proc.communicate()[0]}")
            try:
                return get(self.base + "/health")[0] == 200
            except OSError:
                return False

        wait_for(answering, what="the bot to answer /health")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


def start_replicas(env: dict[str, str], count: int) -> dict[int, Bot]:
    """``count`` bot processes on one environment, by pid, each answering /health (all
    stopped again if one fails to start)."""
    bots: dict[int, Bot] = {}
    try:
        for _ in range(count):
            bot = Bot(env, free_port())
            bots[bot.proc.pid] = bot
        for bot in bots.values():
            bot.wait_ready()
    except BaseException:
        stop_replicas(bots)
        raise
    return bots


def stop_replicas(bots: dict[int, Bot], *, show: Callable[[str], bool] | None = None) -> list[str]:
    """Stop the replicas still running (a test pops one it killed); their logs, in order.
    Each log's lines that ``show`` picks are printed: pytest shows them if the test failed."""
    logs = []
    for pid, bot in bots.items():
        out = bot.stop()
        logs.append(out)
        if show is not None:
            print(f"bot {pid} log:")
            print("\n".join(line for line in out.splitlines() if show(line))[-6000:])
    return logs


def _answers(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except OSError:
        return False
