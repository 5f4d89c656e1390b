"""A MongoDB the real drivers talk to, from any process: MongoDB's wire protocol served by
mockupdb, each command run on mongomock.

No MongoDB server can be installed here, and mongomock lives inside one process, while the
CLI, the bot and the sandbox are separate processes. ``MongoServer`` listens on a TCP port,
decodes each OP_MSG (or legacy OP_QUERY command) with mockupdb and runs it on one mongomock
client, one command at a time (a single lock), so ``findAndModify`` is atomic. pymongo,
``mongosh`` and ``mongodump``-style tools reach it with an ordinary connection string.

Commands served: hello/isMaster, ping, buildInfo, insert, find, getMore, killCursors,
update, delete, findAndModify, count, distinct, aggregate (as far as mongomock goes),
create, createIndexes, listIndexes, dropIndexes, listCollections, listDatabases, drop,
dropDatabase, dbStats, collStats, endSessions, plus whatever ``extra`` commands the caller
adds (the production cluster's ``replSetGetStatus``/``replSetGetConfig``).

Point in time: after ``record_writes()`` the server keeps an oplog of the write commands it
serves (``OplogEntry``: the time by its clock, wall time unless a test injects one, the command
document, its database), and ``replay``
runs entries again on another client, which is how the Atlas emulator restores to a second.
Writes made to ``client`` directly (the seed) are not recorded.

Gaps (stated in docs/sandbox.md): no authentication, TLS, sessions or transactions, change
streams, ``dbHash``; a standalone server (no replica-set election of its own); write
concern is accepted and ignored; cursors live until exhausted or killed (no idle timeout).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import errno
import itertools
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import bson
import mockupdb
import mongomock
from mockupdb import OP_MSG_FLAGS, MockupDB
from pymongo import MongoClient, ReturnDocument

Doc = dict[str, Any]
Extra = Callable[[Doc], Doc]

MAX_BSON = 16 * 1024 * 1024
BATCH_BYTES = 4 * 1024 * 1024  # a getMore batch stops growing past this
FIRST_BATCH = 101  # the server's default first batch

#: the commands that change data or its shape, recorded in the oplog
WRITE_COMMANDS = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findandmodify",
        "create",
        "createindexes",
        "dropindexes",
        "drop",
        "dropdatabase",
    }
)


@dataclass(frozen=True)
class OplogEntry:
    """One write command the server ran: when (epoch seconds), what, on which database."""

    at: float
    command: str
    doc: dict[str, Any]
    database: str


def _materialise(cursor: Any) -> Iterator[Doc]:
    """The documents of a mongomock cursor, computed once.

    mongomock's ``Cursor.__next__`` slices its whole result list on every call (quadratic: a
    200,000-document dump took minutes); its ``_compute_results`` returns the list itself.
    """
    compute = getattr(cursor, "_compute_results", None)
    if compute is None:
        return iter(cursor)
    return iter(compute(with_limit_and_skip=True))


class CommandError(Exception):
    def __init__(self, code: int, codename: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.codename = codename


class _Server(MockupDB):  # type: ignore[misc]
    """MockupDB without its request log: its loop formats every request for the log
    (``'%r' % request``: all its documents as extended JSON) before ``_log`` looks at
    ``verbose``; that formatting was 4 % of the whole test suite's CPU. Otherwise its
    ``_server_loop`` (mockupdb 1.8), which serves connections one at a time under its lock."""

    def _server_loop(self, client: socket.socket, client_addr: Any) -> None:
        with self._lock:
            while not self._stopped and not mockupdb._shutting_down:
                try:
                    with self._unlock():
                        request = mockupdb.mock_server_receive_request(client, self)
                    self._requests_count += 1
                    for responder in reversed(self._autoresponders):
                        if responder.handle(request):
                            break
                    else:
                        self._request_q.put(request)
                except OSError as error:  # socket.error and select.error are OSError
                    if error.errno in (errno.ECONNRESET, errno.EBADF, errno.ENOTSOCK):
                        break  # we hung up, or the client did
                    raise
                except AssertionError:
                    traceback.print_exc()
                    break
            client.close()


def _reply(request: Any, doc: Doc) -> None:
    """``request.replies(doc)`` without mockupdb's log line: like the request's (``_Server``),
    it is formatted (``'%r' % reply``: every document as extended JSON) whether or not the
    log is on, 5 % of the restore tests' CPU. The reply document always has ``ok``."""
    if isinstance(request, mockupdb.OpMsg):
        message = mockupdb.make_op_msg_reply(doc)
    else:  # OP_QUERY: a legacy hello
        message = mockupdb.make_reply(doc)
    request._client.sendall(message.reply_bytes(request))


