"""The ``runbook`` console script: invoke's Program with our exit-code contract.

invoke exits 1 on its own parse errors (unknown task, unknown flag, missing argument); our
contract says 2 for invalid input, so parse errors are turned into ``Exit(code=2)``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit, ParseError
from invoke.program import Program

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_PENDING = 0, 1, 2, 3


class RunbookProgram(Program):
    """Program whose parse errors exit 2, with our collection as the namespace."""

    def run(self, argv: list[str] | None = None, exit: bool = True) -> None:
        """``runbook TASK ... --help`` means ``runbook --help TASK``.

        invoke's parser would otherwise complain about missing positionals first, or even take
        ``--help`` as a positional value.
        """
        args = list(sys.argv if argv is None else argv)
        task = wants_task_help(args[1:])
        if task is not None:
            args = [args[0], "--help", task]
        super().run(args, exit)

    def parse_core_args(self) -> None:
        try:
            super().parse_core_args()
        except ParseError as exc:
            raise Exit(
                f"{exc}\n(use --list to see the tasks, or TASK --help)", code=EXIT_REFUSED
            ) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise Exit(
                f"{exc}\n(use --list to see the tasks, or TASK --help)", code=EXIT_REFUSED
            ) from None

    def parse_core(self, argv: Any) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(str(exc), code=EXIT_REFUSED) from None


HELP_FLAGS = ("--help", "-h")


def wants_task_help(args: list[str]) -> str | None:
    """The task in ``TASK ... --help`` (or ``-h``), else None."""
    if args and not args[0].startswith("-") and any(a in HELP_FLAGS for a in args[1:]):
        return args[0]
    return None


def help_first_for_invoke() -> None:
    """Make plain ``invoke TASK --help`` mean ``invoke --help TASK``, as ``runbook`` does.

    invoke parses its core flags before it imports ``tasks.py``, and after the import parses
    the rest against the tasks, where ``--help`` after a task name becomes the value of the
    task's first positional argument (``invoke rollback --help`` would roll back environment
    "--help"; a task with two positionals fails to parse). ``tasks.py`` calls this while
    invoke imports it: the core parse is done, so the help request is moved there.
    """
    import invoke.main

    program = getattr(invoke.main, "program", None)
    core = getattr(program, "core", None)
    if not core:
        return
    task = wants_task_help(list(core.unparsed))
    if task is not None:
        core[0].args["help"].value = task
        core.unparsed = []


def build_program() -> RunbookProgram:
    from runbook_cli.collection import build_namespace

    namespace: Collection = build_namespace()
    return RunbookProgram(name="runbook", binary="runbook", namespace=namespace, version="0.1.0")


def main() -> None:
    try:
        build_program().run()
    except BrokenPipeError:  # `runbook --list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_FAILED)
