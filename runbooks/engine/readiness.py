"""Readiness: each runbook's preconditions checked against live state, read-only.

Runbooks rot between incidents: the standby's node group was deleted, a deployment was left
paused, last night's backup never arrived. A runbook module declares its checks beside it
with ``@readiness_check``; the engine runs them (``Engine.readiness``) for one environment or
all, and every check gives one ``Finding`` per thing it looked at. A check that cannot run
(an API refused, a cluster is unreachable) is a finding too, never a pass.

Checks only read: they get the same ``PlanContext`` planners get (read-only adapters,
configuration, the engine's clock and finished runs) and must not call a write method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from runbooks.engine.errors import InvalidInput, RunbookError
from runbooks.engine.plan import PlanContext

#: The "runbook" of checks every runbook of an environment depends on (credentials and reach,
#: ``runbooks/reach.py``): the engine runs them beside the runbooks' own.
ENVIRONMENT_WIDE = "environment"
#: The "runbook" of the drills' evidence freshness (``runbooks/freshness.py``).
DRILLS = "drills"
#: Checks no runbook owns, by their pseudo-runbook name.
PSEUDO_RUNBOOKS = frozenset({ENVIRONMENT_WIDE, DRILLS})
#: The environment of a finding about what every environment shares (Slack, PagerDuty).
EVERY_ENVIRONMENT = "*"

#: What a check yields for each thing it looked at: (subject, ok, words).
Observation = tuple[str, bool, str]
CheckFn = Callable[[PlanContext], Iterable[Observation]]


@dataclass(frozen=True)
class ReadinessCheck:
    """One named precondition of a runbook (``runbook``), checked by ``fn``."""

    runbook: str
    name: str
    fn: CheckFn
    doc: str
    #: ``installation``: about what every environment shares; run once per evaluation and
    #: reported under environment ``*``.
    scope: str = "environment"

    def run(self, ctx: PlanContext) -> Iterator[Finding]:
        environment = EVERY_ENVIRONMENT if self.scope == "installation" else ctx.environment
        try:
            for subject, ok, detail in self.fn(ctx):
                yield Finding(environment, self.runbook, self.name, subject, ok, detail)
        except RunbookError as exc:
            yield self._unchecked(environment, exc.message)
        except Exception as exc:  # a check that cannot run is a finding, never a pass
            yield self._unchecked(environment, f"{type(exc).__name__}: {exc}")

    def _unchecked(self, environment: str, why: str) -> Finding:
        first = (why.splitlines() or [""])[0][:300]
        return Finding(
            environment, self.runbook, self.name, "-", False, f"could not be checked: {first}"
        )


def observe(subject: str, look: Callable[[], tuple[bool, str]]) -> Observation:
    """One subject's observation; an error reading it is a finding about that subject only."""
    try:
        ok, detail = look()
    except RunbookError as exc:
        return subject, False, f"could not be checked: {(exc.message.splitlines() or [''])[0]}"
    return subject, ok, detail


def readiness_check(
    runbook: str, name: str, *, scope: str = "environment"
) -> Callable[[CheckFn], ReadinessCheck]:
    """Declare a readiness check of ``runbook`` (or ``ENVIRONMENT_WIDE``: of every runbook of
    an environment); the docstring says what it protects. ``scope="installation"``: what
    every environment shares, checked once per evaluation.

    Example::

        @readiness_check("rollback", "an earlier release to return to")
        def earlier_release(ctx: PlanContext) -> Iterator[Observation]:
            yield ("api us-east-1", True, "revision 2 (app-api:1.4.1)")
    """

    if scope not in ("environment", "installation"):
        raise ValueError(f"scope {scope!r}: environment or installation")

    def wrap(fn: CheckFn) -> ReadinessCheck:
        return ReadinessCheck(runbook, name, fn, (fn.__doc__ or "").strip(), scope)

    return wrap


@dataclass(frozen=True)
class Finding:
    """The result of one check on one subject (a service in a region, a bucket, ...)."""

    environment: str
    runbook: str
    check: str
    subject: str
    ok: bool
    detail: str

    @property
    def key(self) -> str:
        """Stable identity across evaluations (what a tracker dedupes on)."""
        return f"{self.environment}:{self.runbook}:{self.check}:{self.subject}"

    def to_doc(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "key": self.key}


@dataclass(frozen=True)
class ReadinessReport:
    """Every finding of one evaluation, with when it was made."""

    at: float
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    @property
    def ready(self) -> bool:
        return not self.problems

    def to_doc(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "ready": self.ready,
            "checked": len(self.findings),
            "problems": len(self.problems),
            "findings": [f.to_doc() for f in self.findings],
        }


def select_checks(
    checks: Iterable[ReadinessCheck], *, runbook: str | None, known: Iterable[str]
) -> list[ReadinessCheck]:
    """The checks of one runbook (or all; ``environment``: credentials and reach;
    ``drills``: evidence freshness), refusing a name that is not a runbook."""
    checks = list(checks)
    if runbook is None:
        return checks
    names = {*known, *PSEUDO_RUNBOOKS}
    if runbook not in names:
        raise InvalidInput(f"unknown runbook {runbook!r}; known: {', '.join(sorted(names))}")
    return [c for c in checks if c.runbook == runbook]
