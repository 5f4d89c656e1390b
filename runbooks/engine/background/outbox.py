"""Outbox followers: each consumer of the event outbox (the Slack notifier now, PagerDuty
notes next) reads it with a durable cursor, under a named leader lease, with backoff.

Delivery is at-least-once: the stored cursor moves only past events whose work the consumer
has delivered, so a follower that dies (or loses its lease) leaves the rest to its successor,
which starts again from the stored cursor; consumers make delivery idempotent (update the
same message, mark each event's delivery). A consumer only notes events and flushes:

- ``note(event)`` turns an event into pending work (in memory);
- ``flush()`` delivers what it can and returns the oldest event id still undelivered (None
  when everything is out);
- ``reset()`` forgets pending work (a new leader term starts again from the cursor).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from runbooks.engine.background.leases import LeaderLease
from runbooks.engine.clock import Clock
from runbooks.engine.errors import StoreFull
from runbooks.engine.models import Event
from runbooks.engine.store.base import Store

_log = logging.getLogger(__name__)
CURSOR_KEY = "outbox.{}.cursor"
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class Consumer(Protocol):
    def note(self, event: Event) -> None: ...

    def flush(self) -> int | None: ...

    def reset(self) -> None: ...


class QueuedConsumer:
    """A consumer that delivers the events it wants one at a time, in order: ``wants`` picks
    them, ``deliver`` does the work (idempotently: it may run again after a crash). An event
    whose delivery raises stays first, and the pass reports it undelivered (the follower backs
    off and retries)."""

    def __init__(self) -> None:
        self.pending: list[Event] = []
        #: Seconds the target asked us to wait (e.g. a 429's reset) after the last failure.
        self.retry_after: float | None = None

    def wants(self, event: Event) -> bool:
        raise NotImplementedError

    def deliver(self, event: Event) -> None:
        raise NotImplementedError

    def note(self, event: Event) -> None:
        if self.wants(event):
            self.pending.append(event)

    def reset(self) -> None:
        self.pending = []

    def flush(self) -> int | None:
        self.retry_after = None
        while self.pending:
            event = self.pending[0]
            try:
                self.deliver(event)
            except Exception as exc:
                wait = getattr(exc, "retry_after", None)
                self.retry_after = float(wait) if isinstance(wait, int | float) else None
                _log.warning(
                    "%s: event %s not delivered, will retry: %s",
                    type(self).__name__,
                    event.id,
                    getattr(exc, "message", exc),
                )
                return event.id
            self.pending.pop(0)
        return None


class OutboxFollower:
    """Follow the outbox for one named consumer."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        consumer: Consumer,
        *,
        name: str,
        owner: str,
        cursor_key: str | None = None,
        lease: float = 15.0,
        batch: int = 500,
    ) -> None:
        self.store, self.clock, self.consumer, self.name = store, clock, consumer, name
        self.cursor_key = cursor_key or CURSOR_KEY.format(name)
        self.batch = batch
        self.leader = LeaderLease(store, name, owner, clock, lease=lease)
        self._term: int | None = None
        self._seen = 0  # events noted in this term (the stored cursor lags while work is out)
        self.failures = 0
        #: The last pass left work undelivered (the consumer's target refused or failed).
        self.behind = False

    def cursor(self) -> int:
        return int(self.store.kv_get(self.cursor_key) or 0)

    def start_at_present(self) -> None:
        """On a first start, begin at the newest event: do not replay history."""
        if self.store.kv_get(self.cursor_key) is not None:
            return
        latest = 0
        while batch := self.store.events_after(latest, limit=1000):
            latest = batch[-1].id
        self.store.kv_insert(self.cursor_key, latest)

    def lead(self) -> bool:
        """Take or keep the lease; a new term forgets pending work and starts at the cursor."""
        term = self.leader.acquire()
        if term != self._term:
            self.consumer.reset()
            self._seen = 0
            self._term = term
        return term is not None

    def pass_once(self) -> int:
        """Read new events, let the consumer deliver, advance the cursor past what it did."""
        cursor = self.cursor()
        events = self.store.events_after(max(self._seen, cursor), limit=self.batch)
        for event in events:
            self.consumer.note(event)
        if events:
            self._seen = events[-1].id
        oldest = self.consumer.flush()
        self.behind = oldest is not None
        done_through = max(self._seen, cursor) if oldest is None else oldest - 1
        if done_through > cursor:
            self.store.kv_set(self.cursor_key, done_through)
        return len(events)

    def backoff(self) -> float:
        """How long to wait after ``failures`` consecutive failed passes: doubling from
        ``BACKOFF_FIRST_S`` up to ``BACKOFF_MAX_S``, and never less than the target asked for
        (a rate limit's reset) when the consumer says so."""
        if not self.failures:
            return 0.0
        wait = float(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.failures - 1)))
        asked = getattr(self.consumer, "retry_after", None) if self.behind else None
        return max(wait, float(asked)) if isinstance(asked, int | float) else wait

    def run(self, stop: threading.Event, wake: threading.Event, *, poll: float) -> None:
        """Loop until ``stop``: a pass when leading, then wait (poll, or the backoff)."""
        full = False
        while not stop.is_set():
            try:
                if self.lead():
                    self.pass_once()
                    self.failures = self.failures + 1 if self.behind else 0
                else:
                    self.failures = 0
                full = False
            except StoreFull as exc:
                self.failures += 1
                if not full:  # one line until it recovers, not one per pass
                    _log.error("outbox follower %s: %s", self.name, exc.message)
                full = True
            except Exception:
                self.failures += 1
                _log.exception("outbox follower %s: pass failed", self.name)
            wake.wait(max(poll, self.backoff()))
            wake.clear()
        self.leader.release()


class FollowerThread:
    """A consumer following the outbox on its own daemon thread, under its leader lease;
    ``stop`` ends it (giving up the lease), ``wake`` makes it look now."""

    def __init__(
        self, store: Store, clock: Clock, consumer: Consumer, *, name: str, owner: str, poll: float
    ) -> None:
        self.consumer = consumer
        self.follower = OutboxFollower(store, clock, consumer, name=name, owner=owner)
        self.poll = poll
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        self.follower.start_at_present()
        self.follower.run(self.stop, self.wake, poll=self.poll)
