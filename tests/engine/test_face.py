"""The engine's public face (``runbooks/engine/__init__.py``, issue #31): what the front ends
import. Each name resolves, at run time, to the very object the module's ``TYPE_CHECKING``
imports name for the type checker, whatever else has been imported first."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types

import pytest

import runbooks.engine
from tests.conftest import ROOT


def _declared() -> dict[str, tuple[str, str | None]]:
    """Face name -> (module, attribute or None for a module), read from the ``TYPE_CHECKING``
    block of ``runbooks/engine/__init__.py``: what mypy checks the front ends against."""
    tree = ast.parse((ROOT / "runbooks" / "engine" / "__init__.py").read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    )
    declared: dict[str, tuple[str, str | None]] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.unparse(node)
        for alias in node.names:
            declared[alias.asname or alias.name] = (node.module, alias.name)
    return declared


def _expected(module: str, attribute: str | None) -> object:
    found = importlib.import_module(module)
    try:
        return getattr(found, attribute) if attribute else found
    except AttributeError:  # ``from package import submodule``
        return importlib.import_module(f"{module}.{attribute}")


def _import_every_engine_module() -> None:
    """Import each module under runbooks.engine: importing ``runbooks.engine.X`` sets the
    package's attribute ``X`` to the module, which would shadow a face name ``X``."""
    for info in pkgutil.walk_packages(runbooks.engine.__path__, "runbooks.engine."):
        importlib.import_module(info.name)


def test_every_face_name_is_declared_for_the_type_checker_and_listed() -> None:
    assert sorted(_declared()) == sorted(runbooks.engine.__all__)


def test_every_face_name_resolves_to_what_the_type_checker_was_told() -> None:
    _import_every_engine_module()
    wrong = []
    for name, (module, attribute) in sorted(_declared().items()):
        got = getattr(runbooks.engine, name)
        if got is not _expected(module, attribute):
            wrong.append(f"runbooks.engine.{name} is {got!r}, not {module}.{attribute}")
    assert wrong == [], "\n".join(wrong)


def test_no_face_name_is_a_submodule_of_the_engine() -> None:
    """``from runbooks.engine import redact`` would give the module ``runbooks.engine.redact``
    once anything had imported it: the face calls that function ``redact_value``."""
    submodules = {info.name for info in pkgutil.iter_modules(runbooks.engine.__path__)}
    assert submodules & set(runbooks.engine.__all__) == set()


def test_a_name_off_the_face_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="'Journal'"):
        runbooks.engine.__getattr__("Journal")
    assert isinstance(runbooks.engine.drill_evidence, types.ModuleType)
