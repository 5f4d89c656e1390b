"""Plans and steps.

A plan is an ordered list of concrete steps, each describing exactly what it will change. Steps
are frozen dataclasses registered by ``kind``, so a stored plan can be rebuilt in another
process (resume) without planning again. The plan hash (SHA-256 over canonical JSON) is what
approvals bind to.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runbooks.engine.clock import format_duration
from runbooks.engine.errors import InvalidInput, StepFailed

if TYPE_CHECKING:
    from runbooks.engine.clock import Clock
    from runbooks.engine.config.environments import EnvironmentConfig
    from runbooks.engine.config.loader import Config
    from runbooks.engine.params import RunbookParams

_STEP_KINDS: dict[str, type[Step]] = {}
#: A step's description names what the run will create by its id before the run has one
#: (``runbook-bot/revert-<this run's id>``): the plan, and so its hash, keeps the words; a
#: run's card and notes show its id in their place (``with_run_id``).
RUN_ID = "<this run's id>"


def with_run_id(text: str, execution_id: str) -> str:
    """A step's description as the run ``execution_id`` shows it (``RUN_ID`` replaced)."""
    return text.replace(RUN_ID, execution_id)


def canonical_json(value: Any) -> bytes:
    """Serialise deterministically: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Adapters:
    """The adapters a runbook may use, handed over by the front end (kube, aws, ...).

    The engine only passes this through; ``runbooks.interfaces.Infrastructure`` is the real one.
    """

    def close(self) -> None:
        """Release connections (database clients); the engine calls it when it closes."""


@dataclass(frozen=True)
class PastRun:
    """A finished execution, as planners may see it (e.g. "last drill" in ``dr.status``)."""

    id: str
    runbook: str
    environment: str
    params: dict[str, Any]
    state: str
    ended_at: float | None
    summary: str
    #: The plan's steps as stored (``kind``, ``args``): what the run set out to change.
    steps: tuple[dict[str, Any], ...] = ()
    #: Who requested it (an Actor's ``name``) and through which origin.
    requester: str = ""
    #: When its first step started (what a step's ``keep_for`` counts from).
    started_at: float | None = None
    #: The drill it was a run of (``schedules.yaml``), if any.
    drill: str | None = None
    #: The environment's configuration hash when it was planned (``Plan.config_hash``).
    config_hash: str | None = None
    #: What its steps measured (RTO, RPO), the last of each name.
    measures: tuple[Measure, ...] = ()


def _no_history() -> list[PastRun]:
    return []


@dataclass(frozen=True)
class Measure:
    """An objective a run measured (``RTO``, ``RPO``) against its target, in seconds.

    Steps record them with ``ctx.measure``; they are kept with the step (for drill reports and
    their trend charts) and shown as one line of output: ``RTO achieved 3m10s (target 1h00m):
    met``.
    """

    name: str
    seconds: float
    target: float | None = None
    detail: str = ""
    #: Bytes the measured work moved (a restore test's RTO: the backup's size), so readers
    #: can derive a throughput; None when not measured.
    size: int | None = None

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.seconds <= self.target

    def line(self) -> str:
        inside = [self.detail] if self.detail else []
        if self.target is not None:
            inside.append(f"target {format_duration(self.target)}")
        text = f"{self.name} achieved {format_duration(self.seconds)}"
        if inside:
            text += f" ({'; '.join(inside)})"
        if self.met is not None:
            text += ": met" if self.met else ": MISSED"
        return text

    def to_doc(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Measure:
        target = doc.get("target")
        return Measure(
            name=str(doc["name"]),
            seconds=float(doc["seconds"]),
            target=None if target is None else float(target),
            detail=str(doc.get("detail", "")),
            size=None if doc.get("size") is None else int(doc["size"]),
        )


@dataclass
class PlanContext:
    """What a runbook sees while planning: configuration, parameters and read-only adapters."""

    config: Config
    env: EnvironmentConfig
    params: RunbookParams
    clock: Clock
    adapters: Adapters
    state_dir: Path
    #: The request uses break-glass: planners may relax guards (cooldowns), never bounds.
    break_glass: bool = False
    #: Finished executions, newest first (read-only; the engine's store).
    history: Callable[[], list[PastRun]] = _no_history
    #: When this installation started (its first audit record; None before there is one).
    installed_at: Callable[[], float | None] = lambda: None
    #: The bot's last readiness evaluation of this environment, in one line (``dr.status``).
    readiness: Callable[[], str] = lambda: "readiness: not evaluated"
    #: A dry run: say what would stop the real request now (a closed window) in the plan's
    #: notes instead of refusing, so a future window can be previewed.
    preview: bool = False
    #: In a preview, what the real request would be refused for now (a window not open yet),
    #: recorded by the planner with ``refuse_now``; the dry run's verdict says it.
    refused_now: list[str] = field(default_factory=list)
    #: Requested by an automatic requester (an alert, a schedule), not a person: planners
    #: refuse (``NeedsPerson``) what needs a person's judgement.
    automatic: bool = False

    @property
    def environment(self) -> str:
        return self.params.environment

    def refuse_now(self, why: str) -> None:
        """In a preview: the real request would be refused now for ``why`` (the plan is still
        shown). Outside a preview a planner raises ``Refused`` instead."""
        self.refused_now.append(why)


@dataclass(frozen=True)
class Answer:
    """A person's answer to a step's question (``RunContext.ask``)."""

    choice: str
    #: Who answered (their name) and why, as they said it.
    by: str
    reason: str | None = None

    def said(self) -> str:
        return f"{self.by} answered {self.choice}" + (f" ({self.reason})" if self.reason else "")


def _nobody_to_ask(_question: str, _choices: tuple[str, ...], _within: float) -> Answer | None:
    return None


@dataclass
class RunContext(PlanContext):
    """What a step sees while running: the plan context plus the execution and cancellation."""

    execution_id: str = ""
    #: The PagerDuty incident the execution is linked to, if any.
    incident: str | None = None
    #: When the execution's first step started (its RTO clock).
    started_at: float = 0.0
    #: When the running step's current attempt started (what a step measures its own
    #: duration from, across the run and its verifications).
    step_started_at: float = 0.0
    check_cancelled: Callable[[], None] = lambda: None
    #: Raises when this process lost the execution's lease (compensation's only stop).
    check_lease: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    #: Set by the engine while a step runs: shows a note or a progress line at once.
    on_progress: Callable[[str, bool], None] = lambda _text, _is_note: None
    #: Set by the engine while a step runs: ask people a question (``runs.answer``, the
    #: Slack card's buttons) and wait for the first answer, at most ``within`` seconds.
    #: Returns None when nobody answered in time. Cancelling still stops the wait.
    ask: Callable[[str, tuple[str, ...], float], Answer | None] = _nobody_to_ask
    #: Set by the engine while a step runs: run this step once more at ``due`` (the engine's
    #: clock), after the execution ended: the bot's housekeeper (leader) does it when due, or
    #: ``runs.cleanup`` where no bot runs. A step that defers returns at once.
    defer: Callable[[float], None] = lambda _due: None

    def note(self, text: str) -> None:
        """Record a line of step output (shown in the CLI, Slack and the audit log)."""
        self.notes.append(text)
        self.on_progress(text, True)

    def measure(self, measure: Measure) -> None:
        """Record an objective achieved (RTO, RPO), kept with the step and noted as a line."""
        self.measures.append(measure)
        self.note(measure.line())

    def progress(self, text: str) -> None:
        """Say what a long wait is doing now (shown live; not kept as output)."""
        self.on_progress(text, False)


@dataclass(frozen=True, kw_only=True)
class Step:
    """One action with a postcondition.

    Subclasses set ``kind`` via the class statement (``class Patch(Step, kind="kube.patch")``),
    implement ``describe`` and ``run``, usually ``verify``, and ``undo`` where the effect can be
    reversed. ``run`` must be idempotent: if the effect is already present it does nothing.
    """

    kind: ClassVar[str] = ""
    #: Seconds the postcondition may take to hold before the step fails.
    timeout: float = 300.0
    #: Seconds between polls of ``verify`` when the step cannot watch.
    poll_interval: ClassVar[float] = 1.0
    #: Why this step cannot be undone (shown in the plan), when it has no ``undo``.
    irreversible_reason: ClassVar[str | None] = None
    #: Set on a check whose failure must not undo the steps before it, saying why (a failed
    #: check after a rollback must not roll forward to the release it rolled back). The run
    #: then ends ``failed`` with those steps done; a cancel still compensates.
    keeps_done_on_failure: ClassVar[str | None] = None
    #: Audited under this action besides ``step.succeeded`` when it succeeds (and
    #: ``<action>.undone`` when compensation undoes it): an effect outside the cluster that
    #: an auditor looks for by name (``gitops.suspended``, ``gitops.reverted``).
    audit_action: ClassVar[str | None] = None

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if kind:
            if kind in _STEP_KINDS and _STEP_KINDS[kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"step kind {kind!r} is already registered")
            cls.kind = kind
            _STEP_KINDS[kind] = cls

    def describe(self) -> str:
        """Say exactly what this step changes, in one line."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> str | None:
        """Make the change (idempotently); return a line of output or None."""
        raise NotImplementedError

    def verify(self, ctx: RunContext) -> bool:
        """Tell whether the postcondition holds now."""
        return True

    def wait(self, ctx: RunContext, deadline: float) -> None:
        """Block until ``verify`` holds, the deadline passes (StepFailed) or a cancel arrives.

        Steps whose API can watch override this; the default polls.
        """
        started, checks = ctx.clock.now(), 0
        while True:
            ctx.check_cancelled()
            if self.verify(ctx):
                return
            checks += 1
            ctx.progress(
                f"waiting for: {self.describe()} ({format_duration(ctx.clock.now() - started)}, "
                f"{checks} check(s) so far)"
            )
            if ctx.clock.now() >= deadline:
                raise StepFailed(
                    f"postcondition did not hold within {self.timeout:g}s: {self.describe()}"
                )
            ctx.clock.sleep(min(self.poll_interval, max(0.0, deadline - ctx.clock.now())))

    def undo(self, ctx: RunContext) -> str | None:
        """Reverse the change (idempotently); return a line of output or None."""
        raise NotImplementedError

    @classmethod
    def reversible(cls) -> bool:
        return cls.undo is not Step.undo

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "args": dataclasses.asdict(self),
            "description": self.describe(),
            "reversible": self.reversible(),
            "irreversible_reason": None if self.reversible() else self.irreversible_reason,
        }

    @staticmethod
    def from_spec(spec: dict[str, Any]) -> Step:
        try:
            cls = _STEP_KINDS[spec["kind"]]
        except KeyError:
            raise InvalidInput(
                f"stored plan names step kind {spec.get('kind')!r}, which this version does not "
                "know; resume it with the version that created it"
            ) from None
        return cls(**spec["args"])


