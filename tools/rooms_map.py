"""Issue #31's rooms for runbooks/engine/: move the modules, rewrite every reference.

    python3 tools/rooms_map.py                 # git mv the modules, rewrite references
    python3 tools/rooms_map.py --imports-only  # rewrite only (a branch on the old layout)

Both are idempotent: a second run changes nothing. References rewritten, in the tracked
*.py, *.md, *.toml, *.cfg, *.ini and .importlinter files (this script excepted):
dotted names (``runbooks.engine.journal``, in imports and in strings alike), file paths
(``runbooks/engine/journal.py``), ``from runbooks.engine import journal`` (one name per
line, ``as`` kept; a renamed module is imported under its old name), relative imports
inside the engine, and the lazy table ``_WHERE`` of runbooks/engine/__init__.py.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

# old module (under runbooks.engine) -> new module (under runbooks.engine)
TABLE: dict[str, str] = {
    "executor": "engine",
    "approvals": "policy",
    "yamlfile": "config.yaml_files",
    "config": "config.loader",
    "schedule": "config.schedules",
    "journal": "lifecycle.journal",
    "requests": "lifecycle.requests",
    "locks": "lifecycle.locks",
    "decisions": "lifecycle.decisions",
    "runner": "lifecycle.runner",
    "leases": "background.leases",
    "outbox": "background.outbox",
    "supervisor": "background.supervisor",
    "readiness_watch": "background.readiness_watch",
    "drills": "requesters.drills",
    "alerts": "requesters.alerts",
    "evidence": "requesters.drill_evidence",
}

PACKAGES: dict[str, str] = {
    "config": "The engine's floor: the YAML files' schemas, the schedules, the loader.",
    "lifecycle": "A request's life: journal, requests, locks, decisions, runner.",
    "background": "A leader's background work: leases, outbox, supervisor, readiness watch.",
    "requesters": "Who asks for runs besides people: drills, alerts, a drill's evidence.",
}

# Lines the longer names push past 100 columns, rewrapped the same way on every branch
# (so that the rewritten lines merge without conflict): path -> [(rewritten, rewrapped)]
REWRAP: dict[str, list[tuple[str, str]]] = {
    "bot/metrics.py": [
        (
            "(``runbooks.engine.background.readiness_watch``) and when the leader\n"
            "        last evaluated",
            "(``runbooks.engine.background.readiness_watch``) and when the\n"
            "        leader last evaluated",
        )
    ],
    "bot/server.py": [
        (
            "(``runbooks.engine.background.readiness_watch``) on the ``readiness`` leader lease:"
            " it\n    wakes",
            "(``runbooks.engine.background.readiness_watch``) on the ``readiness`` leader lease:\n"
            "    it wakes",
        )
    ],
}

SUFFIXES = {".py", ".md", ".toml", ".cfg", ".ini"}
NAMES = {".importlinter"}
ROOT = Path(__file__).resolve().parent.parent
SELF = Path(__file__).resolve()


def _children(old: str) -> list[str]:
    """New submodules that live under the old module's name (config -> config.loader ...)."""
    prefix = old + "."
    return sorted(
        {new[len(prefix) :].split(".")[0] for new in TABLE.values() if new.startswith(prefix)}
    )


def _dotted(old: str) -> re.Pattern[str]:
    # after the move, "runbooks.engine.config" is the package: leave its children alone
    guard = "".join(rf"(?!\.{child}\b)(?! import {child}\b)" for child in _children(old))
    return re.compile(rf"\brunbooks\.engine\.{old}\b{guard}")


def _split(new: str) -> tuple[str, str]:
    parent, _, leaf = new.rpartition(".")
    return (f"runbooks.engine.{parent}" if parent else "runbooks.engine"), leaf


FROM_ENGINE = re.compile(
    r"^(?P<indent>[ \t]*)from runbooks\.engine import (?P<name>\w+)(?: as (?P<alias>\w+))?[ \t]*$",
    re.MULTILINE,
)
RELATIVE = re.compile(r"^(?P<indent>[ \t]*)from \.(?P<name>\w+) import ", re.MULTILINE)
WHERE_VALUE = re.compile(r'^(?P<head>\s*"\w+":\s*")(?P<name>[\w.]+)(?P<tail>",)', re.MULTILINE)


