"""Output for scripts: a pipe gets whole lines (never cut at 80 columns) and a reader that
leaves early (``| head``) ends the command quietly, from ``runbook`` and ``invoke`` alike."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import BIN, ROOT, run_cli

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses

#: Longer than any terminal's default 80 columns, and one word rich could not break.
LONG_REASON = "quarterly-check-" + "x" * 120


def piped(env: dict[str, str]) -> dict[str, str]:
    """The environment of a script: no COLUMNS (the tests' fixture sets 200)."""
    return {k: v for k, v in env.items() if k not in {"COLUMNS", "LINES"}}


def test_output_into_a_pipe_keeps_whole_lines(cli_env: dict[str, str]) -> None:
    env = piped(cli_env)
    ran = run_cli(["selftest", "development", "--yes", "--reason", LONG_REASON], env)
    assert ran.returncode == 0, ran.stderr
    (reason_line,) = [line for line in ran.stdout.splitlines() if "quarterly-check-" in line]
    assert LONG_REASON in reason_line
    assert not [line for line in ran.stdout.splitlines() if "…" in line], ran.stdout

    listed = run_cli(["runs.list"], env)
    assert listed.returncode == 0, listed.stderr
    executions = json.loads(run_cli(["runs.list", "--json"], env).stdout)
    (row,) = [line for line in listed.stdout.splitlines() if executions[0]["id"] in line]
    assert "selftest" in row and "development" in row and "…" not in row, listed.stdout


@pytest.mark.parametrize("program", ["runbook", "invoke"])
@pytest.mark.parametrize(
    "args", [["--list"], ["audit.export", "--format", "jsonl"]], ids=["list", "export"]
)
def test_a_reader_that_leaves_early_ends_the_command_quietly(
    cli_env: dict[str, str], program: str, args: list[str]
) -> None:
    env = piped(cli_env)
    for _ in range(3):  # enough audit records that the export writes many lines
        assert run_cli(["selftest", "development", "--yes"], env).returncode == 0
    with subprocess.Popen(
        [str(BIN / program), *args],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as command:
        assert command.stdout is not None and command.stderr is not None
        command.stdout.close()  # the reader left before the first line: every write is EPIPE
        errors = command.stderr.read()
        code = command.wait(timeout=60)
    assert "Traceback" not in errors and "BrokenPipeError" not in errors, errors
    assert errors == ""
    assert code == 128 + 13
