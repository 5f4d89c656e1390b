"""One contract, two backends: SQLite and MongoDB.

MongoDB runs through mongomock because no MongoDB server can be installed on these machines
(Debian has none; the PyPI and npm packages download server binaries at run time). The
MongoDB backend uses only single-document atomic operations, which mongomock implements.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mongomock
import pytest

from runbooks.engine.errors import ConcurrentUpdate
from runbooks.engine.models import Actor, Execution, Origin, State
from runbooks.engine.plan import Plan
from runbooks.engine.store.base import GENESIS, Store
from runbooks.engine.store.mongo import MongoStore
from runbooks.engine.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "mongo"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        backend: Store = SqliteStore(tmp_path / "state.db")
    else:
        backend = MongoStore(mongomock.MongoClient(), "contract")
    yield backend
    backend.close()


def make_execution(execution_id: str, created_at: float = 1.0, state: State = State.APPROVED):
    plan = Plan(
        runbook="test.set",
        environment="production",
        tier="production",
        region=None,
        lock_key="production:test",
        params={"environment": "production"},
        steps=[],
        summary="",
        notes=[],
    )
    return Execution(
        id=execution_id,
        plan=plan,
        state=state,
        requester=Actor("alice", "Alice", Origin.CLI),
        created_at=created_at,
        updated_at=created_at,
    )


def test_execution_roundtrip_and_optimistic_concurrency(store: Store) -> None:
    execution = make_execution("rb-000001")
    store.create_execution(execution)
    with pytest.raises(ConcurrentUpdate):
        store.create_execution(make_execution("rb-000001"))
    first, second = store.get_execution("rb-000001"), store.get_execution("rb-000001")
    assert first is not None and second is not None
    first.state = State.RUNNING
    store.save_execution(first)
    second.state = State.CANCELLED
    with pytest.raises(ConcurrentUpdate):
        store.save_execution(second)
    stored = store.get_execution("rb-000001")
    assert stored is not None and stored.state == State.RUNNING and stored.version == 1
    assert store.get_execution("rb-nope00") is None


def test_list_newest_first_and_by_state(store: Store) -> None:
    for index in range(5):
        store.create_execution(
            make_execution(
                f"rb-00000{index}",
                created_at=float(index),
                state=State.SUCCEEDED if index % 2 else State.RUNNING,
            )
        )
    assert [e.id for e in store.list_executions(limit=3)] == ["rb-000004", "rb-000003", "rb-000002"]
    assert [e.id for e in store.list_executions(states=["succeeded"])] == ["rb-000003", "rb-000001"]


def test_locks(store: Store) -> None:
    assert store.try_lock("production:dr", "rb-aaaaaa") is None
    assert store.try_lock("production:dr", "rb-aaaaaa") is None  # re-entrant for the holder
    assert store.try_lock("production:dr", "rb-bbbbbb") == "rb-aaaaaa"
    assert store.lock_holder("production:dr") == "rb-aaaaaa"
    assert not store.steal_lock("production:dr", "rb-cccccc", "rb-zzzzzz")
    assert store.steal_lock("production:dr", "rb-cccccc", "rb-aaaaaa")
    store.release_lock("production:dr", "rb-aaaaaa")  # not the holder: no effect
    assert store.lock_holder("production:dr") == "rb-cccccc"
    store.release_lock("production:dr", "rb-cccccc")
    assert store.lock_holder("production:dr") is None
    assert store.try_lock("production:dr", "rb-bbbbbb") is None


def test_leases(store: Store) -> None:
    assert store.claim_lease("rb-1", "p1", until=110, now=100)
    assert not store.claim_lease("rb-1", "p2", until=115, now=105)
    assert store.claim_lease("rb-1", "p1", until=120, now=105)  # own lease: extend
    assert store.renew_lease("rb-1", "p1", until=130)
    assert not store.renew_lease("rb-1", "p2", until=130)
    assert store.claim_lease("rb-1", "p2", until=200, now=131)  # expired: taken over
    lease = store.get_lease("rb-1")
    assert lease is not None and lease.owner == "p2" and lease.until == 200
    assert not store.renew_lease("rb-1", "p1", until=300)
    store.release_lease("rb-1", "p2")
    assert store.get_lease("rb-1") is None


def test_cancel_requests_keep_the_first(store: Store) -> None:
    assert store.get_cancel("rb-1") is None
    store.request_cancel("rb-1", {"reason": "first"})
    store.request_cancel("rb-1", {"reason": "second"})
    assert store.get_cancel("rb-1") == {"reason": "first"}


def test_audit_chain_append_and_read(store: Store) -> None:
    def signer(seq: int, prev: str, body: bytes) -> str:
        return f"{seq}|{prev[:4]}|{body.decode()}"

    assert store.audit_head() is None
    rows = [store.append_audit(f"r{i}".encode(), signer) for i in range(1, 6)]
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev == GENESIS and rows[1].prev == rows[0].mac
    assert [r.seq for r in store.iter_audit(since_seq=3)] == [4, 5]
    head = store.audit_head()
    assert head is not None and head.seq == 5 and head.body == b"r5"
    assert [r.seq for r in store.audit_tail(2)] == [4, 5]


def test_events_outbox(store: Store) -> None:
    ids = [store.append_event("rb-1", "step.started", {"step": i}, float(i)) for i in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    events = store.events_after(ids[0])
    assert [e.payload["step"] for e in events] == [1, 2]
    assert events[0].type == "step.started" and events[0].execution_id == "rb-1"


def test_key_value(store: Store) -> None:
    assert store.kv_get("scheduler:last") is None
    store.kv_set("scheduler:last", {"job": "restore", "at": 1.5})
    store.kv_set("scheduler:last", {"job": "restore", "at": 2.5})
    assert store.kv_get("scheduler:last") == {"job": "restore", "at": 2.5}


def test_key_value_insert_if_absent_and_compare_and_set(store: Store) -> None:
    assert store.kv_insert("leader.x", {"owner": "a", "term": 1})
    assert not store.kv_insert("leader.x", {"owner": "b", "term": 1})
    assert store.kv_get("leader.x") == {"owner": "a", "term": 1}
    assert not store.kv_swap("leader.x", {"owner": "b", "term": 1}, {"owner": "b", "term": 2})
    assert not store.kv_swap("leader.none", {"owner": "a"}, {"owner": "b"})
    assert store.kv_swap("leader.x", {"term": 1, "owner": "a"}, {"owner": "b", "term": 2})
    assert store.kv_get("leader.x") == {"owner": "b", "term": 2}


def test_lock_holders_by_prefix(store: Store) -> None:
    assert store.try_lock("production:api", "rb-1") is None
    assert store.try_lock("production:*", "rb-2") is None
    assert store.try_lock("production-eu:api", "rb-3") is None
    assert store.try_lock("staging:api", "rb-4") is None
    assert store.lock_holders("production:") == {"production:api": "rb-1", "production:*": "rb-2"}
    assert store.lock_holders("dev:") == {}


def test_leader_lease_has_one_holder_and_fences_a_stale_one(store: Store) -> None:
    from runbooks.engine.background.leases import LeaderLease
    from runbooks.engine.clock import FakeClock

    clock = FakeClock()
    first = LeaderLease(store, "scheduler", "bot-1", clock)
    second = LeaderLease(store, "scheduler", "bot-2", clock)
    assert first.acquire() == 1 and second.acquire() is None
    clock.advance(10)
    assert first.acquire() == 1  # renewed: same term
    clock.advance(14)
    assert second.acquire() is None  # renewed 14 s ago: still first's
    clock.advance(2)
    assert second.acquire() == 2 and first.leads(1) is False and second.leads(2)
    assert first.acquire() is None
    second.release()
    assert first.acquire() == 3


def test_schema_is_versioned_and_reopening_migrates_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.create_execution(make_execution("rb-keep01"))
    version = store.schema_version()
    store.close()
    again = SqliteStore(tmp_path / "s.db")
    assert again.schema_version() == version >= 1
    assert again.get_execution("rb-keep01") is not None


def test_an_execution_keeps_its_drill_and_one_stored_before_the_field_loads(store: Store) -> None:
    execution = make_execution("rb-000007")
    execution.drill = "monthly-restore-test"
    store.create_execution(execution)
    store.create_execution(make_execution("rb-000008"))
    stored = store.get_execution("rb-000007")
    assert stored is not None and stored.drill == "monthly-restore-test"
    other = store.get_execution("rb-000008")
    assert other is not None and other.drill is None
    old = make_execution("rb-000009").to_doc()
    del old["drill"]  # as written before executions carried their drill
    assert Execution.from_doc(old).drill is None


def test_a_batch_lands_whole_and_a_failed_write_inside_it_alone_is_undone(store: Store) -> None:
    with store.batch():
        store.kv_set("a", 1)
        assert not store.kv_swap("a", 2, 3)  # a write that finds nothing to do
        with pytest.raises(ConcurrentUpdate):
            store.create_execution(make_execution("rb-000001"))
            store.create_execution(make_execution("rb-000001"))
        store.append_event("rb-000001", "x", {"n": 1}, 1.0)
    assert store.kv_get("a") == 1
    assert store.get_execution("rb-000001") is not None
    assert [e.type for e in store.events_after(0)] == ["x"]


def test_a_batch_that_fails_writes_nothing_on_sqlite(tmp_path: Path) -> None:
    # A second connection is the oracle: it sees only what was committed.
    store = SqliteStore(tmp_path / "state.db")
    other = SqliteStore(tmp_path / "state.db")
    with store.batch():
        store.kv_set("kept", 1)
        store.append_event(None, "inside", {}, 1.0)
        assert other.kv_get("kept") is None  # one commit, at the end
    assert other.kv_get("kept") == 1
    with pytest.raises(RuntimeError), store.batch():
        store.kv_set("lost", 1)
        raise RuntimeError("a crash inside the batch")
    assert other.kv_get("lost") is None and store.kv_get("lost") is None
    store.kv_set("after", 1)  # the store writes on normally after a failed batch
    assert other.kv_get("after") == 1
