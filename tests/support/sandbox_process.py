"""The whole sandbox as a user starts it (``python -m sandbox up --bot``), for process tests."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runbooks.engine.settings import read_sandbox_env
from tests.support.waiting import wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - local bot
            return bool(answer.status == 200 and json.loads(answer.read()))
    except OSError:
        return False


@contextmanager
def sandbox_with_bot(env: dict[str, str], root: Path) -> Iterator[dict[str, str]]:
    """Start the sandbox and the bot; yield the sandbox's env file as a dict; stop both. The
    sandbox's own kubeconfig wins (a test's stand-in KUBECONFIG is dropped)."""
    env = {k: v for k, v in env.items() if k != "KUBECONFIG"}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up", "--bot"],
        env={**env, "PORT": str(port)},
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    env_file = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox" / "env"
    try:
        wait_for(lambda: proc.poll() is not None or env_file.exists(), timeout=120, what="env")
        assert proc.poll() is None, proc.communicate(timeout=30)[0]
        wait_for(lambda: _healthy(f"http://127.0.0.1:{port}/health"), timeout=60, what="bot")
        yield read_sandbox_env(env_file)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
