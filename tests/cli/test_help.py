"""``TASK --help`` and ``TASK -h`` print the task's help, for every task, through both entry
points (``invoke`` and ``runbook``); before, 17 of 32 tasks took ``--help`` as the value of
their first required argument."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook_cli.collection import build_namespace
from runbook_cli.program import build_program
from tests.conftest import BIN, ROOT

NAMESPACE = build_namespace()


def task_names() -> list[str]:
    names: list[str] = []

    def walk(collection: object, prefix: str) -> None:
        for name in collection.tasks:  # type: ignore[attr-defined]
            default = name == collection.default  # type: ignore[attr-defined]
            names.append(prefix.rstrip(".") if default else f"{prefix}{name}")
        for name, sub in collection.collections.items():  # type: ignore[attr-defined]
            walk(sub, f"{prefix}{name}.")

    walk(NAMESPACE, "")
    return sorted(names)


TASKS = task_names()


def test_the_task_list_is_the_whole_product() -> None:
    assert len(TASKS) >= 30
    assert {"rollback", "rollback.history", "dr.failover", "runs.show", "audit.verify"} <= set(
        TASKS
    )


def entry_point(
    program: str, args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``invoke`` or ``runbook`` from the checkout, as a person would."""
    return subprocess.run(
        [str(BIN / program), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _is_help_for(name: str, out: str) -> bool:
    return out.startswith("Usage: ") and f" {name} [" in out.splitlines()[0]


def _help_failures(
    run: Callable[..., object], program: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> list[str]:
    """Every task's ``TASK FLAG`` through a program object's ``run`` (``exit=False``, output
    captured): what did not print that task's help."""
    failures = []
    for name in TASKS:
        try:
            run([program, name, flag], exit=False)
        except BaseException as exc:
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        out = capsys.readouterr().out
        if not _is_help_for(name, out):
            failures.append(f"{name}: {out[:120]!r}")
    return failures


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_task_prints_its_help_through_runbook(
    flag: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_USER", "nobody-known")  # help must not need an identity
    assert _help_failures(build_program().run, "runbook", flag, capsys) == []


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_task_prints_its_help_through_invoke(
    flag: str,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """invoke's own program object (``invoke.main.program``, what the ``invoke`` console script
    runs), in the checkout so it finds ``tasks.py`` as a person's shell would. One interpreter
    for every task: the console script itself is the next test's."""
    from invoke.main import program

    for key in [k for k in os.environ if k.startswith("RUNBOOK")]:
        monkeypatch.delenv(key)
    for key, value in {**cli_env, "RUNBOOK_USER": "nobody-known"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)
    assert _help_failures(program.run, "invoke", flag, capsys) == []


@pytest.mark.slow  # an invoke process per sampled task
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_invoke_console_script_prints_a_tasks_help(cli_env: dict[str, str], flag: str) -> None:
    """The console script as a process, for a task of each kind: a default task of a
    collection, a task inside one, and a task at the top."""
    env = {**cli_env, "RUNBOOK_USER": "nobody-known"}
    sample = ["rollback", "dr.failover", "runs.show", "audit.verify", TASKS[0], TASKS[-1]]
    failures = []
    for name in dict.fromkeys(sample):
        result = entry_point("invoke", [name, flag], env)
        if result.returncode != 0 or not _is_help_for(name, result.stdout):
            failures.append(f"{name}: exit {result.returncode}: {result.stderr[-200:]!r}")
    assert failures == []


@pytest.mark.slow  # invoke or runbook as a process
def test_help_after_the_arguments_too(cli_env: dict[str, str]) -> None:
    result = entry_point(
        "invoke", ["rollback", "production", "--service", "api", "--help"], cli_env
    )
    assert result.returncode == 0 and _is_help_for("rollback", result.stdout)


@pytest.mark.slow  # invoke or runbook as a process
@pytest.mark.parametrize("entry", ["invoke", "runbook"])
def test_a_mistyped_option_gets_the_nearest_one(entry: str, cli_env: dict[str, str]) -> None:
    args = ["scale.pods", "production", "--service", "api", "--replica", "6"]
    result = entry_point(entry, args, cli_env)
    assert result.returncode == 2
    assert "scale.pods has no option --replica; did you mean --replicas?" in result.stderr


def _integer_parameters() -> list[tuple[str, str]]:
    from runbook_cli.collection import task_table

    return [
        (str(info["name"]), str(param["name"]))
        for info in task_table()
        for param in info["params"]
        if param.get("kind") == "int"
    ]


def test_every_integer_parameter_is_shown_as_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    pairs = _integer_parameters()
    assert ("scale.pods", "replicas") in pairs and ("rollback", "to_revision") in pairs
    failures = []
    for task, param in pairs:
        build_program().run(["runbook", task, "--help"], exit=False)
        out = capsys.readouterr().out
        flag = "--" + param.replace("_", "-")
        if f"{flag}=INT" not in out:
            failures.append(f"{task} {flag}: {[ln for ln in out.splitlines() if flag in ln]}")
    assert failures == []


@pytest.mark.slow  # invoke or runbook as a process
@pytest.mark.parametrize("entry", ["invoke", "runbook"])
@pytest.mark.parametrize(
    "args",
    [
        ["scale.pods", "production", "api", "six"],
        ["scale.pods", "production", "api", "--replicas", "six"],
        ["scale.pods", "production", "--replicas=six", "api"],
    ],
)
def test_a_word_for_a_number_is_refused_clearly(
    entry: str, args: list[str], cli_env: dict[str, str]
) -> None:
    result = entry_point(entry, args, cli_env)
    assert result.returncode == 2, result.stderr
    assert "scale.pods: --replicas must be a whole number, not 'six'" in result.stderr
    assert "Traceback" not in result.stderr


def listed_descriptions(listing: str) -> dict[str, str]:
    """``--list``'s task names and descriptions, a wrapped description joined again."""
    found: dict[str, str] = {}
    current = ""
    for line in listing.splitlines()[1:]:
        if not line.strip():
            continue
        if not line.startswith(" " * 4):  # `  name   description`: a new task
            name, _, text = line.strip().partition(" ")
            current = name
            found[current] = text.strip()
        elif current:
            found[current] += " " + line.strip()
    return found


@pytest.mark.slow  # invoke or runbook as a process
@pytest.mark.parametrize("program", ["runbook", "invoke"])
def test_list_shows_each_task_s_whole_first_sentence(program: str, tmp_path: Path) -> None:
    listed = subprocess.run(
        [str(BIN / program), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PATH": str(BIN), "COLUMNS": "100", "XDG_CACHE_HOME": str(tmp_path)},
    )
    descriptions = listed_descriptions(listed.stdout)
    assert len(descriptions) >= len(task_names()) - 1, listed.stdout
    cut = {name: text for name, text in descriptions.items() if not text.endswith((".", ")"))}
    assert cut == {}, listed.stdout


def _configured_environments() -> list[str]:
    """The oracle: the sandbox configuration's environments, read with plain YAML."""
    import yaml

    document = yaml.safe_load((ROOT / "config" / "environments.yaml").read_text())
    return list(document["environments"])


@pytest.mark.slow  # invoke or runbook as a process
@pytest.mark.parametrize("entry", ["invoke", "runbook"])
def test_a_missing_environment_names_the_configured_ones(
    entry: str, cli_env: dict[str, str]
) -> None:
    environments = _configured_environments()
    assert "rehearsal" in environments
    result = entry_point(entry, ["rollback"], cli_env)
    assert result.returncode == 2, result.stderr
    assert f"rollback needs ENVIRONMENT: one of {', '.join(environments)}" in result.stderr
    other = entry_point(entry, ["runs.show"], cli_env)
    assert other.returncode == 2 and "runs.show needs ID" in other.stderr
    assert "Traceback" not in result.stderr + other.stderr


@pytest.mark.slow  # invoke or runbook as a process
@pytest.mark.parametrize("entry", ["invoke", "runbook"])
def test_environment_help_lists_the_configured_environments(
    entry: str, cli_env: dict[str, str]
) -> None:
    choices = ", ".join(_configured_environments())
    for args in (["rollback", "--help"], ["scale.pods", "-h"], ["--help", "selftest"]):
        result = entry_point(entry, args, cli_env)
        assert result.returncode == 0, result.stderr
        shown = " ".join(result.stdout.split())
        assert f"(one of: {choices})" in shown, (args, shown)
