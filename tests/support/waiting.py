"""Waiting on an observable condition (a file, a row, a message), never on time alone."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], *, timeout: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'a condition'}")
        time.sleep(0.02)
