"""The engine's background work: expire approvals, resume orphans, start approved runs, and
run deferred steps that came due (a kept scratch database's drop).

One sweep does all three; the bot calls it every couple of seconds on the leader (the
``supervisor`` leader lease), so an execution whose process died is resumed as soon as its
lease expires, whether the bot was started before or after the crash. Runs happen on
``spawn`` (a thread each by default) so one long run never delays the next sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runbooks.engine.errors import RunbookError
from runbooks.engine.models import SYSTEM

if TYPE_CHECKING:
    from runbooks.engine.engine import Engine

Spawn = Callable[[str, Callable[[], None]], None]
_log = logging.getLogger(__name__)


def spawn_thread(name: str, work: Callable[[], None]) -> None:
    threading.Thread(target=work, name=name, daemon=True).start()


@dataclass
class Sweep:
    """What one sweep did."""

    expired: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)
    #: What deferred steps that came due said (a kept scratch database dropped).
    deferred: list[str] = field(default_factory=list)


class Supervisor:
    def __init__(self, engine: Engine, *, spawn: Spawn = spawn_thread) -> None:
        self.engine = engine
        self.spawn = spawn
        self._lock = threading.Lock()
        self._busy: set[str] = set()

    def sweep(self) -> Sweep:
        """Expire what ran out of time, then resume orphans and start approved executions."""
        engine = self.engine
        done = Sweep(expired=engine.expire_due())
        done.deferred = engine.run_due_deferred(actor=SYSTEM)
        for execution in engine.resumable():
            if self._take(execution.id):
                done.resumed.append(execution.id)
                self.spawn(f"resume-{execution.id}", self._work(execution.id, resume=True))
        for execution in engine.startable():
            if self._take(execution.id):
                done.started.append(execution.id)
                self.spawn(f"run-{execution.id}", self._work(execution.id, resume=False))
        return done

    def busy(self) -> set[str]:
        with self._lock:
            return set(self._busy)

    def _take(self, execution_id: str) -> bool:
        # The lease keeps other processes out; this keeps a second thread of ours out (a
        # lease claim by the same owner succeeds).
        with self._lock:
            if execution_id in self._busy:
                return False
            self._busy.add(execution_id)
            return True

    def _work(self, execution_id: str, *, resume: bool) -> Callable[[], None]:
        def run() -> None:
            what = "resume" if resume else "start"
            try:
                _log.info("supervisor: %s %s", what, execution_id)
                if resume:
                    result = self.engine.resume(execution_id, actor=SYSTEM)
                else:
                    result = self.engine.start(execution_id, actor=SYSTEM)
                _log.info("supervisor: %s ended %s", execution_id, result.state)
            except RunbookError as exc:
                _log.info("supervisor: did not %s %s: %s", what, execution_id, exc.message)
            except Exception:
                _log.exception("supervisor: execution %s crashed", execution_id)
            finally:
                with self._lock:
                    self._busy.discard(execution_id)

        return run
