"""The application's data in the sandbox: the same collections in every environment's
database (``app``), deterministic, with indexes and timestamps, and a backup of it in each
environment's backup bucket (taken with runbook-bot's own ``restore.backup`` code) so the
restore test and the monthly drill work right after ``python3 dev.py serve``.

Per environment (counts scale with ``size``; production is 1):

- ``users``: ``size`` x 1200, unique ``email``, ``{status, created_at}``; one in five disabled.
- ``orders``: ``size`` x 3000, ``user_id``, ``created_at`` descending; one in three shipped.
- ``sessions``: ``size`` x 500, TTL index on ``expires_at`` (all in the future).

Every document has ``updated_at``, the environment's ``mongodb.timestamp_field``; the newest
is a few minutes before the sandbox started, so a backup's consistency point is recent.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import bson

from sandbox.mongo import MongoServer

DATABASE = "app"
SIZES = {"production": 1.0, "staging": 0.4}


def _oid(*parts: object) -> bson.ObjectId:
    return bson.ObjectId(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:12])


def _ms(value: datetime.datetime) -> datetime.datetime:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def documents(environment: str, now: datetime.datetime) -> dict[str, list[dict[str, Any]]]:
    size = SIZES.get(environment, 0.2)
    users_n, orders_n, sessions_n = int(1200 * size), int(3000 * size), int(500 * size)
    start = now - datetime.timedelta(days=90)

    def at(i: int, n: int) -> datetime.datetime:
        # Spread over the last 90 days; the newest a few minutes before ``now``.
        return _ms(start + (now - datetime.timedelta(minutes=3) - start) * (i + 1) / n)

    users = [
        {
            "_id": _oid(environment, "user", i),
            "email": f"user{i}@{environment}.example.com",
            "name": f"User {i}",
            "status": "disabled" if i % 5 == 0 else "active",
            "plan": ["free", "team", "enterprise"][i % 3],
            "created_at": at(i, users_n),
            "updated_at": at(i, users_n),
        }
        for i in range(users_n)
    ]
    orders = [
        {
            "_id": _oid(environment, "order", i),
            "user_id": users[i % users_n]["_id"],
            "items": [
                {"sku": f"SKU-{(i * 7 + k) % 97:03d}", "qty": 1 + (i + k) % 4, "price": 5 + k}
                for k in range(1 + i % 3)
            ],
            "total": sum((5 + k) * (1 + (i + k) % 4) for k in range(1 + i % 3)),
            "status": "shipped" if i % 3 == 0 else ("paid" if i % 3 == 1 else "pending"),
            "created_at": at(i, orders_n),
            "updated_at": at(i, orders_n),
        }
        for i in range(orders_n)
    ]
    sessions = [
        {
            "_id": _oid(environment, "session", i),
            "user_id": users[(i * 13) % users_n]["_id"],
            "token": hashlib.sha256(f"{environment}:token:{i}".encode()).hexdigest(),
            "expires_at": _ms(now + datetime.timedelta(days=30 + i % 30)),
            "updated_at": at(i, sessions_n),
        }
        for i in range(sessions_n)
    ]
    return {"users": users, "orders": orders, "sessions": sessions}


INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict[str, Any]]]] = {
    "users": [
        ([("email", 1)], {"unique": True}),
        ([("status", 1), ("created_at", -1)], {}),
    ],
    "orders": [([("user_id", 1)], {}), ([("created_at", -1)], {})],
    "sessions": [([("expires_at", 1)], {"expireAfterSeconds": 0})],
}


def seed(server: MongoServer, environment: str, now: datetime.datetime | None = None) -> int:
    """Load the application's collections into ``server``; the number of documents."""
    now = now or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    database = server.client[DATABASE]
    total = 0
    with server.lock:
        for name, docs in documents(environment, now).items():
            collection = database[name]
            collection.drop()
            collection.insert_many(docs)
            for key, options in INDEXES[name]:
                collection.create_index(key, **options)
            total += len(docs)
    return total


def expected_counts(environment: str) -> dict[str, int]:
    """What ``seed`` loads per collection (tests and smoke queries use it)."""
    now = datetime.datetime(2026, 1, 1)
    return {name: len(docs) for name, docs in documents(environment, now).items()}
