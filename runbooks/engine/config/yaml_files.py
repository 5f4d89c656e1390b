"""YAML as configuration needs it: a key given twice is an error, not a silent overwrite.

PyYAML's safe loader keeps the last of two equal keys, so a second ``staging:`` replaced the
first and the configuration still validated. ``load`` refuses that, naming the line of both.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node

from runbooks.engine.clock import parse_duration
from runbooks.engine.errors import ConfigError

#: A duration in a configuration file: seconds, or text such as ``30m`` or ``1h30m``.
Seconds = Annotated[float, BeforeValidator(parse_duration)]


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in any mapping."""

    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: let the base class complain
                    continue
                if first is not None:
                    raise ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first given on line {first + 1}); each key "
                        "may appear once: merge the two entries",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def load(text: str) -> Any:
    """Parse YAML text, refusing duplicate keys."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def _format_loc(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_optional_file(path: Path, model: type[ModelT]) -> ModelT:
    """Read and validate an optional YAML file (``schedules.yaml``, ``alerts.yaml``): a
    missing file is the model's defaults; malformed YAML or a bad key is a ConfigError naming
    the file, the line or the key path."""
    if not path.exists():
        return model()
    try:
        data = load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(
            f"{path}:{where} malformed YAML: {getattr(exc, 'problem', exc)}"
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(str(path), exc)) from None


def format_validation_error(source: str, error: ValidationError) -> str:
    """Render pydantic errors as ``file: key.path: problem`` lines."""
    lines = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here; check the spelling against docs/configuration.md)"
        elif item["type"] == "missing":
            msg = "required key is missing"
        elif item["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be")
        lines.append(f"{source}: {_format_loc(loc)}: {msg}")
    return "\n".join(lines)
