#!/usr/bin/env python3
"""What a new user runs, checked from nothing: CI's guard against a missing install step.

    python3 .ci/user_path.py [--keep]

1. A fresh clone of HEAD (``git clone`` of this checkout) in a temporary directory.
2. An install that fails half-way (pip finds no package index) is not stamped as done.
3. ``python3 dev.py serve --port N`` there, exactly as the README says: a new ``.venv`` with only
   the runtime dependencies and the ``sandbox`` extra; ``/ready`` must answer 200.
4. One read-only runbook from the CLI against that sandbox (``invoke dr.status``) exits 0.
5. Ctrl-C (SIGINT) stops the sandbox and the bot; no process of theirs is left.
6. The container's set: a second fresh virtualenv with ``pip install .`` (no extras, as the
   Dockerfile does) imports every module of ``bot``, ``runbooks``, ``runbook_cli`` and
   ``reports`` and starts ``python -m bot serve`` with ``config/example`` (and a throwaway
   audit key, the one secret it needs to start) until ``/health`` answers 200.

Any failure names what was missing (``No module named 'mongomock'``) and exits 1. Uses only
the standard library: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from dev import IMPORT_CHECK, RUNTIME_ONLY  # noqa: E402 (the same check dev.py runs after an install)

#: A first install downloads and builds everything; later steps take seconds.
INSTALL_LIMIT = 1500.0
MISSING = re.compile(r"No module named '([\w.]+)'")


class Failed(Exception):
    """A step of the user's path did not hold."""


def say(text: str) -> None:
    print(f"[user-path] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 (loopback only)
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


def missing_module(text: str) -> str:
    found = MISSING.findall(text)
    return f" (missing module: {', '.join(sorted(set(found)))})" if found else ""


def wait_for(
    check: Callable[[], bool], *, limit: float, process: subprocess.Popen[bytes], log: Path
) -> float:
    """Seconds until ``check()`` holds; Failed if the process dies first or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        if process.poll() is not None:
            text = log.read_text(errors="replace")
            raise Failed(
                f"the process exited with {process.returncode} before it was ready"
                f"{missing_module(text)}; its output:\n{text[-6000:]}"
            )
        time.sleep(0.5)
    raise Failed(
        f"not ready after {limit:.0f} s; output:\n{log.read_text(errors='replace')[-6000:]}"
    )


def stop(process: subprocess.Popen[bytes], *, sig: int = signal.SIGINT) -> None:
    """Stop like Ctrl-C in a terminal: the signal to the whole process group."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise Failed("the process did not stop within 60 s of Ctrl-C") from None


def leftovers(pgid: int) -> list[str]:
    """Processes still in the stopped process group (by /proc)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp
            left.append(f"{entry.name}: {cmdline.strip()}")
    return left


def check_failed_install_not_stamped(clone: Path, venv_dir: Path) -> None:
    say("an install that fails half-way (no package index) must not be stamped")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(clone / ".no-wheels")}
    (clone / ".no-wheels").mkdir()
    result = subprocess.run(
        [sys.executable, "dev.py", "serve", "--port", str(free_port())],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (clone / ".no-wheels").rmdir()
    stamps = sorted(p.name for p in venv_dir.glob(".installed-*"))
    if result.returncode == 0 or stamps:
        raise Failed(f"a failed install exited {result.returncode} and left stamps {stamps}")
    say(f"  refused as it should: exit {result.returncode}, no stamp")


def check_serve(clone: Path, work: Path) -> None:
    port = free_port()
    log = work / "serve.log"
    say(f"python3 dev.py serve --port {port} (fresh .venv, runtime + sandbox extra)")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "dev.py", "serve", "--port", str(port)],
            cwd=clone,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        took = wait_for(
            lambda: http_status(f"http://127.0.0.1:{port}/ready") == 200,
            limit=INSTALL_LIMIT,
            process=process,
            log=log,
        )
        say(f"  /ready 200 after {took:.0f} s (install included)")
        env = {**os.environ, "RUNBOOK_USER": "alice"}
        env.pop("VIRTUAL_ENV", None)
        status = subprocess.run(
            [str(clone / ".venv" / "bin" / "invoke"), "dr.status"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if status.returncode != 0:
            raise Failed(
                f"invoke dr.status exited {status.returncode}"
                f"{missing_module(status.stdout + status.stderr)}:\n"
                f"{status.stdout[-3000:]}\n{status.stderr[-3000:]}"
            )
        say(f"  invoke dr.status: exit 0, {len(status.stdout.splitlines())} lines")
    finally:
        stop(process)
    time.sleep(1)  # the group's last children exit after their parent reports
    left = leftovers(process.pid)
    if left:
        for line in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
        raise Failed("processes left after Ctrl-C:\n" + "\n".join(left))
    say(f"  stopped cleanly (exit {process.returncode}), no process left")


def check_runtime_set(clone: Path, work: Path) -> None:
    target = work / "runtime-venv"
    say("the container's set: pip install . (no extras) into a fresh virtualenv")
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(clone)],
        capture_output=True,
        text=True,
        timeout=INSTALL_LIMIT,
        check=False,
    )
    if result.returncode != 0:
        raise Failed(f"pip install . failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    outside = work / "cwd"  # not the clone: import the installed package, not the source tree
    outside.mkdir()
    result = subprocess.run(
        [str(python), "-c", IMPORT_CHECK, *RUNTIME_ONLY],
        cwd=outside,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise Failed(
            "the runtime package alone cannot import"
            f"{missing_module(result.stdout + result.stderr)}:\n{result.stdout}{result.stderr}"
        )
    say("  every module of bot, runbooks, runbook_cli, reports imports")
    port = free_port()
    log = work / "bot.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "SLACK_"))},
        "PORT": str(port),
        "RUNBOOK_BOT_CONFIG": str(clone / "config" / "example"),
        "RUNBOOK_BOT_HOME": str(work / "home"),
        # The one secret it cannot start without; a throwaway (Slack, AWS and the rest stay
        # unset: the bot serves and says what is off).
        "RUNBOOK_BOT_AUDIT_KEY": secrets.token_hex(32),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(python), "-m", "bot", "serve"],
            cwd=outside,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{port}/health") == 200,
            limit=120,
            process=process,
            log=log,
        )
        say("  python -m bot serve with config/example: /health 200")
    finally:
        stop(process, sig=signal.SIGTERM)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="runbook-bot-user-path-"))
    clone = work / "clone"
    started = time.monotonic()
    try:
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
        check_failed_install_not_stamped(clone, clone / ".venv")
        check_serve(clone, work)
        check_runtime_set(clone, work)
    except (Failed, subprocess.SubprocessError) as failure:
        say(f"FAILED: {failure}")
        return 1
    finally:
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
