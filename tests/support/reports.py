"""The text of a read-only report, as tests read it."""

from __future__ import annotations

from typing import Any


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    found = []
    for block in blocks:
        if "text" in block:
            found.append(block["text"]["text"])
        found += [e["text"] for e in block.get("elements", []) if "text" in e]
    return found
