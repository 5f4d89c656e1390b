"""A MongoDB deployment's data for backups and restore tests, through pymongo.

Documents are read and written as raw BSON (``RawBSONDocument``): a dump holds the bytes the
server sent, a restore sends the dump's bytes, and content hashes compare bytes, so nothing
is re-encoded on the way (an Int64 stays an Int64, field order stays as stored). Every call
is bounded by the configured timeout; errors name the deployment and the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import uri_parser
from pymongo.errors import PyMongoError

from runbooks.adapters import secret_env
from runbooks.adapters.mongo import connect
from runbooks.interfaces import InfrastructureError

T = TypeVar("T")
RAW = CodecOptions(document_class=RawBSONDocument)
BATCH = 1000


class MongoData:
    def __init__(self, uri_env: str, *, timeout: float, label: str) -> None:
        self.uri_env = uri_env
        self.timeout = timeout
        self.label = label
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None

    def _db(self) -> pymongo.MongoClient[dict[str, Any]]:
        if self._client is None:
            self._client = connect(self.uri_env, self.timeout, self.label, per_call=False)
        return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except PyMongoError as exc:
            raise InfrastructureError(f"{self.label}: {what}: {exc}") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def hosts(self) -> frozenset[str]:
        uri = secret_env(self.uri_env) or ""
        try:
            nodes = uri_parser.parse_uri(uri)["nodelist"] if uri else []
        except (PyMongoError, ValueError) as exc:
            raise InfrastructureError(f"{self.label}: {self.uri_env}: {exc}") from None
        return frozenset(f"{host}:{port}".lower() for host, port in nodes)

    def database_names(self) -> list[str]:
        return self._call("listDatabases", lambda: list(self._db().list_database_names()))

    def collection_names(self, database: str) -> list[str]:
        return self._call(
            f"listCollections on {database}",
            lambda: sorted(self._db()[database].list_collection_names()),
        )

    def index_specs(self, database: str, collection: str) -> list[dict[str, Any]]:
        def specs() -> list[dict[str, Any]]:
            return [dict(spec) for spec in self._db()[database][collection].list_indexes()]

        return self._call(f"listIndexes on {database}.{collection}", specs)

    def raw_documents(self, database: str, collection: str) -> Iterator[bytes]:
        raw: Any = self._db()[database].get_collection(collection, codec_options=RAW)
        cursor = raw.find({}, sort=[("_id", 1)], batch_size=BATCH)
        try:
            for document in cursor:
                yield document.raw
        except PyMongoError as exc:
            raise InfrastructureError(
                f"{self.label}: find on {database}.{collection}: {exc}"
            ) from None
        finally:
            cursor.close()

    def count(self, database: str, collection: str, query: dict[str, Any] | None = None) -> int:
        return self._call(
            f"count on {database}.{collection}",
            lambda: int(self._db()[database][collection].count_documents(query or {})),
        )

    def newest(self, database: str, collection: str, field: str) -> datetime | None:
        def find() -> datetime | None:
            found = self._db()[database][collection].find_one(
                {field: {"$type": "date"}}, sort=[(field, -1)], projection={field: 1}
            )
            value = (found or {}).get(field)
            if not isinstance(value, datetime):
                return None
            return value if value.tzinfo else value.replace(tzinfo=UTC)

        return self._call(f"newest {field} in {database}.{collection}", find)

    def insert_raw(self, database: str, collection: str, documents: list[bytes]) -> None:
        raw = self._db()[database].get_collection(collection, codec_options=RAW)
        self._call(
            f"insert into {database}.{collection}",
            lambda: raw.insert_many([RawBSONDocument(d) for d in documents], ordered=True),
        )

    def create_collection(self, database: str, collection: str) -> None:
        self._call(
            f"create {database}.{collection}",
            lambda: self._db()[database].create_collection(collection),
        )

    def create_indexes(self, database: str, collection: str, specs: list[dict[str, Any]]) -> None:
        def create() -> None:
            models = []
            for spec in specs:
                options = {k: v for k, v in spec.items() if k not in {"key", "v", "ns"}}
                models.append(pymongo.IndexModel(list(spec["key"].items()), **options))
            if models:
                self._db()[database][collection].create_indexes(models)

        self._call(f"createIndexes on {database}.{collection}", create)

    def drop_database(self, database: str) -> None:
        self._call(f"dropDatabase {database}", lambda: self._db().drop_database(database))

    def drop_collection(self, database: str, collection: str) -> None:
        self._call(
            f"drop {database}.{collection}",
            lambda: self._db()[database].drop_collection(collection),
        )

    def replace_documents(
        self, database: str, collection: str, documents: list[dict[str, Any]]
    ) -> None:
        def replace() -> None:
            target = self._db()[database][collection]
            for document in documents:
                target.replace_one({"_id": document["_id"]}, document)

        self._call(f"replace in {database}.{collection}", replace)
