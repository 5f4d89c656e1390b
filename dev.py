#!/usr/bin/env python3
"""Bootstrap runbook-bot on a machine that has nothing but Python 3.11+.

    python3 dev.py serve [--port N]  install into .venv if needed, start the sandbox and the bot
    python3 dev.py test  [--fast] [PYTEST ARGS...]
                                     install dev extras (and mongosh, with npm) if needed, run
                                     ruff, mypy, import-linter, deptry and the whole pytest
                                     suite on WORKERS xdist workers; --fast leaves out the tests
                                     marked slow (process journeys), the static checks still run
    python3 dev.py install           install only (used by the Dockerfile-free CI path)

Uses only the standard library. The virtualenv is reinstalled when pyproject.toml changes
(a stamp file holds its hash), so repeated runs start at once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("RUNBOOK_BOT_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _stamp(extra: str) -> Path:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    return VENV / f".installed-{extra}-{digest}"


#: The packages a user's install must import whole, by extra: a module that imports what the
#: extra does not declare fails here, at install time, naming the module (not at first use).
PACKAGES = {"sandbox": ("bot", "runbooks", "runbook_cli", "reports", "sandbox")}
PACKAGES["dev"] = PACKAGES["sandbox"]
#: What the container image runs (Dockerfile: `pip install .`, no extras).
RUNTIME_ONLY = ("bot", "runbooks", "runbook_cli", "reports")

IMPORT_CHECK = """
import importlib, pkgutil, sys
failed = []
for package in sys.argv[1:]:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as error:
            failed.append(f"{info.name}: {error}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def _pip_works() -> bool:
    if not PY.exists():
        return False
    probe = subprocess.run([str(PY), "-m", "pip", "--version"], capture_output=True, check=False)
    return probe.returncode == 0


def ensure_installed(*, dev: bool) -> None:
    """Create .venv and install the project (with dev extras when asked), once per pyproject.

    The stamp is written only after pip succeeded and every module of the project imported, so
    an install that failed or was interrupted is repaired by the next run, and a dependency
    missing from the extra is named at once (``No module named 'mongomock'``)."""
    extra = "dev" if dev else "sandbox"
    stamp = _stamp(extra)
    if stamp.exists() or (not dev and _stamp("dev").exists()):
        return
    if not _pip_works():  # new, or a creation that was interrupted before pip was in place
        print(f"creating virtualenv {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=PY.exists()).create(VENV)
    target = f".[{extra}]"
    print(f"installing runbook-bot[{extra}] into {VENV} (first run only)", flush=True)
    result = subprocess.run(
        [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:  # pip's own chatter is shown only when it matters
        sys.stdout.write(result.stdout + result.stderr)
        raise SystemExit(
            f"installing runbook-bot failed (pip exit {result.returncode}); run the same "
            "command again to retry"
        )
    check = subprocess.run(
        [str(PY), "-c", IMPORT_CHECK, *PACKAGES[extra]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        sys.stdout.write(check.stdout + check.stderr)
        raise SystemExit(
            f"runbook-bot[{extra}] installed, but the modules above cannot import: a dependency "
            f"is missing from pyproject.toml (the runtime list or the [{extra}] extra)"
        )
    for old in VENV.glob(".installed-*"):
        if old.name.startswith(f".installed-{extra}-"):
            old.unlink()
    stamp.touch()


TOOLS = ROOT / ".tools"
MONGOSH = TOOLS / "mongosh" / "node_modules" / ".bin" / "mongosh"


def ensure_tools() -> None:
    """mongosh (npm), an independent MongoDB client the tests use as an oracle for the
    sandbox's wire server; installed once under .tools/ when npm is there."""
    if MONGOSH.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: the mongosh oracle test will be skipped", flush=True)
        return
    print(f"installing mongosh into {MONGOSH.parents[2]} (first run only)", flush=True)
    result = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(MONGOSH.parents[2]),
            "mongosh@2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.stdout.write(result.stdout + result.stderr)
        raise SystemExit(f"installing mongosh failed (npm exit {result.returncode})")


#: xdist workers. Measured on the 2-core machine (tests/cli, 64 tests, load 3.6-4.8 from other
#: work): serial 210 s, -n 2 152 s, -n 3 55 s, -n 4 74 s. Most tests wait on subprocesses and
#: the wall clock rather than compute, so more workers than cores pay (docs/testing.md).
#: Whole suite, quiet, 2026-12-05 (847 tests): -n 3 484 s, -n 4 446 s, -n 5 448 s.
#: A later ``-n`` in the arguments wins (``python3 dev.py test -n 0`` runs in one process).
WORKERS = "4"
#: At most this many tests handed to a worker at once (xdist's first hand-out is otherwise a
#: quarter of each worker's share, 70 consecutive tests): with the process journeys collected
#: first (tests/conftest.py), they spread over the workers and start at once.
SCHEDULE_CHUNK = "4"


def pytest_args(args: list[str]) -> list[str]:
    """pytest's arguments for ``dev.py test [--fast] ARGS``: on WORKERS workers, the given
    arguments after ours so that they win; ``--fast`` leaves out the ``slow`` tests."""
    fast = "--fast" in args
    rest = [a for a in args if a != "--fast"]
    return [
        "-n", WORKERS, "--maxschedchunk", SCHEDULE_CHUNK,
        *(["-m", "not slow"] if fast else []), *rest,
    ]  # fmt: skip


def run_tests(args: list[str]) -> int:
    """Run every check CI runs, in order, stopping at the first failure."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Bytecode cached under the virtualenv even where the environment says not to write it
    # beside the sources (PYTHONDONTWRITEBYTECODE): the suite starts about 150 interpreters
    # (workers, bots, the CLI), and each compiled the project from source (0.5 s -> 0.37 s
    # to import the bot; --fast 112 s -> 104 s, one run each).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(VENV / "pycache"))
    checks: list[list[str]] = [
        [str(PY), "-m", "ruff", "check", "."],
        [str(PY), "-m", "ruff", "format", "--check", "."],
        [str(PY), "-m", "mypy"],
        [str(BIN / "lint-imports")],
        # Declared against imported (configured in pyproject.toml's [tool.deptry]): the runtime
        # and sandbox code; the runtime packages alone, with the sandbox extra counted as
        # development-only (the container installs neither); tests and bench, which may use any.
        [str(BIN / "deptry"), "."],
        [str(BIN / "deptry"), *RUNTIME_ONLY, "--optional-dependencies-dev-groups", "dev,sandbox"],
        [
            str(BIN / "deptry"),
            "tests",
            "bench",
            "--exclude",
            r"\.venv",
            "--ignore",
            "DEP002,DEP004",
        ],
        [str(PY), "-m", "pytest", "-W", "error", *pytest_args(args)],
    ]
    for argv in checks:
        print(
            "$ " + " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)),
            flush=True,
        )
        code = subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode
        if code != 0:
            return code
    return 0


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "serve":
        ensure_installed(dev=False)
        # The sandbox (Kubernetes emulators) and the bot together; Ctrl-C stops both.
        os.execv(str(PY), [str(PY), "-m", "sandbox", "up", "--bot", *rest])  # noqa: S606
    if command == "test":
        ensure_installed(dev=True)
        ensure_tools()
        return run_tests(rest)
    if command == "install":
        ensure_installed(dev=True)
        return 0
    print(f"unknown command {command!r}; use one of: serve, test, install", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
