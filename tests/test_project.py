"""The promises the repository makes: the two-command quick start, CI, the container."""

from __future__ import annotations

import re

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
