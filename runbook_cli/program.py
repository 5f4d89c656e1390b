"""The ``runbook`` console script: invoke's Program with our exit-code contract.

invoke exits 1 on its own parse errors (unknown task, unknown flag, missing argument); our
contract says 2 for invalid input, so parse errors are turned into ``Exit(code=2)``.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit, ParseError
from invoke.program import Program

from runbook_cli.exit_codes import EXIT_REFUSED, reader_left

#: invoke's ``--list`` line for a collection's default task: ``rollback.rollback (rollback)``.
DEFAULT_LISTED = re.compile(r"(?P<ns>[\w.-]+)\.(?P<name>[\w-]+) \((?P=ns)\)")


def clean_default_listing(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``--list`` pairs with a collection's default task listed by the name people type
    (``rollback``, not ``rollback.rollback (rollback)``), ahead of its siblings."""
    defaults, others = [], []
    for full, text in pairs:
        found = DEFAULT_LISTED.fullmatch(full)
        if found and found["ns"].rsplit(".", 1)[-1] == found["name"]:
            defaults.append((found["ns"], text))
        else:
            others.append((full, text))
    return defaults + others


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
        elif self.namespace is not None and (problem := unknown_option(self.namespace, args[1:])):
            print(problem, file=sys.stderr)
            if exit:
                raise SystemExit(EXIT_REFUSED)
            raise Exit(code=EXIT_REFUSED)
        super().run(args, exit)

    def print_task_help(self, name: str) -> None:
        show_configured_choices(self, name)
        super().print_task_help(name)

    def _make_pairs(
        self, coll: Collection, ancestors: list[str] | None = None
    ) -> list[tuple[str, Any]]:
        return clean_default_listing(super()._make_pairs(coll, ancestors))

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


def configured_environments() -> list[str]:
    """The environments of the configuration in use (``RUNBOOK_BOT_CONFIG`` or the checkout's
    ``config/``), in its order; none when it cannot be read (the error comes when it is used).

    Read only for help and for a missing environment: ``--list`` and parsing stay fast.
    """
    from runbooks.engine import load_config, load_settings
    from runbooks.engine.errors import RunbookError

    try:
        return load_config(load_settings().config_dir).environment_names()
    except (RunbookError, OSError):
        return []


def show_configured_choices(program: Program, name: str) -> None:
    """Add the configured environments to the help of task ``name``'s required
    ``--environment`` (one of: …), in the parser context invoke prints the help from.

    An optional one (``dr.simulate``: non-production only; ``incident.list``: a filter)
    says in its own words which it takes.
    """
    argument = program.parser.contexts[name].args.get("environment")
    if argument is None or not argument.positional or "(one of:" in (argument.help or ""):
        return
    names = configured_environments()
    if names:
        argument.help = f"{argument.help} (one of: {', '.join(names)})"


def wants_task_help(args: list[str]) -> str | None:
    """The task in ``TASK ... --help`` (or ``-h``), else None."""
    if args and not args[0].startswith("-") and any(a in HELP_FLAGS for a in args[1:]):
        return args[0]
    return None


def unknown_option(collection: Collection, args: list[str]) -> str | None:
    """Say what is wrong with ``TASK ... --flag`` when the task has no such option, with the
    nearest one it has, or when an integer option's value is not a number; None when the
    arguments parse.

    invoke takes an unknown ``--replica`` for the value of a positional argument (or answers
    "No idea what '6' is!"); people should hear which option they meant instead.
    """
    import difflib

    names = [a for a in args if not a.startswith("-")]
    task_name = names[0] if names else None
    if task_name is None:
        return None
    try:
        task = collection[task_name]
    except (KeyError, ValueError):
        return None
    arguments = task.get_arguments()
    known = {name for argument in arguments for name in argument.names}
    by_name = {name: argument for argument in arguments for name in argument.names}
    positionals = [a for a in arguments if a.positional]
    rest = args[args.index(task_name) + 1 :]
    index = 0
    while index < len(rest):
        arg = rest[index]
        index += 1
        if arg == "--":
            break
        if not arg.startswith("--") or arg == "--help":
            if not arg.startswith("-") and positionals:
                problem = _bad_value(task_name, positionals.pop(0), arg)
                if problem:
                    return problem
            continue
        flag, has_value, value = arg[2:].partition("=")
        if flag not in known:
            near = difflib.get_close_matches(flag, sorted(known), n=1)
            guess = f"; did you mean --{near[0]}?" if near else ""
            return (
                f"{task_name} has no option --{flag}{guess} "
                f"(`{task_name} --help` lists its options)"
            )
        argument = by_name[flag]
        if argument in positionals:
            positionals.remove(argument)
        if argument.kind is bool:
            continue
        if not has_value and index < len(rest):
            value = rest[index]
            index += 1
        problem = _bad_value(task_name, argument, value)
        if problem:
            return problem
    if positionals and not any(a in HELP_FLAGS for a in args):  # `--help TASK`: help
        return _missing(task_name, positionals)
    return None