class MongoServer:
    """One data-bearing MongoDB endpoint (its own mongomock client, its own port)."""

    def __init__(self, *, name: str = "sandbox", extra: dict[str, Extra] | None = None) -> None:
        self.name = name
        self.client: mongomock.MongoClient[Doc] = mongomock.MongoClient()
        self.extra = {k.lower(): v for k, v in (extra or {}).items()}
        self.lock = threading.RLock()
        self.server = _Server(verbose=False)
        self._cursors: dict[int, tuple[str, Iterator[Doc]]] = {}
        self._cursor_ids = itertools.count(1000)
        self._connection_ids = itertools.count(1)
        self.commands: dict[str, int] = {}
        self.oplog: list[OplogEntry] | None = None
        self._oplog_clock: Callable[[], float] = time.time
        #: This server's ``topologyVersion``: one process id for its life (a new one on every
        #: hello told drivers it had restarted each time).
        self._process_id = bson.ObjectId()
        self._stopping = threading.Event()

    def writes(self) -> dict[str, int]:
        """The write log: how many of each write command this server ran."""
        with self.lock:
            return {k: n for k, n in self.commands.items() if k in WRITE_COMMANDS}

    def record_writes(self, clock: Callable[[], float] = time.time) -> None:
        """Keep an oplog of the write commands served from now on (point-in-time restores),
        each stamped by ``clock`` (epoch seconds; tests pass their own)."""
        with self.lock:
            self._oplog_clock = clock
            if self.oplog is None:
                self.oplog = []

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> MongoServer:
        self._stopping.clear()
        self.server.run()
        self.server.autoresponds(self._handle)
        # Answer one command before returning: MockupDB's accept thread takes its listening
        # socket on its own schedule, and a server stopped before it did (a test that skips
        # at once) raised EBADF in that thread.
        probe: MongoClient[Doc] = MongoClient(self.uri, serverSelectionTimeoutMS=10_000)
        with probe:
            probe.admin.command("ping")
        return self

    def stop(self) -> None:
        self._stopping.set()  # answers the monitors' awaited hellos now
        # MockupDB's accept loop waits in select() for up to a second before it looks at its
        # stop flag, and stop() joins it: set the flag, then wake the select with a connection
        # of our own (0.5-1 s less per server stopped).
        self.server._stopped = True
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        self.server.stop()

    # --- dispatch --------------------------------------------------------------------------

    def _handle(self, request: Any) -> bool:
        name = request.command_name
        if name is None:
            return False
        doc: Doc = dict(request.doc)
        database = str(doc.pop("$db", None) or (request.namespace or "admin").split(".")[0])
        try:
            with self.lock:
                reply = self.run(name, doc, database)
        except CommandError as exc:
            reply = {"ok": 0, "errmsg": str(exc), "code": exc.code, "codeName": exc.codename}
        except Exception as exc:
            reply = {"ok": 0, "errmsg": f"{type(exc).__name__}: {exc}", "code": 1}
        flags = getattr(request, "flags", 0) or 0
        if getattr(request, "is_command", False) and flags & OP_MSG_FLAGS["moreToCome"]:
            return True  # an unacknowledged write: no reply is expected
        wait = self._awaited(name, doc)
        if wait:
            # mockupdb serves every connection under one lock: wait in a thread of its own.
            threading.Thread(
                target=self._reply_later, args=(request, reply, wait), daemon=True
            ).start()
            return True
        _reply(request, reply)
        return True

    def _awaited(self, name: str, doc: Doc) -> float:
        """Seconds to hold a monitor's awaitable hello (the streaming protocol of MongoDB 4.4+),
        or 0 to answer at once.

        A driver that has this server's ``topologyVersion`` sends it back with
        ``maxAwaitTimeMS``; the server answers when its topology changes (a standalone's
        never does) or when that time is up. Answered at once, pymongo's monitor asks again
        at once: thousands of hellos a second per idle client."""
        if name.lower() not in {"hello", "ismaster"}:
            return 0.0
        version = doc.get("topologyVersion")
        if not isinstance(version, dict) or version.get("processId") != self._process_id:
            return 0.0  # a first hello, or one from before a restart: at once
        try:
            return max(0.0, float(doc.get("maxAwaitTimeMS", 0)) / 1000)
        except (TypeError, ValueError):
            return 0.0

    def _reply_later(self, request: Any, reply: Doc, wait: float) -> None:
        self._stopping.wait(wait)
        with contextlib.suppress(OSError):  # the client went away meanwhile
            _reply(request, {**reply, "localTime": datetime.datetime.now(datetime.UTC)})

    def run(self, name: str, doc: Doc, database: str) -> Doc:
        """Run one command document on the mongomock client; the reply document."""
        key = name.lower()
        self.commands[key] = self.commands.get(key, 0) + 1
        if key in self.extra:
            return {"ok": 1, **self.extra[key](doc)}
        handler = getattr(self, f"_cmd_{key}", None)
        if handler is None:
            raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
        if self.oplog is not None and key in WRITE_COMMANDS:
            entry = OplogEntry(self._oplog_clock(), name, copy.deepcopy(doc), database)
        else:
            entry = None
        reply: Doc = handler(doc, self.client[database], doc[name])
        if entry is not None and self.oplog is not None:
            self.oplog.append(entry)
        return {**reply, "ok": reply.get("ok", 1)}

    # --- handshake and server ----------------------------------------------------------------

    def _hello(self) -> Doc:
        # No ``topologyVersion``: with one, drivers monitor by streaming (an awaitable hello
        # the server holds until its topology changes); MockupDB serialises every connection
        # under one lock, so it cannot hold one, and answering at once made each monitor ask
        # again at once (~3,000 hellos a second per client). Without it, they poll every
        # heartbeat (10 s).
        return {
            "helloOk": True,
            "isWritablePrimary": True,
            "ismaster": True,
            "topologyVersion": {"processId": self._process_id, "counter": bson.Int64(0)},
            "maxBsonObjectSize": MAX_BSON,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": datetime.datetime.now(datetime.UTC),
            "connectionId": next(self._connection_ids),
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
        }

    def _cmd_hello(self, doc: Doc, db: Any, value: Any) -> Doc:
        return self._hello()

    _cmd_ismaster = _cmd_hello

    def _cmd_ping(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {}

    def _cmd_buildinfo(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {"version": "7.0.0", "versionArray": [7, 0, 0, 0], "bits": 64, "modules": []}

    def _cmd_endsessions(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {}

    def _cmd_getparameter(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {"featureCompatibilityVersion": {"version": "7.0"}}

    def _cmd_getlog(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {"totalLinesWritten": 0, "log": []}

    def _cmd_connectionstatus(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}}

    # --- cursors -------------------------------------------------------------------------------

    def _batch(self, iterator: Iterator[Doc], size: int | None) -> tuple[list[Doc], bool]:
        batch: list[Doc] = []
        used = 0
        for document in iterator:
            batch.append(document)
            used += len(bson.encode(document))
            if (size and len(batch) >= size) or used >= BATCH_BYTES:
                return batch, False
        return batch, True

    def _cursor(self, ns: str, documents: Iterator[Doc], size: int | None) -> Doc:
        iterator = iter(documents)
        batch, done = self._batch(iterator, size if size is not None else FIRST_BATCH)
        cursor_id = 0
        if not done:
            cursor_id = next(self._cursor_ids)
            self._cursors[cursor_id] = (ns, iterator)
        return {"cursor": {"id": bson.Int64(cursor_id), "ns": ns, "firstBatch": batch}}

    def _cmd_getmore(self, doc: Doc, db: Any, value: Any) -> Doc:
        cursor_id = int(value)
        if cursor_id not in self._cursors:
            raise CommandError(43, "CursorNotFound", f"cursor id {cursor_id} not found")
        ns, iterator = self._cursors[cursor_id]
        batch, done = self._batch(iterator, doc.get("batchSize"))
        if done:
            del self._cursors[cursor_id]
        return {
            "cursor": {"id": bson.Int64(0 if done else cursor_id), "ns": ns, "nextBatch": batch}
        }

    def _cmd_killcursors(self, doc: Doc, db: Any, value: Any) -> Doc:
        killed = [c for c in doc.get("cursors", []) if self._cursors.pop(int(c), None)]
        return {"cursorsKilled": killed, "cursorsNotFound": [], "cursorsAlive": []}

    # --- reads ---------------------------------------------------------------------------------

    def _cmd_find(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        cursor = collection.find(doc.get("filter") or {}, projection=doc.get("projection") or None)
        if doc.get("sort"):
            cursor = cursor.sort(list(doc["sort"].items()))
        if doc.get("skip"):
            cursor = cursor.skip(int(doc["skip"]))
        limit = int(doc.get("limit") or 0)
        if limit:
            cursor = cursor.limit(abs(limit))
        size = doc.get("batchSize")
        documents = _materialise(cursor)
        if doc.get("singleBatch") or limit < 0:
            size = abs(limit) or size
            reply = self._cursor(f"{db.name}.{value}", documents, size)
            return self._close_at_once(reply)
        return self._cursor(f"{db.name}.{value}", documents, size)

    def _close_at_once(self, reply: Doc) -> Doc:
        cursor_id = int(reply["cursor"]["id"])
        self._cursors.pop(cursor_id, None)
        reply["cursor"]["id"] = bson.Int64(0)
        return reply

    def _cmd_count(self, doc: Doc, db: Any, value: Any) -> Doc:
        options = {k: int(doc[k]) for k in ("skip", "limit") if doc.get(k)}
        return {"n": db[value].count_documents(doc.get("query") or {}, **options)}

    def _cmd_distinct(self, doc: Doc, db: Any, value: Any) -> Doc:
        return {"values": db[value].distinct(doc["key"], doc.get("query") or {})}

    def _cmd_aggregate(self, doc: Doc, db: Any, value: Any) -> Doc:
        if value == 1:
            raise CommandError(115, "CommandNotSupported", "database-level aggregate")
        pipeline = list(doc.get("pipeline") or [])
        counted = self._count_pipeline(db[value], pipeline)
        documents = counted if counted is not None else list(db[value].aggregate(pipeline))
        size = (doc.get("cursor") or {}).get("batchSize")
        return self._cursor(f"{db.name}.{value}", iter(documents), size)

    @staticmethod
    def _count_pipeline(collection: Any, pipeline: list[Doc]) -> list[Doc] | None:
        """The answer to pymongo's ``count_documents`` pipeline (``$match``, optional ``$skip``
        and ``$limit``, ``$group`` of a constant ``_id`` summing 1), counted with mongomock's
        ``count_documents`` (the same filter semantics) instead of its aggregation, which copies
        every document first: 1 ms instead of 45 ms for 3,000. None for any other pipeline."""
        stages = [next(iter(s.items())) if len(s) == 1 else ("", None) for s in pipeline]
        if len(stages) < 2 or stages[0][0] != "$match" or stages[-1][0] != "$group":
            return None
        group = stages[-1][1]
        if not isinstance(group, dict) or set(group) != {"_id", "n"} or group["n"] != {"$sum": 1}:
            return None
        if isinstance(group["_id"], (dict, str)):  # a field or an expression: real groups
            return None
        options: dict[str, int] = {}
        for name, value in stages[1:-1]:
            if name not in ("$skip", "$limit") or name in options or not isinstance(value, int):
                return None
            options[name] = value
        if not isinstance(stages[0][1], dict):
            return None
        count = collection.count_documents(
            stages[0][1], skip=options.get("$skip", 0), **(
                {"limit": options["$limit"]} if "$limit" in options else {}
            ),
        )  # fmt: skip
        return [{"_id": group["_id"], "n": count}] if count else []

    # --- writes --------------------------------------------------------------------------------

    def _cmd_insert(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        documents = list(doc.get("documents") or [])
        ordered = doc.get("ordered", True)
        errors = []
        n = 0
        for index, document in enumerate(documents):
            try:
                collection.insert_one(document)
                n += 1
            except mongomock.DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": str(exc)})
                if ordered:
                    break
        return {"n": n, **({"writeErrors": errors} if errors else {})}

    def _cmd_update(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        n = modified = 0
        upserted = []
        errors = []
        for index, spec in enumerate(doc.get("updates") or []):
            query, change = spec.get("q") or {}, spec.get("u") or {}
            upsert = bool(spec.get("upsert"))
            operators = isinstance(change, list) or any(k.startswith("$") for k in change)
            try:
                if not operators:
                    result = collection.replace_one(query, change, upsert=upsert)
                elif spec.get("multi"):
                    result = collection.update_many(
                        query, change, upsert=upsert, array_filters=spec.get("arrayFilters")
                    )
                else:
                    result = collection.update_one(
                        query, change, upsert=upsert, array_filters=spec.get("arrayFilters")
                    )
            except mongomock.DuplicateKeyError as exc:
                errors.append({"index": index, "code": 11000, "errmsg": str(exc)})
                if doc.get("ordered", True):
                    break
                continue
            n += result.matched_count
            modified += result.modified_count
            if result.upserted_id is not None:
                n += 1
                upserted.append({"index": index, "_id": result.upserted_id})
        reply: Doc = {"n": n, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def _cmd_delete(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        n = 0
        for spec in doc.get("deletes") or []:
            query = spec.get("q") or {}
            if int(spec.get("limit") or 0) == 1:
                n += collection.delete_one(query).deleted_count
            else:
                n += collection.delete_many(query).deleted_count
        return {"n": n}

    def _cmd_findandmodify(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        query = doc.get("query") or {}
        sort = list((doc.get("sort") or {}).items()) or None
        projection = doc.get("fields") or None
        existing = collection.find_one(query, sort=sort)
        if doc.get("remove"):
            removed = collection.find_one_and_delete(query, projection=projection, sort=sort)
            return {"value": removed, "lastErrorObject": {"n": 1 if removed else 0}}
        change = doc.get("update") or {}
        upsert = bool(doc.get("upsert"))
        after = ReturnDocument.AFTER if doc.get("new") else ReturnDocument.BEFORE
        operators = isinstance(change, list) or any(k.startswith("$") for k in change)
        try:
            if operators:
                result = collection.find_one_and_update(
                    query,
                    change,
                    projection=projection,
                    sort=sort,
                    upsert=upsert,
                    return_document=after,
                    array_filters=doc.get("arrayFilters"),
                )
            else:
                result = collection.find_one_and_replace(
                    query,
                    change,
                    projection=projection,
                    sort=sort,
                    upsert=upsert,
                    return_document=after,
                )
        except mongomock.DuplicateKeyError as exc:
            raise CommandError(11000, "DuplicateKey", str(exc)) from None
        last: Doc = {"n": 1 if (existing or upsert) else 0, "updatedExisting": bool(existing)}
        if existing is None and upsert:
            inserted = result if result is not None else collection.find_one(query)
            if inserted is not None:
                last["upserted"] = inserted.get("_id")
        return {"value": result, "lastErrorObject": last}

    # --- collections, indexes, databases -------------------------------------------------------

    def _exists(self, db: Any, name: str) -> bool:
        return bool(name in db.list_collection_names())

    def _cmd_create(self, doc: Doc, db: Any, value: Any) -> Doc:
        if self._exists(db, value):
            raise CommandError(
                48, "NamespaceExists", f"Collection {db.name}.{value} already exists."
            )
        db.create_collection(value)
        return {}

    def _cmd_createindexes(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        before = len(collection.index_information()) if self._exists(db, value) else 1
        for spec in doc.get("indexes") or []:
            options = {k: v for k, v in spec.items() if k not in {"key", "v", "ns"}}
            collection.create_index(list(spec["key"].items()), **options)
        after = len(collection.index_information())
        return {
            "numIndexesBefore": before,
            "numIndexesAfter": after,
            "createdCollectionAutomatically": False,
        }

    def _index_specs(self, collection: Any) -> list[Doc]:
        specs = []
        for name, info in collection.index_information().items():
            spec: Doc = {"v": 2, "key": dict(info["key"]), "name": name}
            spec.update({k: v for k, v in info.items() if k not in {"key", "v", "ns"}})
            specs.append(spec)
        return specs

    def _cmd_listindexes(self, doc: Doc, db: Any, value: Any) -> Doc:
        if not self._exists(db, value):
            raise CommandError(26, "NamespaceNotFound", f"ns does not exist: {db.name}.{value}")
        specs = self._index_specs(db[value])
        size = (doc.get("cursor") or {}).get("batchSize")
        return self._cursor(f"{db.name}.{value}", iter(specs), size)

    def _cmd_dropindexes(self, doc: Doc, db: Any, value: Any) -> Doc:
        collection = db[value]
        was = len(collection.index_information())
        if doc.get("index") == "*":
            collection.drop_indexes()
        else:
            collection.drop_index(doc["index"])
        return {"nIndexesWas": was}

    def _cmd_listcollections(self, doc: Doc, db: Any, value: Any) -> Doc:
        from mongomock.filtering import filter_applies

        infos = [
            {
                "name": name,
                "type": "collection",
                "options": {},
                "info": {"readOnly": False},
                "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            }
            for name in sorted(db.list_collection_names())
        ]
        wanted = doc.get("filter") or {}
        infos = [info for info in infos if filter_applies(wanted, info)]  # type: ignore[no-untyped-call]
        if doc.get("nameOnly"):
            infos = [{"name": i["name"], "type": i["type"]} for i in infos]
        size = (doc.get("cursor") or {}).get("batchSize")
        return self._cursor(f"{db.name}.$cmd.listCollections", iter(infos), size)

    def _size(self, db: Any, name: str) -> int:
        return sum(len(bson.encode(d)) for d in db[name].find())

    def _cmd_listdatabases(self, doc: Doc, db: Any, value: Any) -> Doc:
        from mongomock.filtering import filter_applies

        wanted = doc.get("filter") or {}
        # Sizes (every document encoded) only when the answer or its filter shows them.
        sized = not doc.get("nameOnly") or any(key != "name" for key in wanted)
        found = []
        for name in sorted(self.client.list_database_names()):
            database = self.client[name]
            size = (
                sum(self._size(database, c) for c in database.list_collection_names())
                if sized
                else 0
            )
            found.append({"name": name, "sizeOnDisk": size, "empty": size == 0})
        found = [d for d in found if filter_applies(wanted, d)]  # type: ignore[no-untyped-call]
        if doc.get("nameOnly"):
            return {"databases": [{"name": d["name"]} for d in found]}
        return {"databases": found, "totalSize": sum(d["sizeOnDisk"] for d in found)}

    def _cmd_drop(self, doc: Doc, db: Any, value: Any) -> Doc:
        if not self._exists(db, value):
            raise CommandError(26, "NamespaceNotFound", "ns not found")
        was = len(db[value].index_information())
        db.drop_collection(value)
        return {"ns": f"{db.name}.{value}", "nIndexesWas": was}

    def _cmd_dropdatabase(self, doc: Doc, db: Any, value: Any) -> Doc:
        self.client.drop_database(db.name)
        return {"dropped": db.name}

    def _cmd_dbstats(self, doc: Doc, db: Any, value: Any) -> Doc:
        names = db.list_collection_names()
        objects = sum(db[n].count_documents({}) for n in names)
        size = sum(self._size(db, n) for n in names)
        indexes = sum(len(db[n].index_information()) for n in names)
        return {
            "db": db.name,
            "collections": len(names),
            "views": 0,
            "objects": objects,
            "dataSize": float(size),
            "storageSize": float(size),
            "indexes": indexes,
        }

    def _cmd_collstats(self, doc: Doc, db: Any, value: Any) -> Doc:
        if not self._exists(db, value):
            raise CommandError(26, "NamespaceNotFound", f"ns does not exist: {db.name}.{value}")
        count = db[value].count_documents({})
        size = self._size(db, value)
        return {
            "ns": f"{db.name}.{value}",
            "count": count,
            "size": size,
            "nindexes": len(db[value].index_information()),
        }


def replay(client: mongomock.MongoClient[Doc], entries: Iterable[OplogEntry]) -> int:
    """Run recorded write commands again, in order, on ``client``; how many ran."""
    replayer = MongoServer(name="replay")
    replayer.client = client
    count = 0
    for entry in entries:
        # A command that failed when it was served fails again (a duplicate key): skip it.
        with contextlib.suppress(CommandError):
            replayer.run(entry.command, copy.deepcopy(entry.doc), entry.database)
        count += 1
    return count
