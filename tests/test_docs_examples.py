"""Every command example in README.md and docs/ names a real task with options that parse.

Lines in fenced code blocks that run ``invoke`` or ``runbook`` (after any ``VAR=value``
prefixes, ``source ... &&`` and before a ``#`` comment) are parsed against the real
collection exactly as the program would parse them, without running anything; the quick ones
(dry runs, listings, reports, help) are then run as written, through ``invoke``, against a
running sandbox (``python -m sandbox up``), and must succeed.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_cli.program import build_program, unknown_option
from tests.conftest import BIN, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in FENCE.findall(path.read_text(encoding="utf-8")):
            for line in block.splitlines():
                command = line.split(" #", 1)[0].strip()
                command = command.split("&&")[-1].strip()
                if not re.search(r"(^|\s)(invoke|runbook)\s", command):
                    continue  # another tool's line (kubectl, a shell continuation)
                words = shlex.split(command)
                prefix = {}
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    name, _, value = words.pop(0).partition("=")
                    prefix[name] = value
                if words and words[0] in {"invoke", "runbook"} and len(words) > 1:
                    found.append((f"{path.name}: {line.strip()}", shlex.join(words[1:])))
                    PREFIXES[shlex.join(words[1:])] = prefix
    return found


PREFIXES: dict[str, dict[str, str]] = {}
READ_ONLY = {"list", "status", "history", "check", "verify", "reviews", "explain", "report"}
PLACEHOLDER_ID = re.compile(r"\brb-[0-9a-f]{6}\b")  # an example id no sandbox has


def quick(args: str) -> bool:
    """A dry run, listing, report or help: safe and fast to run as written."""
    argv = shlex.split(args)
    if PLACEHOLDER_ID.search(args) or "--out" in argv:  # --out would write into the checkout
        return False
    if any(flag in argv for flag in ("--dry-run", "--help", "-h", "--list", "-l")):
        return True
    return argv[0].rsplit(".", 1)[-1] in READ_ONLY


EXAMPLES = examples()


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize(("where", "args"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_a_documented_command_parses(where: str, args: str) -> None:
    argv = shlex.split(args)
    program = build_program()
    assert unknown_option(program.namespace, argv) is None  # type: ignore[arg-type]
    if argv[0].startswith("-"):
        return  # core options (--list)
    program.create_config()
    program.parse_core(["runbook", *argv])
    program.parse_collection()
    program.parse_tasks()
    assert program.tasks, where


QUICK = [(where, args) for where, args in EXAMPLES if quick(args)]


def test_the_docs_have_quick_examples_to_run() -> None:
    assert len(QUICK) >= 10
    assert any("--dry-run" in args for _, args in QUICK)


@pytest.fixture(scope="module")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running sandbox (emulators, no bot) and the environment a terminal would have."""
    from runbooks.engine.settings import read_sandbox_env
    from tests.conftest import AUDIT_KEY
    from tests.support.waiting import wait_for

    tmp = tmp_path_factory.mktemp("docs-sandbox")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK")}
    env.update(
        RUNBOOK_BOT_STATE=str(tmp / "state.db"),
        RUNBOOK_BOT_HOME=str(tmp / "home"),
        RUNBOOK_BOT_CONFIG=str(ROOT / "config"),
        RUNBOOK_BOT_AUDIT_KEY=AUDIT_KEY,
        RUNBOOK_USER="alice",
        COLUMNS="200",
        XDG_CACHE_HOME=str(tmp / "cache"),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        env_file = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox" / "env"
        wait_for(env_file.exists, what="the sandbox env file")
        read_sandbox_env(env_file)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(("where", "args"), QUICK, ids=[w for w, _ in QUICK])
def test_a_quick_documented_command_runs_as_written(
    where: str, args: str, sandbox_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [str(BIN / "invoke"), *shlex.split(args)],
        env={**sandbox_env, **PREFIXES.get(args, {})},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{where}\n{result.stdout[-800:]}\n{result.stderr[-800:]}"
    assert result.stdout.strip(), where
