"""Every command example in README.md and docs/ names a real task with options that parse.

Lines in fenced code blocks that run ``invoke`` or ``runbook`` (after any ``VAR=value``
prefixes, ``source ... &&`` and before a ``#`` comment) are parsed against the real
collection exactly as the program would parse them, without running anything.
"""

from __future__ import annotations

import re
import shlex

import pytest

from runbook_cli.program import build_program, unknown_option
from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        for block in FENCE.findall(path.read_text(encoding="utf-8")):
            for line in block.splitlines():
                command = line.split(" #", 1)[0].strip()
                command = command.split("&&")[-1].strip()
                words = shlex.split(command) if command else []
                while words and re.match(r"^[A-Z_]+=", words[0]):
                    words.pop(0)
                if words and words[0] in {"invoke", "runbook"} and len(words) > 1:
                    found.append((f"{path.name}: {line.strip()}", shlex.join(words[1:])))
    return found


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
