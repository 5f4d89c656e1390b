"""Label and field selectors as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, str]], bool]
_SET = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _set_check(key: str, values: set[str], *, negate: bool) -> Matcher:
    return lambda labels: (labels.get(key) in values) != negate


def _equality_check(key: str, value: str, *, negate: bool) -> Matcher:
    return lambda labels: (labels.get(key) == value) != negate


def _exists_check(key: str, *, negate: bool) -> Matcher:
    return lambda labels: (key in labels) != negate


def parse_label_selector(selector: str | None) -> Matcher:
    """``app=api,tier!=db,env in (a,b),!legacy,release`` -> predicate over labels."""
    if not selector:
        return lambda labels: True
    checks: list[Matcher] = []
    for term in _split(selector):
        if match := _SET.match(term):
            values = {v.strip() for v in match.group(3).split(",") if v.strip()}
            checks.append(_set_check(match.group(1), values, negate=match.group(2) == "notin"))
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            checks.append(_equality_check(key, value, negate=True))
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            checks.append(_equality_check(key, value, negate=False))
        elif term.startswith("!"):
            checks.append(_exists_check(term[1:].strip(), negate=True))
        else:
            checks.append(_exists_check(term, negate=False))
    return lambda labels: all(check(labels) for check in checks)


def selector_from_match_labels(selector: dict[str, Any]) -> Matcher:
    """A LabelSelector object (matchLabels and matchExpressions) -> predicate."""
    wanted = dict(selector.get("matchLabels") or {})
    expressions = selector.get("matchExpressions") or []

    def matches(labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in wanted.items()):
            return False
        for expr in expressions:
            key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
            if (
                (op == "In" and labels.get(key) not in values)
                or (op == "NotIn" and labels.get(key) in values)
                or (op == "Exists" and key not in labels)
                or (op == "DoesNotExist" and key in labels)
            ):
                return False
        return True

    return matches


def parse_field_selector(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    """``metadata.name=x,metadata.namespace!=y`` -> predicate over objects."""
    if not selector:
        return lambda obj: True
    checks = []
    for term in _split(selector):
        negate = "!=" in term
        path, value = (s.strip() for s in term.replace("==", "=").replace("!=", "=").split("=", 1))

        def get(obj: dict[str, Any], p: str = path) -> Any:
            for part in p.split("."):
                obj = obj.get(part, {}) if isinstance(obj, dict) else {}
            return obj if obj != {} else ""

        checks.append((get, value, negate))
    return lambda obj: all((getter(obj) == v) != neg for getter, v, neg in checks)
