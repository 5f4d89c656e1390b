"""Events: every transition is stored in an outbox and handed to local subscribers.

Front ends in other processes (the bot rendering what a terminal did) read the outbox with
``follow``; subscribers in this process are called synchronously after the write. Payloads
pass through the redactor before they are stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from runbooks.engine.clock import Clock
from runbooks.engine.models import Event
from runbooks.engine.redact import redact
from runbooks.engine.store.base import Store

Subscriber = Callable[[Event], None]
_log = logging.getLogger(__name__)


class EventBus:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Add a local subscriber; return a function that removes it."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, execution_id: str | None, type_: str, payload: dict[str, Any]) -> Event:
        at = self._clock.now()
        # The outbox is an edge: followers send its payloads to Slack and PagerDuty.
        payload = redact(payload)
        event_id = self._store.append_event(execution_id, type_, payload, at)
        event = Event(event_id, execution_id, type_, payload, at)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a broken renderer must not stop a runbook
                _log.exception("event subscriber failed on %s", type_)
        return event

    def follow(self, after_id: int, *, limit: int = 100) -> list[Event]:
        """Events stored after ``after_id`` (by any process), oldest first."""
        return self._store.events_after(after_id, limit=limit)
