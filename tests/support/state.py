"""The state file read with sqlite3 itself: an oracle independent of the store's code."""

from __future__ import annotations

import json
import sqlite3
from typing import Any


def stored(env: dict[str, str], sql: str, *args: str) -> list[str]:
    """The first column of ``sql``'s rows in ``RUNBOOK_BOT_STATE`` (a SQLite file), as text."""
    connection = sqlite3.connect(env["RUNBOOK_BOT_STATE"])
    try:
        return [str(row[0]) for row in connection.execute(sql, args)]
    finally:
        connection.close()


def drill_paused(env: dict[str, str], drill: str) -> dict[str, Any] | None:
    """The drill's pause record (``by``, ``reason``, ``at``), or None."""
    found = stored(env, "SELECT value FROM kv WHERE key = ?", f"drill.paused.{drill}")
    record = json.loads(found[0]) if found else None
    return dict(record) if record else None


def everything_stored(env: dict[str, str]) -> list[str]:
    """Every outbox event, key-value record and audit row."""
    return [
        *stored(env, "SELECT payload FROM events"),
        *stored(env, "SELECT value FROM kv"),
        *stored(env, "SELECT CAST(body AS TEXT) FROM audit"),
    ]
