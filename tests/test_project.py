"""The promises the repository makes: the two-command quick start, CI, the container."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```\w*\n(.*?)```", section, re.S)
    assert block is not None, "Quick start has no code block"
    assert section.index("```") < section.find("\n## "), "the code block follows the heading"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_exactly_two_commands_serve_then_test() -> None:
    commands = quick_start_commands()
    assert commands == ["python3 dev.py serve", "python3 dev.py test"]


def test_ci_runs_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    test_command = quick_start_commands()[1]
    assert test_command in [line.strip() for line in script.splitlines()]
    assert "set -euo pipefail" in script


def test_dev_test_runs_every_check() -> None:
    dev = (ROOT / "dev.py").read_text()
    for check in (
        '"ruff", "check"',
        '"ruff", "format", "--check"',
        '"mypy"',
        "lint-imports",
        '"pytest", "-W", "error"',
    ):
        assert check in dev


def test_dockerfile_is_multistage_non_root_with_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2 and all("slim" in line for line in froms)
    final = lines[lines.index(froms[-1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    health = " ".join(line for line in final if "HEALTHCHECK" in line or "/health" in line)
    assert "HEALTHCHECK" in health and "/health" in health
    assert not any(re.search(r"apt-get install|gcc|build-essential", line) for line in final)
    assert any(line.startswith("COPY --from=build") for line in final)
    assert final[-1] == 'CMD ["python", "-m", "bot", "serve"]'


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/support/: a test module (or conftest, or a helper) that
    imports from a test module couples two tests' files and runs one's collection in the
    other. Lazy imports inside functions count too."""
    import ast

    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert offenders == [], "\n".join(offenders)


def _import_graph(package: Path, *, excluding: tuple[Path, ...] = ()) -> dict[str, set[str]]:
    """Which module of ``package`` (less the sub-packages ``excluding``) imports which, read
    with ast: imports inside functions count (they run too), imports under
    ``if TYPE_CHECKING:`` do not (they never run)."""
    import ast

    modules: dict[str, ast.Module] = {}
    for path in sorted(package.rglob("*.py")):
        if any(path.is_relative_to(excluded) for excluded in excluding):
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text(encoding="utf-8"))

    def type_checking_only(node: ast.If) -> bool:
        test = node.test
        return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )

    def imported(tree: ast.AST) -> set[str]:
        found: set[str] = set()
        for child in ast.iter_child_nodes(tree):
            if isinstance(child, ast.If) and type_checking_only(child):
                found |= {n for stmt in child.orelse for n in imported(stmt)}
                continue
            if isinstance(child, ast.Import):
                found |= {a.name for a in child.names}
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found |= {f"{child.module}.{a.name}" for a in child.names}
            found |= imported(child)
        return found

    return {name: imported(tree) & modules.keys() - {name} for name, tree in modules.items()}


def _import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of an import graph: its strongly connected components of more than one
    module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


@pytest.mark.parametrize("package", ["runbooks/engine", "runbook_cli"])
def test_no_import_cycle_among_modules(package: str) -> None:
    """The engine's modules form no import cycle (issue #31): the configuration schema does not
    import the alert intake or the drills' runtime; requesters import config, not the reverse.
    Nor do the terminal's: every task imports ``runbook_cli.exit_codes``, which imports none
    (the program imported the tasks and the tasks the program's exit codes)."""
    cycles = _import_cycles(_import_graph(ROOT / package))
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycle_among_the_runbook_modules() -> None:
    """Nor do the runbooks' (issue #31): ``runbooks.dr``'s modules, split from one, the other
    runbook and check modules, the kit, the catalog and the interfaces, counted together with
    the engine so that a cycle through two of them is found too. ``runbooks.adapters`` is left
    out: its factory (``runbooks/adapters/__init__.py``) imports each adapter lazily and
    ``git``, ``mongo`` and ``mongo_data`` import from it back (``manifests``, ``secret_env``),
    a cycle of its own."""
    runbooks = ROOT / "runbooks"
    graph = _import_graph(runbooks, excluding=(runbooks / "adapters",))
    assert {"runbooks.dr", "runbooks.dr.common", "runbooks.kit", "runbooks.scale"} <= graph.keys()
    cycles = _import_cycles(graph)
    assert cycles == [], "\n".join(" <-> ".join(c) for c in cycles)


def test_every_catalog_module_is_placed_in_the_import_contracts() -> None:
    """A runbook or check module the catalog loads is a layer of the ``layers`` contract and a
    member of ``runbooks-independent``: import-linter ignores a module no contract names, so
    a new module left out would be free to import a sibling (``maintenance_windows`` was)."""
    import configparser

    from runbooks.catalog import CHECK_MODULES, RUNBOOK_MODULES

    contracts = configparser.ConfigParser(interpolation=None)
    contracts.read(ROOT / ".importlinter", encoding="utf-8")
    layers = contracts["importlinter:contract:layers"]["layers"]
    placed = {m.strip() for line in layers.splitlines() for m in line.split("|") if m.strip()}
    independent = set(contracts["importlinter:contract:runbooks-independent"]["modules"].split())
    modules = set(RUNBOOK_MODULES + CHECK_MODULES)
    assert modules - placed == set(), "not a layer of [importlinter:contract:layers]"
    assert modules - independent == set(), "not in [importlinter:contract:runbooks-independent]"


def test_the_engine_holds_its_parts_rather_than_inheriting_them() -> None:
    """``Engine`` and the lifecycle's parts are composed (issue #31): no class there inherits
    another of them, and no ``NotImplementedError`` stub stands in for a part reached through
    ``self``."""
    import ast

    engine = ROOT / "runbooks" / "engine"
    paths = [engine / "engine.py", *sorted((engine / "lifecycle").glob("*.py"))]
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in paths}
    classes = {
        node.name
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef)
    }
    offenders = []
    for path, tree in trees.items():
        where = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                inherited = [
                    b.id for b in node.bases if isinstance(b, ast.Name) and b.id in classes
                ]
                if inherited:
                    offenders.append(f"{where}:{node.lineno} {node.name}({', '.join(inherited)})")
            elif isinstance(node, ast.Raise) and "NotImplementedError" in ast.unparse(node):
                offenders.append(f"{where}:{node.lineno} raises NotImplementedError")
    assert offenders == [], "\n".join(offenders)
