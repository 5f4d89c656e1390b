"""Counters of execution transitions, kept in the store so every replica reports the same
numbers, a restart resets nothing, and a count never goes down (``/metrics``'
``runbook_bot_executions_total``).

One key-value record holds every count; an increment is a compare-and-swap, retried when
another writer got there first.
"""

from __future__ import annotations

import logging

from runbooks.engine.store.base import Store

TRANSITIONS_KEY = "metrics.transitions"
_ATTEMPTS = 50

log = logging.getLogger(__name__)


def count_transition(store: Store, runbook: str, environment: str, state: str) -> None:
    """One more execution of ``runbook`` in ``environment`` entered ``state``.

    The record is a list of ``[runbook, environment, state, count]`` (runbook names have dots,
    which MongoDB does not take in field names)."""
    labels = [runbook, environment, state]
    for _ in range(_ATTEMPTS):
        previous = store.kv_get(TRANSITIONS_KEY)
        rows = [list(row) for row in previous or []]
        for row in rows:
            if row[:3] == labels:
                row[3] = int(row[3]) + 1
                break
        else:
            rows.append([*labels, 1])
        if previous is None:
            if store.kv_insert(TRANSITIONS_KEY, rows):
                return
        elif store.kv_swap(TRANSITIONS_KEY, previous, rows):
            return
    # A count missed under extreme contention stays low; it never goes down.
    log.warning("transition of %s not counted after %d attempts", labels, _ATTEMPTS)


def transition_counts(store: Store) -> dict[tuple[str, str, str], int]:
    """(runbook, environment, state) -> how many times an execution entered the state."""
    return {
        (str(runbook), str(environment), str(state)): int(count)
        for runbook, environment, state, count in store.kv_get(TRANSITIONS_KEY) or []
    }
