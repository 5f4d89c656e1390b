"""A read-only report's verdict: the one step that makes a report that read nothing fail.

A report is notes computed while planning; without a step its execution always "succeeds".
``Verdict`` carries what the planner concluded, and running it fails the execution (exit 1,
a red card) when the report could not stand (for ``dr.status``: every component unreadable,
or any with ``--strict``).
"""

from __future__ import annotations

from dataclasses import dataclass

from runbooks.engine.plan import RunContext, Step
from runbooks.interfaces import InfrastructureError


@dataclass(frozen=True, kw_only=True)
class Verdict(Step, kind="report.verdict"):
    ok: bool
    message: str
    timeout: float = 1.0
    irreversible_reason = "it changes nothing"

    def describe(self) -> str:
        return f"report verdict: {self.message}"

    def run(self, ctx: RunContext) -> str | None:
        if not self.ok:
            raise InfrastructureError(f"the report is not usable: {self.message}")
        return self.message

    def verify(self, ctx: RunContext) -> bool:
        return True
