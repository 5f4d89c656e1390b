"""MongoDB store for several bot replicas (pymongo).

No multi-document transactions (mongomock, which the contract tests use because no MongoDB
server can be installed on these machines, has none): every operation is one atomic
single-document write. Audit records take ``seq = head + 1`` under a unique index and retry
on a clash, so concurrent appenders form one chain and a crash never leaves a hole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pymongo import ASCENDING, DESCENDING, MongoClient, ReturnDocument
from pymongo import timeout as pymongo_timeout
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from runbooks.engine.errors import ConcurrentUpdate, RunbookError
from runbooks.engine.models import AuditRow, Event, Execution, Lease
from runbooks.engine.redact import redact_text
from runbooks.engine.store.base import GENESIS, Signer, Store

SCHEMA_VERSION = 1
APPEND_RETRIES = 1000


class MongoStore(Store):
    """Collections in one database; created with their indexes on first use."""

    def __init__(
        self, client: Any, database: str = "runbook_bot", *, description: str = ""
    ) -> None:
        self._client = client
        self.db: Database[dict[str, Any]] = client[database]
        self.description = description or f"mongodb:{database}"
        self._migrate()

    @classmethod
    def from_url(cls, url: str) -> MongoStore:
        client: MongoClient[dict[str, Any]] = MongoClient(
            url,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            socketTimeoutMS=10000,
        )
        database = client.get_default_database(default="runbook_bot").name
        return cls(client, database, description=redact_text(url))

    def _migrate(self) -> None:
        db = self.db
        try:
            db.executions.create_index([("created_at", DESCENDING)])
            db.executions.create_index([("state", ASCENDING)])
            db.audit.create_index([("seq", ASCENDING)], unique=True)
            db.events.create_index([("id", ASCENDING)], unique=True)
            db.meta.update_one(
                {"_id": "schema"}, {"$max": {"version": SCHEMA_VERSION}}, upsert=True
            )
        except PyMongoError as exc:
            raise RunbookError(f"cannot prepare MongoDB store {self.description}: {exc}") from exc

    def schema_version(self) -> int:
        doc = self.db.meta.find_one({"_id": "schema"}) or {}
        return int(doc.get("version", 0))

    def ping(self, *, timeout: float = 2.0) -> None:
        with pymongo_timeout(timeout):  # pymongo's client-side operation timeout
            self.db.meta.find_one({"_id": "schema"})

    def close(self) -> None:
        self._client.close()

    # executions ---------------------------------------------------------------------------
    def create_execution(self, execution: Execution) -> None:
        try:
            self.db.executions.insert_one({"_id": execution.id, **execution.to_doc()})
        except DuplicateKeyError:
            raise ConcurrentUpdate(f"execution {execution.id} already exists") from None

    def get_execution(self, execution_id: str) -> Execution | None:
        doc = self.db.executions.find_one({"_id": execution_id})
        return Execution.from_doc(doc) if doc else None

    def save_execution(self, execution: Execution) -> None:
        expected = execution.version
        execution.version = expected + 1
        result = self.db.executions.replace_one(
            {"_id": execution.id, "version": expected}, {"_id": execution.id, **execution.to_doc()}
        )
        if result.matched_count != 1:
            execution.version = expected
            raise ConcurrentUpdate(f"execution {execution.id} changed underneath (v{expected})")

    def list_executions(
        self, *, limit: int = 50, states: list[str] | None = None
    ) -> list[Execution]:
        query: dict[str, Any] = {"state": {"$in": states}} if states else {}
        cursor = (
            self.db.executions.find(query)
            .sort([("created_at", DESCENDING), ("_id", ASCENDING)])
            .limit(limit)
        )
        return [Execution.from_doc(doc) for doc in cursor]

    # locks --------------------------------------------------------------------------------
    def try_lock(self, key: str, execution_id: str) -> str | None:
        try:
            self.db.locks.insert_one({"_id": key, "execution_id": execution_id})
            return None
        except DuplicateKeyError:
            holder = self.lock_holder(key)
            if holder is None:  # released between our insert and read: try once more
                return self.try_lock(key, execution_id)
            return None if holder == execution_id else holder

    def steal_lock(self, key: str, execution_id: str, previous: str) -> bool:
        result = self.db.locks.update_one(
            {"_id": key, "execution_id": previous}, {"$set": {"execution_id": execution_id}}
        )
        return result.modified_count == 1

    def release_lock(self, key: str, execution_id: str) -> None:
        self.db.locks.delete_one({"_id": key, "execution_id": execution_id})

    def lock_holders(self, prefix: str) -> dict[str, str]:
        found = self.db.locks.find({"_id": {"$regex": "^" + re.escape(prefix)}})
        return {str(doc["_id"]): str(doc["execution_id"]) for doc in found}

    def lock_holder(self, key: str) -> str | None:
        doc = self.db.locks.find_one({"_id": key})
        return str(doc["execution_id"]) if doc else None

    # leases -------------------------------------------------------------------------------
    def claim_lease(self, execution_id: str, owner: str, until: float, now: float) -> bool:
        claimable = {"$or": [{"owner": owner}, {"until": {"$lte": now}}]}
        try:
            doc = self.db.leases.find_one_and_update(
                {"_id": execution_id, **claimable},
                {"$set": {"owner": owner, "until": until}},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # exists, held by someone else and not expired
            return False
        return doc is not None and doc["owner"] == owner

    def renew_lease(self, execution_id: str, owner: str, until: float) -> bool:
        result = self.db.leases.update_one(
            {"_id": execution_id, "owner": owner}, {"$set": {"until": until}}
        )
        return result.matched_count == 1

    def release_lease(self, execution_id: str, owner: str) -> None:
        self.db.leases.delete_one({"_id": execution_id, "owner": owner})

    def get_lease(self, execution_id: str) -> Lease | None:
        doc = self.db.leases.find_one({"_id": execution_id})
        return Lease(execution_id, doc["owner"], doc["until"]) if doc else None

    # cancel requests ----------------------------------------------------------------------
    def request_cancel(self, execution_id: str, doc: dict[str, Any]) -> None:
        self.db.cancels.update_one(
            {"_id": execution_id}, {"$setOnInsert": {"doc": doc}}, upsert=True
        )

    def get_cancel(self, execution_id: str) -> dict[str, Any] | None:
        found = self.db.cancels.find_one({"_id": execution_id})
        return dict(found["doc"]) if found else None

    # audit --------------------------------------------------------------------------------
    def append_audit(self, body: bytes, sign: Signer) -> AuditRow:
        for _ in range(APPEND_RETRIES):
            head = self.audit_head()
            seq, prev = (head.seq + 1, head.mac) if head else (1, GENESIS)
            mac = sign(seq, prev, body)
            try:
                self.db.audit.insert_one(
                    {"_id": seq, "seq": seq, "prev": prev, "body": body, "mac": mac}
                )
            except DuplicateKeyError:
                continue  # another writer took this seq; chain onto its record instead
            return AuditRow(seq, prev, body, mac)
        raise RunbookError(f"audit append lost {APPEND_RETRIES} races in a row; store overloaded?")

    @staticmethod
    def _row(doc: dict[str, Any]) -> AuditRow:
        return AuditRow(int(doc["seq"]), doc["prev"], bytes(doc["body"]), doc["mac"])

    def iter_audit(self, *, since_seq: int = 0) -> Iterator[AuditRow]:
        for doc in self.db.audit.find({"seq": {"$gt": since_seq}}).sort("seq", ASCENDING):
            yield self._row(doc)

    def audit_head(self) -> AuditRow | None:
        doc = self.db.audit.find_one(sort=[("seq", DESCENDING)])
        return self._row(doc) if doc else None

    def audit_tail(self, n: int) -> list[AuditRow]:
        docs = list(self.db.audit.find().sort("seq", DESCENDING).limit(n))
        return [self._row(d) for d in reversed(docs)]

    # events -------------------------------------------------------------------------------
    def append_event(
        self, execution_id: str | None, type_: str, payload: dict[str, Any], at: float
    ) -> int:
        counter = self.db.meta.find_one_and_update(
            {"_id": "event_seq"},
            {"$inc": {"value": 1}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        if counter is None:  # upsert with AFTER always returns the document
            raise RunbookError("MongoDB did not return the event counter")
        event_id = int(counter["value"])
        self.db.events.insert_one(
            {
                "_id": event_id,
                "id": event_id,
                "execution_id": execution_id,
                "type": type_,
                "payload": payload,
                "at": at,
            }
        )
        return event_id

    def events_after(self, event_id: int, *, limit: int = 100) -> list[Event]:
        cursor = self.db.events.find({"id": {"$gt": event_id}}).sort("id", ASCENDING).limit(limit)
        return [Event(d["id"], d["execution_id"], d["type"], d["payload"], d["at"]) for d in cursor]

    # reviews ------------------------------------------------------------------------------
    def create_review(self, execution_id: str, doc: dict[str, Any], at: float) -> None:
        self.db.reviews.update_one(
            {"_id": execution_id},
            {
                "$setOnInsert": {
                    "created_at": at,
                    "doc": doc,
                    "acknowledged_by": None,
                    "acknowledged_at": None,
                }
            },
            upsert=True,
        )

    def list_reviews(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"acknowledged_by": None} if open_only else {}
        cursor = self.db.reviews.find(query).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [
            {
                "execution_id": d["_id"],
                "created_at": d["created_at"],
                "doc": d["doc"],
                "acknowledged_by": d["acknowledged_by"],
                "acknowledged_at": d["acknowledged_at"],
            }
            for d in cursor
        ]

    def ack_review(self, execution_id: str, by: dict[str, Any], at: float) -> bool:
        result = self.db.reviews.update_one(
            {"_id": execution_id, "acknowledged_by": None},
            {"$set": {"acknowledged_by": by, "acknowledged_at": at}},
        )
        return result.modified_count == 1

    # key-value ----------------------------------------------------------------------------
    def kv_get(self, key: str) -> Any:
        doc = self.db.kv.find_one({"_id": key})
        return doc["value"] if doc else None

    def kv_set(self, key: str, value: Any) -> None:
        self.db.kv.update_one({"_id": key}, {"$set": {"value": value}}, upsert=True)

    def kv_insert(self, key: str, value: Any) -> bool:
        try:
            self.db.kv.insert_one({"_id": key, "value": value})
        except DuplicateKeyError:
            return False
        return True

    def kv_swap(self, key: str, expected: Any, value: Any) -> bool:
        # Equality of embedded documents is order-sensitive in MongoDB: compare as read.
        doc = self.db.kv.find_one({"_id": key})
        if doc is None or doc["value"] != expected:
            return False
        result = self.db.kv.update_one(
            {"_id": key, "value": doc["value"]}, {"$set": {"value": value}}
        )
        return result.matched_count == 1
