"""State backends: embedded SQLite (default) and MongoDB (several replicas)."""

from __future__ import annotations

from runbooks.engine.store.base import Store


def open_store(url: str) -> Store:
    """Open the store named by ``RUNBOOK_BOT_STATE``: a SQLite path or a ``mongodb://`` URL."""
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from runbooks.engine.store.mongo import MongoStore

        return MongoStore.from_url(url)
    from runbooks.engine.store.sqlite import SqliteStore

    return SqliteStore(url)


__all__ = ["Store", "open_store"]
