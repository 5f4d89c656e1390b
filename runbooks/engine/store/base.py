"""The store contract both backends implement (tests/engine/test_store_contract.py).

Designed without multi-document transactions (MongoDB through mongomock has none):
executions are single documents updated with optimistic concurrency (``version``); locks,
leases and audit sequence numbers are single-record compare-and-set operations.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runbooks.engine.models import AuditRow, Event, Execution, Lease

#: Computes a record's MAC from (seq, prev_mac, body).
Signer = Callable[[int, str, bytes], str]
GENESIS = "0" * 64


class Store(ABC):
    """Executions, locks, leases, cancel requests, audit chain, event outbox, key-value state."""

    description: str

    # executions -------------------------------------------------------------------------
    @abstractmethod
    def create_execution(self, execution: Execution) -> None:
        """Insert a new execution; raise ConcurrentUpdate if the id exists."""

    @abstractmethod
    def get_execution(self, execution_id: str) -> Execution | None: ...

    @abstractmethod
    def save_execution(self, execution: Execution) -> None:
        """Write if the stored version equals ``execution.version``, then bump it.

        Raise ConcurrentUpdate when another writer got there first.
        """

    @abstractmethod
    def list_executions(
        self, *, limit: int = 50, states: list[str] | None = None
    ) -> list[Execution]:
        """Newest first."""

    # locks --------------------------------------------------------------------------------
    @abstractmethod
    def try_lock(self, key: str, execution_id: str) -> str | None:
        """Take ``key`` for the execution; return None on success, else the holder's id."""

    @abstractmethod
    def steal_lock(self, key: str, execution_id: str, previous: str) -> bool:
        """Move ``key`` from ``previous`` (known to be finished) to ``execution_id``."""

    @abstractmethod
    def release_lock(self, key: str, execution_id: str) -> None: ...

    @abstractmethod
    def lock_holder(self, key: str) -> str | None: ...

    @abstractmethod
    def lock_holders(self, prefix: str) -> dict[str, str]:
        """Every held lock whose key starts with ``prefix``: key -> holder."""

    # leases -------------------------------------------------------------------------------
    @abstractmethod
    def claim_lease(self, execution_id: str, owner: str, until: float, now: float) -> bool:
        """Take the lease if free, expired, or already ours."""

    @abstractmethod
    def renew_lease(self, execution_id: str, owner: str, until: float) -> bool: ...

    @abstractmethod
    def release_lease(self, execution_id: str, owner: str) -> None: ...

    @abstractmethod
    def get_lease(self, execution_id: str) -> Lease | None: ...

    # cancel requests ----------------------------------------------------------------------
    @abstractmethod
    def request_cancel(self, execution_id: str, doc: dict[str, Any]) -> None: ...

    @abstractmethod
    def get_cancel(self, execution_id: str) -> dict[str, Any] | None: ...

    # audit --------------------------------------------------------------------------------
    @abstractmethod
    def append_audit(self, body: bytes, sign: Signer) -> AuditRow:
        """Append one record at head+1, atomically with reading the head (no holes)."""

    @abstractmethod
    def iter_audit(self, *, since_seq: int = 0) -> Iterator[AuditRow]:
        """Records with seq > since_seq, in seq order."""

    @abstractmethod
    def audit_head(self) -> AuditRow | None: ...

    @abstractmethod
    def audit_tail(self, n: int) -> list[AuditRow]:
        """The newest ``n`` records, oldest first."""

    # events -------------------------------------------------------------------------------
    @abstractmethod
    def append_event(
        self, execution_id: str | None, type_: str, payload: dict[str, Any], at: float
    ) -> int: ...

    @abstractmethod
    def events_after(self, event_id: int, *, limit: int = 100) -> list[Event]: ...

    # break-glass review items -------------------------------------------------------------
    @abstractmethod
    def create_review(self, execution_id: str, doc: dict[str, Any], at: float) -> None:
        """Open a review item for a break-glass execution (one per execution)."""

    @abstractmethod
    def list_reviews(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        """Review items, oldest first; each has ``execution_id``, ``created_at``, ``doc``,
        ``acknowledged_by`` and ``acknowledged_at``."""

    @abstractmethod
    def ack_review(self, execution_id: str, by: dict[str, Any], at: float) -> bool:
        """Close an open review item; False if there is none or it is already closed."""

    # key-value (scheduler state and the like) --------------------------------------------
    @abstractmethod
    def kv_get(self, key: str) -> Any: ...

    @abstractmethod
    def kv_set(self, key: str, value: Any) -> None: ...

    @abstractmethod
    def kv_insert(self, key: str, value: Any) -> bool:
        """Insert-if-absent: store ``value`` unless ``key`` exists; True if this call stored it."""

    @abstractmethod
    def kv_swap(self, key: str, expected: Any, value: Any) -> bool:
        """Compare-and-set: replace the value only if it still equals ``expected``."""

    # housekeeping -------------------------------------------------------------------------
    @abstractmethod
    def ping(self, *, timeout: float = 2.0) -> None:
        """Raise if the store cannot be reached within ``timeout`` seconds (a readiness probe
        must answer before its own deadline)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group this thread's writes into one commit where the backend can (SQLite); each
        write stays atomic on its own. Without transactions (MongoDB) writes land one by one,
        as outside a batch. A failure inside rolls back what the batch wrote (SQLite)."""
        yield