def _from_engine(match: re.Match[str]) -> str:
    name, alias = match["name"], match["alias"]
    if name not in TABLE:
        return match[0]
    parent, leaf = _split(TABLE[name])
    bound = alias or name
    suffix = f" as {bound}" if bound != leaf else ""
    return f"{match['indent']}from {parent} import {leaf}{suffix}"


def _relative(match: re.Match[str]) -> str:
    name = match["name"]
    if name not in TABLE:
        return match[0]
    return f"{match['indent']}from runbooks.engine.{TABLE[name]} import "


def _where(match: re.Match[str]) -> str:
    name = match["name"]
    return f"{match['head']}{TABLE.get(name, name)}{match['tail']}"


def rewrite(text: str, path: Path) -> str:
    for old, new in TABLE.items():
        text = _dotted(old).sub(f"runbooks.engine.{new}", text)
        text = text.replace(
            f"runbooks/engine/{old}.py", f"runbooks/engine/{new.replace('.', '/')}.py"
        )
    if path.suffix == ".py":
        text = FROM_ENGINE.sub(_from_engine, text)
        engine_dir = ROOT / "runbooks" / "engine"
        if path.parent == engine_dir:
            text = RELATIVE.sub(_relative, text)
        if path == engine_dir / "__init__.py":
            text = WHERE_VALUE.sub(_where, text)
    for rewritten, rewrapped in REWRAP.get(path.relative_to(ROOT).as_posix(), []):
        text = text.replace(rewritten, rewrapped)
    return text


def tracked() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    paths = [ROOT / name for name in out.split("\0") if name]
    return [
        p for p in paths if p.is_file() and p != SELF and (p.suffix in SUFFIXES or p.name in NAMES)
    ]


def move() -> list[str]:
    engine = ROOT / "runbooks" / "engine"
    moved = []
    for old, new in TABLE.items():
        source = engine / f"{old}.py"
        if not source.exists():
            continue
        target = engine / f"{new.replace('.', '/')}.py"
        if old in PACKAGES:  # config.py makes way for the config/ package
            staging = engine / f"_{old}_moving.py"
            subprocess.run(["git", "mv", str(source), str(staging)], cwd=ROOT, check=True)
            source = staging
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "mv", str(source), str(target)], cwd=ROOT, check=True)
        moved.append(f"{old} -> {new}")
    for package, doc in PACKAGES.items():
        init = engine / package / "__init__.py"
        if not init.exists():
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text(f'"""{doc}"""\n')
            subprocess.run(["git", "add", str(init)], cwd=ROOT, check=True)
    return moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--imports-only", action="store_true", help="rewrite references; move no file"
    )
    args = parser.parse_args(argv)
    if not args.imports_only:
        for line in move():
            print(f"moved {line}")
    changed = []
    for path in tracked():
        before = path.read_text()
        after = rewrite(before, path)
        if after != before:
            path.write_text(after)
            changed.append(path)
            print(f"rewrote {path.relative_to(ROOT)}")
    print(f"{len(changed)} file(s) rewritten", file=sys.stderr)
    tidy([p for p in changed if p.suffix == ".py"])
    return 0


def tidy(paths: list[Path]) -> None:
    """Re-sort the rewritten imports (the new names sort elsewhere) with the project's ruff."""
    ruff = ROOT / ".venv" / "bin" / "ruff"
    if not paths:
        return
    if not ruff.exists():
        print("no .venv/bin/ruff: imports left unsorted (run ruff check --fix --select I)")
        return
    names = [str(p) for p in paths]
    # ruff tells first-party modules by their files: before the move (--imports-only) it took
    # the new names for third-party, and the sorted lines then conflicted with the moved tree
    first_party = "lint.isort.known-first-party = ['runbooks', 'runbook_cli', 'bot', 'sandbox']"
    sort = [str(ruff), "check", "-q", "--fix", "--select", "I", "--config", first_party]
    subprocess.run([*sort, *names], cwd=ROOT, check=False)
    subprocess.run([str(ruff), "format", "-q", *names], cwd=ROOT, check=True)


if __name__ == "__main__":
    raise SystemExit(main())
