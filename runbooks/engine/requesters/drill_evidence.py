"""Drill evidence: what each drill's runs achieved, as an auditor can take it.

``collect`` reads the scheduler's fire history and the executions it links (runs made by hand
with ``drills.run`` are fires by a person there; other executions naming the drill in their
``drill`` field are found too), and gives per drill its runs, newest first:
date, how it was started, verdict, RTO and RPO achieved against the targets (the ``Measure``
records the steps kept), approvals and execution id. Fires that did not run (missed, skipped,
held, paused, refused) are part of the evidence too: a year with a missed drill must show it.

This is the evidence as data; ``reports/drills.py`` renders it (Markdown, HTML, charts), so the
engine imports no renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbooks.engine.clock import iso
from runbooks.engine.plan import Measure
from runbooks.engine.verdicts import (
    FAILED,
    PASSED,
    execution_measures,
    execution_verdict,
    has_findings,
)

if TYPE_CHECKING:
    from runbooks.engine.models import Execution
    from runbooks.engine.requesters.drills import DrillScheduler

#: How many executions are scanned for runs made by hand.
HAND_RUNS_SCANNED = 2000
#: Fire states that never started an execution.
NOT_RUN = {"missed", "coalesced", "skipped", "held", "paused", "refused", "queued"}


@dataclass(frozen=True)
class DrillRun:
    at: float
    started_by: str  # "schedule" | the person's name (drills.run)
    state: str
    verdict: str
    execution_id: str | None = None
    rto: Measure | None = None
    rpo: Measure | None = None
    approvals: tuple[str, ...] = ()
    required_approvals: int = 0
    duration: float | None = None
    note: str = ""

    @property
    def passed(self) -> bool:
        """Passed on its checks (a missed objective is a finding of a passed run)."""
        return self.verdict == PASSED or has_findings(self.verdict)

    def approvals_text(self) -> str:
        if self.execution_id is None:
            return ""
        if not self.required_approvals:
            return "none required (policy)"
        names = ", ".join(self.approvals) or "none yet"
        return f"{len(self.approvals)} of {self.required_approvals}: {names}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "started_by": self.started_by,
            "state": self.state,
            "verdict": self.verdict,
            "execution_id": self.execution_id,
            "rto": self.rto.to_doc() if self.rto else None,
            "rpo": self.rpo.to_doc() if self.rpo else None,
            "approvals": list(self.approvals),
            "required_approvals": self.required_approvals,
            "duration_s": self.duration,
            "note": self.note,
        }


@dataclass(frozen=True)
class DrillEvidence:
    name: str
    runbook: str
    params: dict[str, Any]
    cron: str
    timezone: str
    runs: list[DrillRun] = field(default_factory=list)

    @property
    def executed(self) -> list[DrillRun]:
        return [r for r in self.runs if r.execution_id is not None]

    def summary(self) -> str:
        done = self.executed
        passed = sum(1 for r in done if r.passed)
        not_run = [r for r in self.runs if r.execution_id is None]
        missed = sum(1 for r in done if has_findings(r.verdict))
        text = f"{passed} of {len(done)} passed, {missed} with a missed objective"
        failed = sum(1 for r in done if r.verdict.startswith(FAILED))
        if failed:
            text += f"; {failed} failed"
        if not_run:
            states = sorted({r.state for r in not_run})
            text += f"; {len(not_run)} fire(s) not run ({', '.join(states)})"
        return text

    def to_doc(self) -> dict[str, Any]:
        return {
            "drill": self.name,
            "runbook": self.runbook,
            "params": self.params,
            "cron": self.cron,
            "timezone": self.timezone,
            "summary": self.summary(),
            "runs": [r.to_doc() for r in self.runs],
        }


@dataclass(frozen=True)
class ReportScope:
    """What a report covers: the installation, the period, and the audit chain's head then."""

    installation: str
    since: float
    until: float
    audit_head: str
    audit_records: int
    audit_intact: bool = True
    audit_problem: str | None = None

    def lines(self) -> list[str]:
        """The scope in words, one fact per line (plain text, no markup)."""
        period = f"{iso(self.since)} to {iso(self.until)} (UTC)"
        if self.audit_intact:
            chain = (
                f"head {self.audit_head} ({self.audit_records} records, verified intact when "
                f"this report was made); `invoke audit.verify --head {self.audit_head}` checks "
                "that no record up to it has changed since"
            )
        else:
            chain = (
                f"NOT intact: {self.audit_problem}; last good head {self.audit_head}. "
                "This evidence cannot be trusted until the log is examined"
            )
        return [
            f"Installation: {self.installation}",
            f"Period: {period}",
            f"Audit chain: {chain}",
        ]


def collect(
    scheduler: DrillScheduler, *, name: str | None = None, since: float | None = None
) -> list[DrillEvidence]:
    """Per drill (one, or all in schedules.yaml order), its runs since ``since``, newest first."""
    drills = [scheduler._drill(name)] if name else list(scheduler.schedules.drills)
    store = scheduler.store
    recent = store.list_executions(limit=HAND_RUNS_SCANNED)
    evidence = []
    for drill in drills:
        runs: list[DrillRun] = []
        linked: set[str] = set()
        for entry in scheduler.history(drill.name):
            at = float(entry["at"])
            if since is not None and at < since:
                continue
            execution_id = entry.get("execution_id")
            execution = store.get_execution(str(execution_id)) if execution_id else None
            started_by = str(entry.get("by") or "schedule")
            if execution is not None:
                linked.add(execution.id)
                runs.append(_from_execution(execution, at=at, started_by=started_by))
            else:
                state = str(entry["state"])
                verdict = state if state in NOT_RUN else f"not run ({state})"
                runs.append(
                    DrillRun(
                        at=at,
                        started_by=started_by,
                        state=state,
                        verdict=verdict,
                        note=str(entry.get("note") or ""),
                    )
                )
        for execution in recent:
            if execution.id in linked or execution.drill != drill.name:
                continue
            at = execution.started_at or execution.created_at
            if since is not None and at < since:
                continue
            runs.append(_from_execution(execution, at=at, started_by=execution.requester.name))
        runs.sort(key=lambda r: -r.at)
        evidence.append(
            DrillEvidence(
                name=drill.name,
                runbook=drill.runbook,
                params=dict(drill.params),
                cron=drill.cron,
                timezone=drill.timezone,
                runs=runs,
            )
        )
    return evidence


def _from_execution(execution: Execution, *, at: float, started_by: str) -> DrillRun:
    measures = {m.name: m for m in execution_measures(execution)}
    rto, rpo = measures.get("RTO"), measures.get("RPO")
    state = execution.state
    verdict = execution_verdict(execution) or f"in progress ({state})"
    duration = (
        execution.ended_at - execution.started_at
        if execution.ended_at and execution.started_at
        else None
    )
    return DrillRun(
        at=at,
        started_by=started_by,
        state=str(state),
        verdict=verdict,
        execution_id=execution.id,
        rto=rto,
        rpo=rpo,
        approvals=tuple(a.actor.name for a in execution.valid_approvals()),
        required_approvals=execution.required_approvals,
        duration=duration,
        note=execution.error or "",
    )
