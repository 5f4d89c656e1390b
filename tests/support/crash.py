"""A store whose process 'dies' right after its N-th execution write.

``Killed`` is a BaseException, like the SIGKILL it stands for: the engine's own error
handling (``except Exception``) does not see it, so whatever the engine meant to write next
is never written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runbooks.engine.models import Execution
from runbooks.engine.store.sqlite import SqliteStore


class Killed(BaseException):
    """The process died here."""


class CrashingStore(SqliteStore):
    def __init__(
        self,
        path: Path,
        *,
        kill_after: int | None = None,
        kill_when: Callable[[Execution], bool] | None = None,
    ) -> None:
        super().__init__(path)
        self.kill_after = kill_after
        #: Die right after the first write of an execution this says yes to (then forget it).
        self.kill_when = kill_when
        self.saves = 0
        self.states: list[str] = []

    def save_execution(self, execution: Execution) -> None:
        super().save_execution(execution)
        self.saves += 1
        self.states.append(f"{execution.state}:{[str(s.status) for s in execution.steps]}")
        if self.kill_after is not None and self.saves == self.kill_after:
            raise Killed(f"killed after write {self.saves} ({execution.state})")
        if self.kill_when is not None and self.kill_when(execution):
            self.kill_when = None
            raise Killed(f"killed after write {self.saves} ({execution.state})")


def run_inline(_name: str, work: Callable[[], None]) -> None:
    """A supervisor ``spawn`` that runs the work at once, in this thread."""
    work()
