"""Named leader leases: one process at a time does a kind of background work.

A leader lease lives in the store's key-value table as ``{"owner", "until", "term"}`` and
changes hands only by compare-and-set, so two processes never both believe they lead. The
term grows by one each time the lease changes hands: work stamped with a term can be refused
once a newer leader exists (fencing a leader that paused past its lease and woke up).

Defaults follow client-go's leader election: 15 s lease, renewed every 10 s, retried every 2 s.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from runbooks.engine.clock import Clock
from runbooks.engine.errors import StoreFull
from runbooks.engine.store.base import Store

LEASE_S = 15.0
RENEW_S = 10.0
RETRY_S = 2.0
KEY = "leader.{}"


@dataclass(frozen=True)
class Leadership:
    name: str
    owner: str
    until: float
    term: int


class LeaderLease:
    """Take, keep and give up the named lease for ``owner``."""

    def __init__(
        self,
        store: Store,
        name: str,
        owner: str,
        clock: Clock,
        *,
        lease: float = LEASE_S,
        renew: float = RENEW_S,
        retry: float = RETRY_S,
    ) -> None:
        self.store, self.name, self.owner, self.clock = store, name, owner, clock
        self.lease, self.renew, self.retry = lease, renew, retry
        self._held: dict[str, object] | None = None

    @property
    def key(self) -> str:
        return KEY.format(self.name)

    def current(self) -> Leadership | None:
        doc = self.store.kv_get(self.key)
        if not doc:
            return None
        return Leadership(self.name, str(doc["owner"]), float(doc["until"]), int(doc["term"]))

    def acquire(self) -> int | None:
        """Take or renew the lease; return our term, or None while someone else leads."""
        now = self.clock.now()
        doc = self.store.kv_get(self.key)
        if doc is None:
            fresh = {"owner": self.owner, "until": now + self.lease, "term": 1}
            if self.store.kv_insert(self.key, fresh):
                self._held = fresh
                return 1
            return None
        term = int(doc["term"])
        if doc["owner"] != self.owner:
            if float(doc["until"]) > now:
                self._held = None
                return None
            term += 1  # it changes hands: a new term fences the old leader
        new = {"owner": self.owner, "until": now + self.lease, "term": term}
        if self.store.kv_swap(self.key, doc, new):
            self._held = new
            return term
        self._held = None
        return None

    def leads(self, term: int) -> bool:
        """Tell whether ``term`` is still the live term of this lease (fencing check)."""
        current = self.current()
        return (
            current is not None
            and current.term == term
            and current.owner == self.owner
            and current.until > self.clock.now()
        )

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown), so a successor need not wait."""
        doc = self.store.kv_get(self.key)
        if doc is not None and doc["owner"] == self.owner:
            # A full store cannot write it: the lease then runs out on its own.
            with contextlib.suppress(StoreFull):
                self.store.kv_swap(self.key, doc, {**doc, "until": 0.0})
        self._held = None

    def interval(self, term: int | None) -> float:
        """How long to wait before the next acquire: renew while leading, retry otherwise."""
        return self.renew if term is not None else self.retry
