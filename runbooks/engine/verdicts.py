"""One rule for a run's verdict, used by every front end and report.

A run passes or fails on its checks: an execution that succeeded passed, one that failed,
was compensated or cancelled did not. An objective it measured and missed (RTO or RPO beyond
its target) is a *finding* of a passed run, never a failure: ``passed with findings: RPO
missed``. The CLI's verdict line, the Slack card and result, PagerDuty's notes, drill
announcements and ``drills.report`` all say it with ``verdict`` / ``execution_verdict``, so
they cannot disagree (docs/engine.md, "Verdicts").
"""

from __future__ import annotations

from collections.abc import Iterable

from runbooks.engine.models import TERMINAL_STATES, Execution, State
from runbooks.engine.plan import Measure

PASSED = "passed"
FAILED = "FAILED"
WITH_FINDINGS = "passed with findings"


def findings(measures: Iterable[Measure]) -> list[str]:
    """The objectives missed, once each, in the order measured: ``["RPO missed"]``."""
    missed: list[str] = []
    for measure in measures:
        text = f"{measure.name} missed"
        if measure.met is False and text not in missed:
            missed.append(text)
    return missed


def verdict(passed: bool, measures: Iterable[Measure]) -> str:
    """``passed``, ``passed with findings: RPO missed`` or ``FAILED``."""
    if not passed:
        return FAILED
    missed = findings(measures)
    return f"{WITH_FINDINGS}: {', '.join(missed)}" if missed else PASSED


def execution_measures(execution: Execution) -> list[Measure]:
    """What the execution's steps measured, the last measure of each name winning."""
    latest: dict[str, Measure] = {}
    for record in execution.steps:
        for doc in record.measures:
            measure = Measure.from_doc(doc)
            latest.pop(measure.name, None)
            latest[measure.name] = measure
    return list(latest.values())


def execution_verdict(execution: Execution) -> str | None:
    """The verdict of an ended execution (None while it has not ended): ``FAILED
    (cancelled)`` names the way a run ended when it is not a plain failure."""
    state = execution.state
    if state == State.SUCCEEDED:
        return verdict(True, execution_measures(execution))
    if state == State.FAILED:
        return FAILED
    if state in TERMINAL_STATES:
        return f"{FAILED} ({state})"
    return None


def has_findings(text: str) -> bool:
    return text.startswith(WITH_FINDINGS)


def findings_verdict(execution: Execution) -> str | None:
    """``passed with findings: …`` for a succeeded run that missed an objective, else None
    (what a state line adds, so "succeeded" never stands alone beside a missed objective)."""
    said = execution_verdict(execution)
    return said if said is not None and has_findings(said) else None