@dataclass(frozen=True)
class PlanDraft:
    """What a runbook's planner returns: steps plus optional summary and notes."""

    steps: list[Step]
    summary: str = ""
    notes: list[str] = field(default_factory=list)


#: Plan fields outside its hash: recorded or shown with it, never bound by approvals.
UNHASHED = frozenset({"config_hash", "warnings", "refused_now"})


@dataclass(frozen=True)
class Plan:
    """A concrete plan, bound to a runbook, an environment and parameters."""

    runbook: str
    environment: str
    tier: str
    region: str | None
    lock_key: str | None
    params: dict[str, Any]
    steps: list[dict[str, Any]]
    summary: str
    notes: list[str]
    read_only: bool = False
    #: Every lock key the execution holds (``lock_key`` is their display form). A key
    #: ``ENV:*`` covers every resource of the environment (DR moves all of them).
    locks: list[str] = field(default_factory=list)
    #: SHA-256 of the environment's configuration when planned: a drill's evidence is stale
    #: once it differs (readiness). Kept with the plan, outside its hash.
    config_hash: str | None = None
    #: What the plan's reader should know but does not change what runs (open readiness
    #: findings): shown with the plan, outside its hash, so approvals do not depend on them.
    warnings: list[str] = field(default_factory=list)
    #: A dry run's plan only: what the real request would be refused for now (outside its
    #: hash; a real request's plan never has any: its planner refuses instead).
    refused_now: list[str] = field(default_factory=list)

    def to_doc(self) -> dict[str, Any]:
        # Shallow on purpose: its parts are JSON values already, and ``asdict``'s deep copy
        # on every save made bookkeeping grow with the plan (the engine saves per step).
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Plan:
        if "locks" not in doc:  # stored before lock sets
            doc = {**doc, "locks": [doc["lock_key"]] if doc.get("lock_key") else []}
        return Plan(**doc)

    @functools.cached_property
    def hash(self) -> str:
        """SHA-256 of the canonical JSON (computed once: a plan does not change), without the
        parts that are not what runs (``UNHASHED``)."""
        doc = {k: v for k, v in self.to_doc().items() if k not in UNHASHED}
        return hashlib.sha256(canonical_json(doc)).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def build_steps(self) -> list[Step]:
        return [Step.from_spec(spec) for spec in self.steps]


def diff_plans(old: Plan, new: Plan) -> list[str]:
    """Describe how two plans differ, step by step, for the people who approved the old one."""
    lines: list[str] = []
    old_steps = [s["description"] for s in old.steps]
    new_steps = [s["description"] for s in new.steps]
    for index in range(max(len(old_steps), len(new_steps))):
        before = old_steps[index] if index < len(old_steps) else None
        after = new_steps[index] if index < len(new_steps) else None
        if before != after:
            if before is not None:
                lines.append(f"- step {index + 1}: {before}")
            if after is not None:
                lines.append(f"+ step {index + 1}: {after}")
    if old.notes != new.notes:
        lines.extend(f"- note: {n}" for n in old.notes if n not in new.notes)
        lines.extend(f"+ note: {n}" for n in new.notes if n not in old.notes)
    if not lines and old.to_doc() != new.to_doc():
        lines.append("step arguments changed (same descriptions)")
    return lines
