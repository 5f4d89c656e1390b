"""The sandbox's MongoDB wire server, with plain pymongo as the oracle: what the driver writes
over TCP it reads back, with the errors a real server gives."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pymongo
import pymongo.monitoring
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from sandbox import appdata
from sandbox.mongo import MongoServer


@pytest.fixture
def server() -> Iterator[MongoServer]:
    mongo = MongoServer().start()
    yield mongo
    mongo.stop()


@pytest.fixture
def client(server: MongoServer) -> Iterator[pymongo.MongoClient[dict[str, object]]]:
    mongo: pymongo.MongoClient[dict[str, object]]
    with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as mongo:
        yield mongo


def test_writes_reads_cursors_and_counts(client: pymongo.MongoClient[dict[str, object]]) -> None:
    db = client.app
    db.items.insert_many([{"n": i, "even": i % 2 == 0} for i in range(2500)])
    assert db.items.count_documents({}) == 2500
    assert db.items.count_documents({"even": True}) == 1250
    assert db.items.estimated_document_count() == 2500
    # More than one batch: getMore with a cursor id, until exhausted.
    assert [d["n"] for d in db.items.find({}, sort=[("n", -1)], batch_size=300)][:3] == [
        2499,
        2498,
        2497,
    ]
    assert len(list(db.items.find({"n": {"$gte": 100}}, skip=10, limit=50))) == 50
    assert db.items.update_many({"n": {"$lt": 10}}, {"$set": {"tag": "x"}}).modified_count == 10
    assert db.items.replace_one({"n": 1}, {"n": 1, "replaced": True}).modified_count == 1
    assert db.items.find_one({"n": 1}, {"_id": 0}) == {"n": 1, "replaced": True}
    upsert = db.items.update_one({"n": -1}, {"$set": {"new": True}}, upsert=True)
    assert upsert.upserted_id is not None
    assert db.items.delete_many({"n": {"$gte": 2000}}).deleted_count == 500
    assert {True, False} <= set(db.items.distinct("even"))
    grouped = list(
        db.items.aggregate(
            [
                {"$match": {"n": {"$gte": 2, "$lt": 6}}},
                {"$group": {"_id": "$even", "c": {"$sum": 1}}},
            ]
        )
    )
    assert sorted((g["_id"], g["c"]) for g in grouped) == [(False, 2), (True, 2)]
    stats = db.command("dbStats")
    assert stats["collections"] == 1 and stats["objects"] == db.items.count_documents({})


def test_indexes_collections_databases_and_drops(
    client: pymongo.MongoClient[dict[str, object]],
) -> None:
    db = client.app
    db.users.insert_one({"email": "a@x"})
    db.users.create_index("email", unique=True)
    db.users.create_index([("at", -1), ("n", 1)], name="at_n")
    db.sessions.create_index("expires_at", expireAfterSeconds=0)
    with pytest.raises(DuplicateKeyError):
        db.users.insert_one({"email": "a@x"})
    indexes = {i["name"]: i for i in db.users.list_indexes()}
    assert dict(indexes["email_1"]["key"]) == {"email": 1} and indexes["email_1"]["unique"]
    assert list(dict(indexes["at_n"]["key"]).items()) == [("at", -1), ("n", 1)]
    assert db.list_collection_names(filter={"name": "users"}) == ["users"]
    assert sorted(db.list_collection_names()) == ["sessions", "users"]
    client.other.things.insert_one({})
    assert {"app", "other"} <= set(client.list_database_names())
    db.sessions.drop()
    db.sessions.drop()  # dropping what is gone is not an error for the driver
    assert db.list_collection_names() == ["users"]
    client.drop_database("other")
    assert "other" not in client.list_database_names()
    # The server answers NamespaceNotFound, which the driver turns into no indexes.
    assert list(client.app.nothing.list_indexes()) == []
    with pytest.raises(OperationFailure, match="no such command"):
        db.command("noSuchCommand")


def test_find_and_modify_is_atomic_across_connections(server: MongoServer) -> None:
    clients: list[pymongo.MongoClient[dict[str, object]]] = [
        pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) for _ in range(4)
    ]
    clients[0].app.counters.insert_one({"_id": "c", "n": 0})

    def bump(client: pymongo.MongoClient[dict[str, object]]) -> None:
        for _ in range(50):
            client.app.counters.find_one_and_update({"_id": "c"}, {"$inc": {"n": 1}})

    threads = [threading.Thread(target=bump, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clients[0].app.counters.find_one({"_id": "c"}) == {"_id": "c", "n": 200}
    for client in clients:
        client.close()


def test_raw_bson_round_trips_byte_for_byte(client: pymongo.MongoClient[dict[str, object]]) -> None:
    document = {
        "_id": bson.ObjectId(),
        "int64": bson.Int64(5),
        "int32": 1,
        "when": datetime.datetime(2026, 1, 1, 0, 0, 0, 5000),
        "nested": [1, {"e": None}],
        "bytes": b"xx",
        "decimal": bson.Decimal128("1.5"),
    }
    encoded = bson.encode(document)
    client.raw.docs.insert_one(RawBSONDocument(encoded))
    raw: Any = client.get_database(
        "raw", codec_options=bson.CodecOptions(document_class=RawBSONDocument)
    )
    back = raw.docs.find_one()
    assert back is not None and back.raw == encoded


def test_another_process_reaches_the_same_data(server: MongoServer) -> None:
    appdata.seed(server, "staging")
    code = (
        "import pymongo,sys; c=pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000);"
        "print(c.app.users.count_documents({'status': 'active'}),"
        " sorted(c.app.list_collection_names()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, server.uri],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    expected = appdata.expected_counts("staging")["users"] * 4 // 5
    assert out.strip() == f"{expected} ['orders', 'sessions', 'users']"


def test_hello_answers_what_strict_drivers_require(
    client: pymongo.MongoClient[dict[str, object]],
) -> None:
    hello = client.admin.command("hello")
    for key in ("isWritablePrimary", "minWireVersion", "maxWireVersion", "maxBsonObjectSize"):
        assert key in hello, key
    assert hello["maxWireVersion"] >= hello["minWireVersion"]


MONGOSH = Path(__file__).resolve().parents[2] / ".tools" / "mongosh" / "node_modules" / ".bin"


def test_mongosh_an_independent_client_reads_and_writes_through_it(server: MongoServer) -> None:
    """mongosh runs on the Node driver, stricter than pymongo about the handshake (it refused
    a server whose hello lacked minWireVersion). `python3 dev.py test` installs it."""
    mongosh = MONGOSH / "mongosh"
    if not mongosh.exists():
        # Runs wherever `python3 dev.py test` found npm (CI does: .ci/run installs npm).
        pytest.skip(
            "mongosh is not installed: `python3 dev.py test` installs it under .tools/ when "
            "npm is on PATH"
        )
    appdata.seed(server, "staging")
    script = (
        "print(db.users.countDocuments({status: 'active'}));"
        "print(JSON.stringify(db.getCollectionNames()));"
        "db.notes.insertOne({from: 'mongosh'});"
        "print(db.users.getIndexes().length)"
    )
    uri = server.uri.replace("/?", "/app?")
    result = subprocess.run(
        [str(mongosh), uri, "--quiet", "--eval", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-1000:]
    active = appdata.expected_counts("staging")["users"] * 4 // 5
    assert result.stdout.split() == [str(active), '["orders","sessions","users"]', "3"]
    check: pymongo.MongoClient[dict[str, object]]
    with pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000) as check:
        assert check.app.notes.find_one({}, {"_id": 0}) == {"from": "mongosh"}


def test_an_idle_client_s_monitor_waits_on_its_awaitable_hello(server: MongoServer) -> None:
    """The streaming monitor protocol (MongoDB 4.4+): a driver that has seen the server's
    ``topologyVersion`` asks again with ``maxAwaitTimeMS``, and the server answers when the
    topology changes or that time runs out, not at once. Answered at once, pymongo's monitor
    asked again in a tight loop (about 4,000 hellos a second per idle client: CPU every
    process with a client open paid, the engine's own time in bench/dr_bench.py included).

    The work measured is a fixed number of pings, not a time; the server's command counts
    are the oracle. Two new hellos at most: the streaming monitor's awaitable hello (it may
    arrive after the first ping returned) and the handshake of the driver's round-trip monitor,
    which starts once streaming does; both then wait out heartbeatFrequencyMS (120 s). Answered
    at once, the same 200 pings saw hundreds (162 at the least measured)."""
    pings = server.commands.get("ping", 0)  # start() answers one before it returns
    mongo: pymongo.MongoClient[dict[str, object]]
    with pymongo.MongoClient(
        server.uri, serverSelectionTimeoutMS=5000, heartbeatFrequencyMS=120_000
    ) as mongo:
        mongo.admin.command("ping")
        hellos = server.commands.get("hello", 0) + server.commands.get("ismaster", 0)
        for _ in range(200):
            mongo.admin.command("ping")
        after = server.commands.get("hello", 0) + server.commands.get("ismaster", 0)
    assert server.commands["ping"] - pings == 201
    assert after - hellos <= 2, f"{after - hellos} hellos while 200 pings ran"


def test_a_count_answers_as_the_documents_it_counts(
    server: MongoServer, client: pymongo.MongoClient[dict[str, object]]
) -> None:
    """pymongo's ``count_documents`` (an aggregate the server counts without its aggregation
    engine) and ``list_database_names`` (names only, no sizes) agree with the documents a find
    returns and the sizes a full ``listDatabases`` gives; any other grouping still groups."""
    appdata.seed(server, "staging")
    orders = client.app.orders
    options: dict[str, Any]
    for query, options in (
        ({}, {}), ({"status": "shipped"}, {}), ({"status": "shipped"}, {"skip": 10, "limit": 50}),
        ({"status": "no such status"}, {}), ({}, {"limit": 7}), ({"total": {"$gt": 100}}, {}),
    ):  # fmt: skip
        found = list(orders.find(query, skip=options.get("skip", 0), limit=options.get("limit", 0)))
        counted = orders.count_documents(query, None, **options)
        assert counted == len(found), (query, options)
    grouped: dict[Any, int] = {d["_id"]: int(str(d["n"])) for d in orders.aggregate(
        [{"$match": {}}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}]
    )}  # fmt: skip
    assert sum(grouped.values()) == orders.count_documents({}) and len(grouped) > 1
    full = list(client.list_databases())
    assert client.list_database_names() == [d["name"] for d in full] == ["app"]
    assert full[0]["sizeOnDisk"] > 0 and not full[0]["empty"]
