"""The engine's background work in one place: one kind of worker, started and stopped together.

Every loop a bot process runs beside its HTTP server (the supervisor's sweep, the drill
scheduler, the readiness evaluation, the GitOps watch, the outbox followers, Slack's notifier)
is a thread with a ``stop`` and a ``wake`` event. ``Worker`` is the timer kind: each round calls
``step``, logs a failure (a full store once until it recovers, anything else with its
traceback) and sleeps ``pause()`` seconds or until woken; ``finish`` runs once at the end (a
worker gives up its leader lease there, so a successor need not wait for it to run out).
``Workers`` starts them in order and stops them all: every stop event first, then each thread
joined, so shutdown is written once and takes as long as the slowest worker, not the sum.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from runbooks.engine.errors import StoreFull


class Log(Protocol):
    """What a worker logs through (the bot's structured logger)."""

    def error(self, event: str, **fields: Any) -> Any: ...

    def exception(self, event: str, **fields: Any) -> Any: ...


class Background(Protocol):
    """Anything that runs on its own thread until told to stop."""

    stop: threading.Event
    wake: threading.Event
    thread: threading.Thread

    def start(self) -> None: ...


class Worker:
    """``step`` every ``pause()`` seconds (or at once after ``kick``) on a daemon thread named
    ``name``, until stopped; ``finish`` once at the end. Not started when ``enabled`` is false
    (a bot with no drills declared runs no drill ticker)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], None],
        pause: Callable[[], float],
        *,
        log: Log,
        finish: Callable[[], None] | None = None,
        enabled: bool = True,
        what: str | None = None,
    ) -> None:
        self.name = name
        self.what = what or name
        self.step = step
        self.pause = pause
        self.finish = finish
        self.enabled = enabled
        self.log = log
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        if self.enabled:
            self.thread.start()

    def kick(self) -> None:
        """Run a round now instead of at the end of the pause."""
        self.wake.set()

    def _loop(self) -> None:
        full = False
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                    full = False
                except StoreFull as exc:
                    if not full:  # one line until it recovers, not one per round
                        self.log.error("state store full", where=self.what, error=exc.message)
                    full = True
                except Exception:
                    self.log.exception(f"{self.what} failed")
                self.wake.wait(self.pause())
                self.wake.clear()
        finally:
            if self.finish is not None:
                self.finish()


class Workers:
    """The process's background work, in the order it starts."""

    def __init__(self, workers: Iterable[Background] = ()) -> None:
        self.all: list[Background] = list(workers)

    def add(self, worker: Background) -> None:
        self.all.append(worker)

    def start_all(self) -> None:
        for worker in self.all:
            worker.start()

    def request_stop(self) -> None:
        """Tell every worker to stop and wake it from its pause (a signal handler's part)."""
        for worker in self.all:
            worker.stop.set()
            worker.wake.set()

    def stop_all(self, *, timeout: float) -> None:
        """``request_stop``, then wait for each thread up to ``timeout`` seconds. Safe to call
        twice (a signal, then the server's end)."""
        self.request_stop()
        for worker in self.all:
            if worker.thread.is_alive():
                worker.thread.join(timeout=timeout)
