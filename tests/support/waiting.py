"""Waiting for something observable (a file, a row, a message), never for a time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Poll an observable condition (a file, a row), failing clearly on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
