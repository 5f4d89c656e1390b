"""Audit log throughput on SQLite, as ratios against baselines run in the same process.

append: records/s through AuditLog.record (chain + HMAC + redaction + JSON log line to a
        file), against a baseline of bare INSERTs of the same bytes, one transaction each.
verify: records/s through AuditLog.verify, against a baseline that only reads the rows.

    python bench/audit_bench.py [--records N]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import SystemClock
from runbooks.engine.logs import configure_logging
from runbooks.engine.models import Actor, Origin
from runbooks.engine.plan import canonical_json
from runbooks.engine.store.sqlite import SqliteStore

KEY = b"bench-key-0123456789abcdef"
ACTOR = Actor("alice", "Alice", Origin.CLI)


def append_chain(path: Path, n: int) -> float:
    audit = AuditLog(SqliteStore(path), KEY, SystemClock())
    start = time.perf_counter()
    for i in range(n):
        audit.record(
            "step.succeeded",
            actor=ACTOR,
            outcome="succeeded",
            target={"runbook": "rollback", "environment": "production"},
            execution_id="rb-7f3a2c",
            detail={"step": i},
        )
    return n / (time.perf_counter() - start)


def append_baseline(path: Path, n: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB)")
    body = canonical_json({"action": "step.succeeded", "detail": {"step": 0}, "pad": "x" * 200})
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i + 1, body))
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    conn.close()
    return rate


def verify_chain(path: Path) -> tuple[float, int]:
    audit = AuditLog(SqliteStore(path), KEY, SystemClock())
    start = time.perf_counter()
    result = audit.verify()
    assert result.ok
    return result.count / (time.perf_counter() - start), result.count


def read_baseline(path: Path) -> float:
    store = SqliteStore(path)
    start = time.perf_counter()
    count = sum(1 for _ in store.iter_audit())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        configure_logging(str(Path(tmp) / "bench.jsonl"))
        appends, bases, verifies, reads = [], [], [], []
        for i in range(args.repeat):
            db = Path(tmp) / f"a{i}.db"
            appends.append(append_chain(db, args.records))
            bases.append(append_baseline(Path(tmp) / f"b{i}.db", args.records))
            rate, _count = verify_chain(db)
            verifies.append(rate)
            reads.append(read_baseline(db))
    med = statistics.median
    print(f"records per run: {args.records}, runs: {args.repeat} (medians)")
    print(f"append with chain: {med(appends):>10,.0f} rec/s   (goal >= 5,000)")
    print(f"append baseline  : {med(bases):>10,.0f} rec/s   ratio {med(appends) / med(bases):.2f}")
    print(f"verify           : {med(verifies):>10,.0f} rec/s   (goal >= 100,000)")
    print(f"read baseline    : {med(reads):>10,.0f} rec/s   ratio {med(verifies) / med(reads):.2f}")


if __name__ == "__main__":
    main()
