"""Embedded SQLite store (stdlib ``sqlite3``, WAL): the default, nothing to install.

Several processes (the bot and terminals) share one file. Every write runs in
``BEGIN IMMEDIATE`` with a generous busy timeout, so writers queue instead of failing with
"database is locked", and a reader never has to upgrade its lock mid-transaction.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runbooks.engine.errors import ConcurrentUpdate, StoreFull
from runbooks.engine.models import AuditRow, Event, Execution, Lease
from runbooks.engine.store.base import GENESIS, Signer, Store

BUSY_TIMEOUT_S = 30.0
WAL_RETRY_S = 0.01

#: Versioned migrations; PRAGMA user_version records how many have run.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        runbook TEXT NOT NULL,
        environment TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX executions_created ON executions (created_at);
    CREATE INDEX executions_state ON executions (state);
    CREATE TABLE locks (key TEXT PRIMARY KEY, execution_id TEXT NOT NULL);
    CREATE TABLE leases (execution_id TEXT PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL);
    CREATE TABLE cancels (execution_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        prev TEXT NOT NULL,
        body BLOB NOT NULL,
        mac TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        execution_id TEXT,
        type TEXT NOT NULL,
        payload TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX events_execution ON events (execution_id);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    """
    CREATE TABLE reviews (
        execution_id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        doc TEXT NOT NULL,
        acknowledged_by TEXT,
        acknowledged_at REAL
    );
    """,
)


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL (it stays set in the file). Switching needs the file to itself and SQLite
    answers "locked" at once, without its busy handler, when another process opens the new
    file at the same moment (two replicas starting together): retry until the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(WAL_RETRY_S)


#: Extended codes SQLite gives for a write that found no space before it could say FULL:
#: the WAL index (-shm) cannot grow, or a write failed. They mean "full" only when the volume
#: really has no room left (checked), otherwise they stay what they are.
_IO_ERRORS = {4874: "SQLITE_IOERR_SHMSIZE", 778: "SQLITE_IOERR_WRITE"}
#: Below this much free space, an I/O error on write is the disk being full.
_NEARLY_FULL = 1024 * 1024


def _is_full(exc: sqlite3.OperationalError, path: Path) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    if code not in _IO_ERRORS:
        return False
    try:
        return shutil.disk_usage(path.parent).free < _NEARLY_FULL
    except OSError:
        return False


class SqliteStore(Store):
    """One SQLite file; one connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.description = f"sqlite:{self.path}"
        self._local = threading.local()
        #: Writers of this process queue here, in order, instead of in SQLite's busy handler,
        #: which sleeps (up to 100 ms a try) and gave a burst of 20 threads a 0.5 s tail.
        #: The busy timeout still orders writers of other processes.
        self._writers = threading.RLock()
        self._migrate()

    # connection handling ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True
            )
            try:
                _wal(conn)
                # NORMAL in WAL mode: durable across process crashes, fsync only at checkpoints.
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.OperationalError as exc:
                conn.close()
                if _is_full(exc, self.path):  # opening in WAL mode writes the -shm index
                    raise StoreFull(str(self.path)) from None
                raise
            self._local.conn = conn
        return conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._write():
            yield

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A full disk (SQLITE_FULL) becomes ``StoreFull`` naming the
        file: the transaction is rolled back, what was committed before is intact.

        Inside a ``batch`` (this thread's outer transaction) a write is a savepoint: atomic
        on its own, committed with the batch (one commit instead of one per write)."""
        with self._writers:
            if getattr(self._local, "depth", 0):
                yield from self._nested()
                return
            try:
                conn = self._conn()
                conn.execute("BEGIN IMMEDIATE")
                self._local.depth = 1
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLite may have rolled back already
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    self._local.depth = 0
            except sqlite3.OperationalError as exc:
                if _is_full(exc, self.path):
                    raise StoreFull(str(self.path)) from None
                raise

    def _nested(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("SAVEPOINT write")
        self._local.depth += 1
        try:
            yield conn
            conn.execute("RELEASE write")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO write")
                conn.execute("RELEASE write")
            raise
        finally:
            self._local.depth -= 1

    def _migrate(self) -> None:
        with self._write() as conn:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={number}")

    def schema_version(self) -> int:
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def ping(self, *, timeout: float = 2.0) -> None:
        # A read in WAL mode never waits for writers; the file is local.
        self._conn().execute("SELECT 1 FROM executions LIMIT 1").fetchall()

    # executions ---------------------------------------------------------------------------
    def create_execution(self, execution: Execution) -> None:
        doc = execution.to_doc()
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        execution.id,
                        execution.runbook,
                        execution.environment,
                        str(execution.state),
                        execution.created_at,
                        execution.version,
                        json.dumps(doc),
                    ),
                )
        except sqlite3.IntegrityError:
            raise ConcurrentUpdate(f"execution {execution.id} already exists") from None

    def get_execution(self, execution_id: str) -> Execution | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM executions WHERE id = ?", (execution_id,))
            .fetchone()
        )
        return Execution.from_doc(json.loads(row[0])) if row else None

    def save_execution(self, execution: Execution) -> None:
        expected = execution.version
        execution.version = expected + 1
        doc = execution.to_doc()
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE executions SET state = ?, version = ?, doc = ? "
                "WHERE id = ? AND version = ?",
                (str(execution.state), execution.version, json.dumps(doc), execution.id, expected),
            )
        if cursor.rowcount != 1:
            execution.version = expected
            raise ConcurrentUpdate(f"execution {execution.id} changed underneath (v{expected})")

    def list_executions(
        self, *, limit: int = 50, states: list[str] | None = None
    ) -> list[Execution]:
        query, args = "SELECT doc FROM executions", []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            args.extend(states)
        query += " ORDER BY created_at DESC, id LIMIT ?"
        rows = self._conn().execute(query, (*args, limit)).fetchall()
        return [Execution.from_doc(json.loads(r[0])) for r in rows]

    # locks --------------------------------------------------------------------------------
    def try_lock(self, key: str, execution_id: str) -> str | None:
        with self._write() as conn:
            row = conn.execute("SELECT execution_id FROM locks WHERE key = ?", (key,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO locks VALUES (?, ?)", (key, execution_id))
                return None
            return None if row[0] == execution_id else str(row[0])

    def steal_lock(self, key: str, execution_id: str, previous: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE locks SET execution_id = ? WHERE key = ? AND execution_id = ?",
                (execution_id, key, previous),
            )
        return cursor.rowcount == 1

    def release_lock(self, key: str, execution_id: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM locks WHERE key = ? AND execution_id = ?", (key, execution_id)
            )

    def lock_holders(self, prefix: str) -> dict[str, str]:
        rows = (
            self._conn()
            .execute(
                "SELECT key, execution_id FROM locks WHERE substr(key, 1, ?) = ?",
                (len(prefix), prefix),
            )
            .fetchall()
        )
        return {str(k): str(v) for k, v in rows}

    def lock_holder(self, key: str) -> str | None:
        row = (
            self._conn().execute("SELECT execution_id FROM locks WHERE key = ?", (key,)).fetchone()
        )
        return str(row[0]) if row else None

    # leases -------------------------------------------------------------------------------
    def claim_lease(self, execution_id: str, owner: str, until: float, now: float) -> bool:
        with self._write() as conn:
            row = conn.execute(
                "SELECT owner, until FROM leases WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if row is not None and row[0] != owner and row[1] > now:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (execution_id, owner, until)
            )
            return True

    def renew_lease(self, execution_id: str, owner: str, until: float) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE leases SET until = ? WHERE execution_id = ? AND owner = ?",
                (until, execution_id, owner),
            )
        return cursor.rowcount == 1

    def release_lease(self, execution_id: str, owner: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM leases WHERE execution_id = ? AND owner = ?", (execution_id, owner)
            )

    def get_lease(self, execution_id: str) -> Lease | None:
        row = (
            self._conn()
            .execute("SELECT owner, until FROM leases WHERE execution_id = ?", (execution_id,))
            .fetchone()
        )
        return Lease(execution_id, row[0], row[1]) if row else None

    # cancel requests ----------------------------------------------------------------------
    def request_cancel(self, execution_id: str, doc: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO cancels VALUES (?, ?)", (execution_id, json.dumps(doc))
            )

    def get_cancel(self, execution_id: str) -> dict[str, Any] | None:
        row = (
            self._conn()
            .execute("SELECT doc FROM cancels WHERE execution_id = ?", (execution_id,))
            .fetchone()
        )
        return dict(json.loads(row[0])) if row else None

    # audit --------------------------------------------------------------------------------
    def append_audit(self, body: bytes, sign: Signer) -> AuditRow:
        with self._write() as conn:
            row = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            mac = sign(seq, prev, body)
            conn.execute("INSERT INTO audit VALUES (?, ?, ?, ?)", (seq, prev, body, mac))
        return AuditRow(seq, prev, body, mac)

    def iter_audit(self, *, since_seq: int = 0) -> Iterator[AuditRow]:
        # A dedicated connection: the caller may write (e.g. log) while iterating.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            cursor = conn.execute(
                "SELECT seq, prev, body, mac FROM audit WHERE seq > ? ORDER BY seq", (since_seq,)
            )
            while rows := cursor.fetchmany(20_000):
                for row in rows:
                    yield _audit_row(row)
        finally:
            conn.close()

    def audit_head(self) -> AuditRow | None:
        row = (
            self._conn()
            .execute("SELECT seq, prev, body, mac FROM audit ORDER BY seq DESC LIMIT 1")
            .fetchone()
        )
        return _audit_row(row) if row else None

    def audit_tail(self, n: int) -> list[AuditRow]:
        rows = (
            self._conn()
            .execute("SELECT seq, prev, body, mac FROM audit ORDER BY seq DESC LIMIT ?", (n,))
            .fetchall()
        )
        return [_audit_row(r) for r in reversed(rows)]

    # events -------------------------------------------------------------------------------
    def append_event(
        self, execution_id: str | None, type_: str, payload: dict[str, Any], at: float
    ) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO events (execution_id, type, payload, at) VALUES (?, ?, ?, ?)",
                (execution_id, type_, json.dumps(payload), at),
            )
        return int(cursor.lastrowid or 0)

    def events_after(self, event_id: int, *, limit: int = 100) -> list[Event]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, execution_id, type, payload, at FROM events WHERE id > ? "
                "ORDER BY id LIMIT ?",
                (event_id, limit),
            )
            .fetchall()
        )
        return [Event(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    # reviews ------------------------------------------------------------------------------
    def create_review(self, execution_id: str, doc: dict[str, Any], at: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO reviews (execution_id, created_at, doc) VALUES (?, ?, ?)",
                (execution_id, at, json.dumps(doc)),
            )

    def list_reviews(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        query = (
            "SELECT execution_id, created_at, doc, acknowledged_by, acknowledged_at FROM reviews"
        )
        if open_only:
            query += " WHERE acknowledged_by IS NULL"
        rows = self._conn().execute(query + " ORDER BY created_at, execution_id").fetchall()
        return [
            {
                "execution_id": r[0],
                "created_at": r[1],
                "doc": json.loads(r[2]),
                "acknowledged_by": json.loads(r[3]) if r[3] else None,
                "acknowledged_at": r[4],
            }
            for r in rows
        ]

    def ack_review(self, execution_id: str, by: dict[str, Any], at: float) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE reviews SET acknowledged_by = ?, acknowledged_at = ? "
                "WHERE execution_id = ? AND acknowledged_by IS NULL",
                (json.dumps(by), at, execution_id),
            )
        return cursor.rowcount == 1

    # key-value ----------------------------------------------------------------------------
    def kv_get(self, key: str) -> Any:
        row = self._conn().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def kv_set(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, _kv_text(value)))

    def kv_insert(self, key: str, value: Any) -> bool:
        with self._write() as conn:
            cursor = conn.execute("INSERT OR IGNORE INTO kv VALUES (?, ?)", (key, _kv_text(value)))
        return cursor.rowcount == 1

    def kv_swap(self, key: str, expected: Any, value: Any) -> bool:
        with self._write() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or json.loads(row[0]) != expected:
                return False
            conn.execute("UPDATE kv SET value = ? WHERE key = ?", (_kv_text(value), key))
        return True


def _kv_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _audit_row(row: tuple[Any, ...]) -> AuditRow:
    """Build a row without trusting column types: a tampered row may hold TEXT or NULL where
    BLOB was written, and verification must report it, not crash on it."""
    seq, prev, body, mac = row
    if isinstance(body, str):
        body = body.encode()
    return AuditRow(
        seq if isinstance(seq, int) else -1,
        prev if isinstance(prev, str) else repr(prev),
        bytes(body) if body is not None else b"",
        mac if isinstance(mac, str) else repr(mac),
    )
