"""The three patch types the API server accepts, for the fields runbook-bot and kubectl use."""

from __future__ import annotations

import copy
from typing import Any

#: Lists merged by key in strategic merge patch (field name -> merge key).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "imagePullSecrets": "name",
    "tolerations": "key",
}


class PatchError(ValueError):
    """The patch cannot be applied (422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Kubernetes strategic merge patch: like merge patch, but keyed lists merge by key."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        if patch.get("$patch") == "delete":
            return None
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                merged = strategic_merge_patch(result.get(key), value, key)
                if merged is None:
                    result.pop(key, None)
                else:
                    result[key] = merged
        return result
    if isinstance(patch, list) and field in MERGE_KEYS and isinstance(target, list):
        key = MERGE_KEYS[field]
        merged_list: list[Any] = copy.deepcopy(target)
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise PatchError(f"strategic merge patch: items of {field} need {key!r}")
            index = next((i for i, t in enumerate(merged_list) if t.get(key) == item[key]), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    merged_list.pop(index)
            elif index is None:
                merged_list.append(copy.deepcopy({k: v for k, v in item.items() if k != "$patch"}))
            else:
                merged_list[index] = strategic_merge_patch(merged_list[index], item, field)
        return merged_list
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise PatchError(f"JSON patch path segment {part!r} does not exist")
    return doc


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, test, move, copy."""
    doc = copy.deepcopy(target)
    for op in operations:
        kind, parts = op.get("op"), _pointer(str(op.get("path", "")))
        if kind in {"move", "copy"}:
            source = _pointer(str(op.get("from", "")))
            value = copy.deepcopy(_walk(doc, source))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            continue
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"JSON patch test failed at {op['path']}")
            continue
        if not parts:
            if kind in {"add", "replace"}:
                doc = copy.deepcopy(op["value"])
                continue
            raise PatchError("cannot remove the whole document")
        parent, last = _walk(doc, parts[:-1]), parts[-1]
        if kind == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            if isinstance(parent, list):
                parent[int(last)] = copy.deepcopy(op["value"])
            elif last in parent:
                parent[last] = copy.deepcopy(op["value"])
            else:
                raise PatchError(f"JSON patch replace: {op['path']} does not exist")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            elif last in parent:
                del parent[last]
            else:
                raise PatchError(f"JSON patch remove: {op['path']} does not exist")
        else:
            raise PatchError(f"unsupported JSON patch op {kind!r}")
    return doc