def _missing(task_name: str, positionals: list[Any]) -> str:
    """``rollback needs ENVIRONMENT: one of development, staging, …``: what is missing, with
    the values the configuration allows where it knows them."""
    names = " ".join(argument.name.upper() for argument in positionals)
    choices = ""
    if positionals[0].name == "environment" and (known := configured_environments()):
        choices = f": one of {', '.join(known)}"
    return f"{task_name} needs {names}{choices} (`{task_name} --help` lists its options)"


def _bad_value(task_name: str, argument: Any, value: str) -> str | None:
    """What is wrong with ``value`` for an integer option (invoke would raise a traceback)."""
    if argument.kind is not int:
        return None
    try:
        int(value)
    except ValueError:
        return (
            f"{task_name}: --{argument.name} must be a whole number, not {value!r} "
            f"(e.g. --{argument.name} 3)"
        )
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
    if (task is not None or core[0].args["help"].value) and isinstance(program, Program):
        helping = program
        shown = helping.print_task_help

        def with_choices(name: str) -> None:
            show_configured_choices(helping, name)
            shown(name)

        setattr(helping, "print_task_help", with_choices)  # noqa: B010 - mypy: a method
        return
    from runbook_cli.collection import build_namespace

    problem = unknown_option(build_namespace(), list(core.unparsed))
    if problem is not None:
        print(problem, file=sys.stderr)
        raise SystemExit(EXIT_REFUSED)


def build_program() -> RunbookProgram:
    from runbook_cli.collection import build_namespace

    namespace: Collection = build_namespace()
    return RunbookProgram(name="runbook", binary="runbook", namespace=namespace, version="0.1.0")


def main() -> None:
    try:
        try:
            build_program().run()
        finally:
            sys.stdout.flush()  # here, not at the interpreter's exit, where it cannot be caught
    except BrokenPipeError:  # `runbook --list | head`: the reader left; say nothing more
        sys.exit(reader_left())


def clean_listing_for_invoke() -> None:
    """Give ``invoke --list`` the listing ``runbook --list`` has: a collection's default task
    by its plain name (``rollback``). ``tasks.py`` calls this while invoke imports it, before
    the listing is made, so wrapping the running program's pair maker covers it."""
    import invoke.main

    program = getattr(invoke.main, "program", None)
    if program is None:
        return
    make = program._make_pairs

    def pairs(coll: Collection, ancestors: list[str] | None = None) -> list[tuple[str, Any]]:
        return clean_default_listing(make(coll, ancestors))

    setattr(program, "_make_pairs", pairs)  # noqa: B010 - mypy: a method


def quiet_when_the_reader_leaves() -> None:
    """Give ``invoke``'s own program the same quiet exit on a closed pipe as ``runbook``.

    ``tasks.py`` calls this while invoke imports it: invoke's listing, help and task
    execution come later, so wrapping them on the running program covers them.
    """
    import invoke.main

    program = getattr(invoke.main, "program", None)
    if program is None:
        return
    for name in ("parse_cleanup", "execute"):
        step = getattr(program, name)

        def quiet(*args: Any, _step: Any = step, **kwargs: Any) -> Any:
            try:
                try:
                    return _step(*args, **kwargs)
                finally:
                    sys.stdout.flush()
            except BrokenPipeError:
                raise Exit(code=reader_left()) from None

        setattr(program, name, quiet)
