"""The drill scheduler: schedules.yaml's drills fired on the leader, once, announced.

``DrillScheduler.tick()`` does everything due at the engine clock's now, and is what the bot
calls on a timer (and what tests call on a fake clock, without sleeping):

- **Leader only.** It acts only while it holds the ``scheduler`` leader lease (15 s lease,
  10 s renew, 2 s retry, as client-go), and checks its term again right before a fire: a
  leader that lost the lease without knowing fires nothing.
- **Once.** Each fire is recorded under a unique key ``drill.fire.<drill>.<time>`` before
  anything runs (insert-if-absent): two schedulers on one store, or a restart mid-fire, never
  start a fire twice.
- **Missed fires.** A per-drill cursor holds the last fire handled. Fires between the cursor
  and now (the bot was down) are found at the next tick: those within the drill's catch-up
  window run once (the newest; the older ones are recorded as coalesced), older ones are
  recorded as missed and announced. A drill seen for the first time starts at now.
- **Requests like any other.** A fire is ``engine.request`` with the actor ``scheduler`` and the
  drill's name in the reason: policy, approvals and audit as for a person. A refusal (a change
  freeze, a rule) is recorded and announced, never silent; a freeze is recorded as held.
- **Overlap.** While an earlier run of the drill is not finished, a fire is skipped (the
  default) or, with ``queue-one``, queued and requested when that run ends.
- **Announcements** (events of type ``drill.announce`` in the outbox, which the Slack notifier
  posts to the drill's channel): each ``notify_before`` lead time before a fire, the fire
  itself (the execution and its approvals), missed, skipped, held, paused, and the result with
  the RTO/RPO lines the run reported. Each is announced once (a unique key per announcement).
- **Pause.** ``pause(name, reason)`` and ``resume``: a paused drill's fires are recorded as
  paused and announced. Pausing, resuming and running a drill by hand are for policy's
  ``drills.operators`` (``authorise``; refusals audited as ``drill.refused``); the reason is
  masked (``clean_reason``) before it is stored, audited or announced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbooks.engine.background.leases import LeaderLease
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    RefusalKind,
    Refused,
    RunbookError,
)
from runbooks.engine.lifecycle.journal import clean_reason
from runbooks.engine.lifecycle.requests import Outcome, Request, RequestResult
from runbooks.engine.models import TERMINAL_STATES, Actor, Origin, State, Trigger, TriggerKind
from runbooks.engine.params import validate_params
from runbooks.engine.policy import ConfigPolicy
from runbooks.engine.registry import Registry
from runbooks.engine.verdicts import execution_verdict

if TYPE_CHECKING:
    from runbooks.engine.config.schedules import Drill, SchedulesFile
    from runbooks.engine.engine import Engine
    from runbooks.engine.models import Execution

_log = logging.getLogger(__name__)

SCHEDULER = Actor("scheduler", "drill scheduler", Origin.SCHEDULER)
LEASE_NAME = "scheduler"
FIRE_KEY = "drill.fire.{}.{}"
CURSOR_KEY = "drill.cursor.{}"
PAUSE_KEY = "drill.paused.{}"
HISTORY_KEY = "drill.history.{}"
ANNOUNCED_KEY = "drill.announced.{}"
HISTORY_KEEP = 200
#: How far ahead announcements look (beyond the longest lead time nothing is due).
MAX_FIRES_SCANNED = 10_000


@dataclass
class Tick:
    """What one tick did (for logs and tests)."""

    leader: bool = False
    requested: list[str] = field(default_factory=list)
    recorded: list[tuple[str, str, str]] = field(default_factory=list)  # drill, at, state
    announced: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Announcement:
    """One announcement ``preview`` expects: its phase (``before`` the fire, ``at`` it,
    ``after`` the run ends), when it is posted (None: when the run ends), where, and the text
    the scheduler would post (placeholders in brackets for what only the run can tell)."""

    phase: str
    post_at: float | None
    channel: str | None  # None: the drill has no channel, so nothing is posted
    text: str


#: What only the run can tell, in the preview's texts.
PLACEHOLDER_EXECUTION = "[execution id]"
PLACEHOLDER_OUTCOME = "[succeeded|failed|compensated|...]"
PLACEHOLDER_DURATION = "[duration]"
PLACEHOLDER_MEASURED = "[the RTO/RPO and verdict lines the run reports, if any]"
PLACEHOLDER_VERDICT = "[passed|passed with findings: …|FAILED]"

# The texts below are the scheduler's only text builders: the announcements it posts and
# ``DrillScheduler.preview`` both call them, so a preview cannot drift from a real post.


def when(drill: Drill, at: float) -> str:
    """A fire time in UTC, with the drill's local time where it is not UTC."""
    local = drill.local(at)
    return iso(at) if drill.timezone == "UTC" else f"{iso(at)} ({local})"


def upcoming_text(
    drill: Drill,
    at: float,
    now: float,
    *,
    paused: bool,
    needs: tuple[int, str, str | None] | None,
) -> str:
    """The lead-time notice (24 h, 1 h before) of the fire at ``at``, posted at ``now``."""
    state = " (PAUSED: it will not run unless resumed)" if paused else ""
    text = (
        f"upcoming: {drill.name} runs {drill.runbook} at {when(drill, at)}, in "
        f"{format_duration(at - now)}{state}"
    )
    if needs is not None and not paused:
        required, groups, channel = needs
        where = f" in {channel}" if channel else ""
        text += (
            f"; it needs {required} approval(s) from {groups}: the approval card is "
            f"posted{where} when it fires, planned from live state then"
        )
    return text


def _approvers_channel(
    drill: Drill, needs: tuple[int, str, str | None] | None, *, paused: bool
) -> str | None:
    """The approvals channel that also hears a lead-time notice, when it is another one."""
    if needs is None or paused:
        return None
    channel = needs[2]
    return channel if channel and channel != drill.channel else None


def started_text(
    drill: Drill,
    at: float,
    *,
    late: float,
    execution_id: str,
    awaiting: int | None,
    report: bool,
    by: str | None = None,
) -> str:
    """The fire's announcement (``by`` a person: a run by hand): ``awaiting`` approvals, or a
    read-only ``report``."""
    waiting = ""
    if awaiting is not None:
        waiting = f"; awaiting {awaiting} approval(s) (the card is in the approvals channel)"
    elif report:
        waiting = "; a report, run at once"
    lateness = f", {format_duration(late)} late (catch-up)" if late >= 60 else ""
    hand = f"run by hand by {by}, " if by else ""
    return (
        f"started: {drill.name} ({hand}{when(drill, at)}{lateness}): {drill.runbook} "
        f"{execution_id}{waiting}"
    )


def paused_text(drill: Drill, at: float, *, by: str, reason: str) -> str:
    """A fire of a paused drill, not run."""
    return f"paused: {drill.name} was due at {when(drill, at)}; not run (paused by {by}: {reason})"


def result_text(
    drill: Drill,
    at: float,
    *,
    execution_id: str,
    outcome: str,
    took: str,
    error: str,
    measured: list[str],
    verdict: str = "",
) -> str:
    """The result of the fire's run, its verdict, with the RTO/RPO lines it reported."""
    text = f"result: {drill.name} ({when(drill, at)}): {execution_id} {outcome}"
    text += (f" in {took}" if took else "") + (f": {error}" if error else "")
    text += f"; verdict: {verdict}" if verdict else ""
    if measured:
        text += "\n" + "\n".join(measured)
    return text


class DrillScheduler:
    def __init__(
        self,
        engine: Engine,
        schedules: SchedulesFile,
        *,
        owner: str | None = None,
        lease: LeaderLease | None = None,
    ) -> None:
        self.engine = engine
        self.schedules = schedules
        self.store = engine.store
        self.clock = engine.clock
        self.lease = lease or LeaderLease(
            engine.store, LEASE_NAME, owner or engine.owner, engine.clock
        )

    # --- the tick -------------------------------------------------------------------------

    def tick(self) -> Tick:
        done = Tick()
        term = self.lease.acquire()
        if term is None:
            return done
        done.leader = True
        now = self.clock.now()
        for drill in self.schedules.drills:
            try:
                self._results(drill, done)
                self._queued(drill, term, done)
                self._due(drill, now, term, done)
                self._upcoming(drill, now, done)
            except RunbookError as exc:
                _log.warning("drill %s: %s", drill.name, exc.message)
        return done

    def next_wake(self, cap: float = 1.0) -> float:
        """When something is next due (a fire or an announcement), at most ``cap`` from now
        (the bot re-checks every second: runs that ended, pauses, a lease to renew)."""
        now = self.clock.now()
        soonest = now + cap
        for drill in self.schedules.drills:
            fire = drill.next_fire(now)
            soonest = min(soonest, fire)
            for lead in drill.notify_before:
                if fire - lead > now:
                    soonest = min(soonest, fire - lead)
        return soonest

    # --- fires ----------------------------------------------------------------------------

    def _due(self, drill: Drill, now: float, term: int, done: Tick) -> None:
        cursor_key = CURSOR_KEY.format(drill.name)
        cursor = self.store.kv_get(cursor_key)
        if cursor is None:  # a new drill (or a new store): start from now, no backfill
            self.store.kv_insert(cursor_key, now)
            return
        due: list[float] = []
        for at in drill.fires_after(float(cursor)):
            if at > now or len(due) >= MAX_FIRES_SCANNED:
                break
            due.append(at)
        if not due:
            return
        within = [at for at in due if now - at <= drill.catch_up]
        for at in due:
            if at in within:
                continue
            if self._record(drill, at, term, "missed", done):
                late = format_duration(now - at)
                self._announce(
                    drill,
                    f"missed: {drill.name} was due at {self._when(drill, at)} and did not run "
                    f"(the scheduler was not running; {late} ago is past its catch-up window of "
                    f"{format_duration(drill.catch_up)})",
                    key=f"{drill.name}.{at}.missed",
                    done=done,
                )
        for at in within[:-1]:
            self._record(drill, at, term, "coalesced", done, note=f"run once at {iso(within[-1])}")
        if within:
            self._fire(drill, within[-1], now, term, done)
        self.store.kv_set(cursor_key, due[-1])

    def _fire(self, drill: Drill, at: float, now: float, term: int, done: Tick) -> None:
        if not self.lease.leads(term):
            _log.warning("drill %s: not firing %s: the lease moved on", drill.name, iso(at))
            return
        key = FIRE_KEY.format(drill.name, at)
        if not self.store.kv_insert(key, {"state": "firing", "term": term, "at": at}):
            return  # another scheduler (or an earlier attempt) owns this fire
        paused = self.store.kv_get(PAUSE_KEY.format(drill.name))
        if paused:
            self._set(drill, at, "paused", done, note=str(paused.get("reason", "")))
            self._announce(
                drill,
                paused_text(drill, at, by=str(paused.get("by")), reason=str(paused.get("reason"))),
                key=f"{drill.name}.{at}.paused",
                done=done,
            )
            return
        running = self._running(drill)
        if running is not None:
            if drill.overlap == "queue-one":
                self._set(drill, at, "queued", done, note=f"after {running}")
                self._announce(
                    drill,
                    f"queued: {drill.name} ({self._when(drill, at)}) waits for {running} to end",
                    key=f"{drill.name}.{at}.queued",
                    done=done,
                )
            else:
                self._set(drill, at, "skipped", done, note=f"{running} still running")
                self._announce(
                    drill,
                    f"skipped: {drill.name} ({self._when(drill, at)}): its previous run "
                    f"{running} has not ended (overlap: skip)",
                    key=f"{drill.name}.{at}.skipped",
                    done=done,
                )
            return
        self._request(drill, at, now, done)

    def _request(self, drill: Drill, at: float, now: float, done: Tick) -> None:
        late = now - at
        reason = f"drill {drill.name} (due {iso(at)})"
        try:
            result = self.engine.request(
                Request(
                    runbook=drill.runbook,
                    params=dict(drill.params),
                    actor=SCHEDULER,
                    reason=reason,
                    assume_yes=True,
                    drill=drill.name,
                    trigger=Trigger(TriggerKind.DRILL, drill.name, f"due {iso(at)}", now),
                )
            )
        except RunbookError as exc:
            held = isinstance(exc, Refused) and exc.kind == RefusalKind.FREEZE
            state = "held" if held else "refused"
            self._set(drill, at, state, done, note=exc.message)
            verb = "held (change freeze)" if held else "refused"
            self._announce(
                drill,
                f"{verb}: {drill.name} ({self._when(drill, at)}) was not run: {exc.message}",
                key=f"{drill.name}.{at}.{state}",
                done=done,
            )
            return
        execution = result.execution
        execution_id = execution.id if execution is not None else None
        self._set(drill, at, "requested", done, execution_id=execution_id)
        if execution_id:
            done.requested.append(execution_id)
        self._started(
            drill,
            at,
            execution,
            late=late,
            done=done,
            report=result.outcome == Outcome.REPORTED,
        )

    def _started(
        self,
        drill: Drill,
        at: float,
        execution: Execution | None,
        *,
        done: Tick,
        late: float = 0.0,
        by: str | None = None,
        report: bool = False,
    ) -> None:
        """Announce a run that started (a fire, or a person's ``drills.run``)."""
        awaiting: int | None = None
        if execution is not None and execution.state == State.AWAITING_APPROVAL:
            awaiting = execution.required_approvals
        self._announce(
            drill,
            started_text(
                drill,
                at,
                late=late,
                execution_id=execution.id if execution is not None else "",
                awaiting=awaiting,
                report=report,
                by=by,
            ),
            key=f"{drill.name}.{at}.started",
            done=done,
        )

    def fired_by_hand(
        self, name: str, execution: Execution, *, actor: Actor, report: bool = False
    ) -> None:
        """Record a person's run of a drill (``drills.run``, already authorised) as a fire at
        now, by them, and announce it as a scheduled fire is; its result is announced like
        any fire's, by the leader's tick."""
        drill = self._drill(name)
        at = self.clock.now()
        done = Tick()
        self._set(
            drill,
            at,
            "requested",
            done,
            note=f"run by hand by {actor.name}",
            execution_id=execution.id,
            by=actor.name,
        )
        self.engine.audit.record(
            "drill.run",
            actor=actor,
            outcome="requested",
            target={"drill": drill.name, "runbook": drill.runbook},
            execution_id=execution.id,
        )
        self._started(drill, at, execution, by=actor.name, done=done, report=report)

    def _queued(self, drill: Drill, term: int, done: Tick) -> None:
        """A queued fire is requested once the run it waited for has ended."""
        if self._running(drill) is not None:
            return
        for entry in self._history(drill):
            if entry["state"] == "queued" and self.lease.leads(term):
                self._request(drill, float(entry["at"]), self.clock.now(), done)
                return

    def _running(self, drill: Drill) -> str | None:
        for entry in self._history(drill):
            if entry["state"] == "requested" and entry.get("execution_id"):
                execution = self.store.get_execution(str(entry["execution_id"]))
                if execution is not None and execution.state not in TERMINAL_STATES:
                    return execution.id
        return None

    def _results(self, drill: Drill, done: Tick) -> None:
        """Announce the result of each requested run that has ended, once."""
        for entry in self._history(drill):
            if entry["state"] != "requested" or not entry.get("execution_id"):
                continue
            execution = self.store.get_execution(str(entry["execution_id"]))
            if execution is None or execution.state not in TERMINAL_STATES:
                continue
            at = float(entry["at"])
            outcome = str(execution.state)
            self._set(drill, at, outcome, done, execution_id=execution.id)
            measured = [
                line
                for record in execution.steps
                for line in record.output
                if "RTO achieved" in line or "RPO achieved" in line or line.startswith("verdict")
            ]
            took = (
                format_duration(execution.ended_at - execution.started_at)
                if execution.ended_at and execution.started_at
                else ""
            )
            text = result_text(
                drill,
                at,
                execution_id=execution.id,
                outcome=outcome,
                took=took,
                error=execution.error or "",
                measured=measured,
                verdict=execution_verdict(execution) or "",
            )
            self._announce(drill, text, key=f"{drill.name}.{at}.result", done=done)

    # --- announcements --------------------------------------------------------------------

    def _upcoming(self, drill: Drill, now: float, done: Tick) -> None:
        if not drill.notify_before:
            return
        horizon = now + max(drill.notify_before)
        for at in drill.fires_after(now):
            if at > horizon:
                return
            due = [lead for lead in drill.notify_before if at - lead <= now]
            if not due:
                continue
            lead = min(due)  # the nearest lead time reached; earlier ones are superseded
            paused = bool(self.store.kv_get(PAUSE_KEY.format(drill.name)))
            needs = self._approvals_needed(drill)
            text = upcoming_text(drill, at, now, paused=paused, needs=needs)
            key = f"{drill.name}.{at}.before.{int(lead)}"
            approvers = _approvers_channel(drill, needs, paused=paused)
            if approvers is not None:
                self._announce(drill, text, key=key + ".approvers", done=done, channel=approvers)
            self._announce(drill, text, key=key, done=done)

    def _approvals_needed(self, drill: Drill) -> tuple[int, str, str | None] | None:
        """(approvals, approver groups, approvals channel) when policy gates the drill's
        request, else None. Approvers hear of it with the lead-time notices: the card itself
        comes at fire time, because a request made a day early would hold the environment's
        lock all day and its plan, made from a day-old state, would be re-planned (voiding
        the approvals) when it starts."""
        try:
            spec = self.engine.registry.get(drill.runbook)
        except RunbookError:
            return None  # the drill's checks (require_valid_drills) say why
        field_ = spec.params.model_fields.get("environment")
        default = field_.default if field_ is not None else None
        environment = str(drill.params.get("environment") or default or "")
        gate = self.engine.policy.gate(spec.name, environment, read_only=spec.read_only)
        if not gate.required:
            return None
        groups = ", ".join(gate.approver_groups) or "any approver"
        channel = self.engine.config.policy.slack.approvals_channel(environment)
        return gate.required, groups, channel

    def _announce(
        self, drill: Drill, text: str, *, key: str, done: Tick, channel: str | None = None
    ) -> None:
        if not self.store.kv_insert(ANNOUNCED_KEY.format(key), self.clock.now()):
            return
        self.store.append_event(
            None,
            "drill.announce",
            {"drill": drill.name, "channel": channel or drill.channel, "text": text},
            self.clock.now(),
        )
        done.announced.append(text)

    # --- records --------------------------------------------------------------------------

    def _record(
        self, drill: Drill, at: float, term: int, state: str, done: Tick, *, note: str = ""
    ) -> bool:
        """Record a fire that will not run; False if it was recorded before."""
        key = FIRE_KEY.format(drill.name, at)
        if not self.store.kv_insert(key, {"state": state, "term": term, "at": at}):
            return False
        self._set(drill, at, state, done, note=note)
        return True

    def _set(
        self,
        drill: Drill,
        at: float,
        state: str,
        done: Tick,
        *,
        note: str = "",
        execution_id: str | None = None,
        by: str | None = None,
    ) -> None:
        history = [e for e in self._history(drill) if float(e["at"]) != at]
        previous = next((e for e in self._history(drill) if float(e["at"]) == at), {})
        entry: dict[str, Any] = {
            "at": at,
            "state": state,
            "note": note or previous.get("note", ""),
            "execution_id": execution_id or previous.get("execution_id"),
            # Who started it: "schedule" for a fire, else the person (drills.run).
            "by": by or previous.get("by") or "schedule",
            "updated_at": self.clock.now(),
        }
        history.insert(0, entry)
        history.sort(key=lambda e: -float(e["at"]))
        self.store.kv_set(HISTORY_KEY.format(drill.name), history[:HISTORY_KEEP])
        done.recorded.append((drill.name, iso(at), state))

    def _history(self, drill: Drill) -> list[dict[str, Any]]:
        return list(self.store.kv_get(HISTORY_KEY.format(drill.name)) or [])

    def history(self, name: str) -> list[dict[str, Any]]:
        """Fires of a drill, newest first: time, state, execution, note."""
        drill = self._drill(name)
        return self._history(drill)

    @staticmethod
    def _when(drill: Drill, at: float) -> str:
        return when(drill, at)

    # --- commands -------------------------------------------------------------------------

    def _drill(self, name: str) -> Drill:
        drill = self.schedules.drill(name)
        if drill is None:
            known = ", ".join(d.name for d in self.schedules.drills) or "none"
            raise NotFound(f"no drill {name!r} in schedules.yaml; known: {known}")
        return drill

    def _environment(self, drill: Drill) -> tuple[str, str]:
        """The drill's runbook and the environment it acts on (its default if not given)."""
        spec = self.engine.registry.get(drill.runbook)
        field_ = spec.params.model_fields.get("environment")
        default = field_.default if field_ is not None else None
        return spec.name, str(drill.params.get("environment") or default or "")

    def authorise(self, verb: str, name: str, *, actor: Actor) -> Drill:
        """The drill, if ``actor`` may ``verb`` (pause, resume, run) it; else a refusal,
        audited as ``drill.refused``. Policy: ``drills.operators`` in policy.yaml, default the
        approvers of the drill's runbook in its environment. Every front end calls this."""
        drill = self._drill(name)
        runbook, environment = self._environment(drill)
        why = self.engine.policy.drill_refusal(
            verb, actor, drill=name, runbook=runbook, environment=environment
        )
        if why is None:
            return drill
        self.engine.audit.record(
            "drill.refused",
            actor=actor,
            outcome="not_allowed",
            target={"drill": name, "runbook": runbook, "environment": environment},
            detail={"verb": verb, "why": why},
        )
        raise Refused(why)

    def pause(self, name: str, *, actor: Actor, reason: str) -> str:
        """Pause a drill (its fires are recorded as paused); returns the reason as stored,
        credential-shaped text masked."""
        drill = self.authorise("pause", name, actor=actor)
        said = clean_reason(reason)
        if not said:
            raise InvalidInput("pausing a drill needs a reason (--reason TEXT)")
        self.store.kv_set(
            PAUSE_KEY.format(name),
            {"by": actor.name, "reason": said, "at": self.clock.now()},
        )
        self.engine.audit.record(
            "drill.paused", actor=actor, outcome="ok", target={"drill": name}, reason=said
        )
        self._announce(
            drill,
            f"paused by {actor.name}: {name} ({said}); its fires will not run",
            key=f"{name}.pause.{self.clock.now()}",
            done=Tick(),
        )
        return said

    def resume(self, name: str, *, actor: Actor) -> None:
        drill = self.authorise("resume", name, actor=actor)
        self.store.kv_set(PAUSE_KEY.format(name), None)
        self.engine.audit.record("drill.resumed", actor=actor, outcome="ok", target={"drill": name})
        self._announce(
            drill,
            f"resumed by {actor.name}: {name}; next at "
            f"{self._when(drill, drill.next_fire(self.clock.now()))}",
            key=f"{name}.resume.{self.clock.now()}",
            done=Tick(),
        )

    def paused(self, name: str) -> dict[str, Any] | None:
        value = self.store.kv_get(PAUSE_KEY.format(name))
        return dict(value) if value else None

    def preview(self, name: str) -> tuple[Drill, float, list[Announcement]]:
        """The drill, its next fire and the announcements it would make, oldest first:
        built by the same functions as the real posts, from the store's state now (paused or
        not, the approvals policy asks for). Changes nothing."""
        drill = self._drill(name)
        now = self.clock.now()
        fire = drill.next_fire(now)
        pause = self.paused(name)
        needs = self._approvals_needed(drill)
        found: list[Announcement] = []

        def before(post: float) -> None:
            text = upcoming_text(drill, fire, post, paused=bool(pause), needs=needs)
            approvers = _approvers_channel(drill, needs, paused=bool(pause))
            if approvers is not None:
                found.append(Announcement("before", post, approvers, text))
            found.append(Announcement("before", post, drill.channel, text))

        leads = sorted(set(drill.notify_before), reverse=True)
        reached = [lead for lead in leads if fire - lead <= now]
        if reached:  # the scheduler posts the nearest lead time reached at its next tick
            announced = self.store.kv_get(
                ANNOUNCED_KEY.format(f"{drill.name}.{fire}.before.{int(min(reached))}")
            )
            if announced is None:
                before(now)
        for lead in leads:
            if fire - lead > now:
                before(fire - lead)
        if pause:
            text = paused_text(drill, fire, by=str(pause.get("by")), reason=str(pause["reason"]))
            found.append(Announcement("at", fire, drill.channel, text))
            return drill, fire, found
        spec = self.engine.registry.get(drill.runbook)
        started = started_text(
            drill,
            fire,
            late=0.0,
            execution_id=PLACEHOLDER_EXECUTION,
            awaiting=needs[0] if needs is not None else None,
            report=needs is None and spec.read_only,
        )
        found.append(Announcement("at", fire, drill.channel, started))
        result = result_text(
            drill,
            fire,
            execution_id=PLACEHOLDER_EXECUTION,
            outcome=PLACEHOLDER_OUTCOME,
            took=PLACEHOLDER_DURATION,
            error="",
            measured=[PLACEHOLDER_MEASURED],
            verdict=PLACEHOLDER_VERDICT,
        )
        found.append(Announcement("after", None, drill.channel, result))
        return drill, fire, found

    def run_now(self, name: str, *, actor: Actor) -> RequestResult:
        """``drills.run NAME``: the drill's request now, through the same path, as ``actor``."""
        drill = self.authorise("run", name, actor=actor)
        return self.engine.request(
            Request(
                runbook=drill.runbook,
                params=dict(drill.params),
                actor=actor,
                reason=f"drill {drill.name} (run by hand)",
                assume_yes=True,
                drill=drill.name,
                trigger=Trigger(
                    TriggerKind.DRILL, drill.name, f"run by {actor.id}", self.engine.clock.now()
                ),
            )
        )


def drill_problems(schedules: SchedulesFile, registry: Registry, config: Config) -> list[str]:
    """Every drill checked against the runbooks it names: the runbook exists and its
    parameters validate (as a request would validate them), and a drill that says
    ``pre_approved`` is one policy lets run without approvals. Problems, in words."""
    problems = []
    known = sorted(spec.name for spec in registry)
    for index, drill in enumerate(schedules.drills):
        where = f"schedules.yaml: drills[{index}] ({drill.name})"
        try:
            spec = registry.get(drill.runbook)
        except Exception:
            problems.append(
                f"{where}: runbook {drill.runbook!r} is not in the catalog; known: "
                f"{', '.join(known)}"
            )
            continue
        try:
            params = validate_params(spec.params, dict(drill.params), config)
        except Exception as exc:
            problems.append(f"{where}: params: {getattr(exc, 'message', exc)}")
            continue
        if drill.pre_approved:
            environment = str(getattr(params, "environment", ""))
            gate = ConfigPolicy(config).gate(spec.name, environment, read_only=spec.read_only)
            if gate.required:
                problems.append(
                    f"{where}: pre_approved: true, but policy.yaml ({gate.rule}) requires "
                    f"{gate.required} approval(s) for {spec.name} in {environment}: "
                    "schedules.yaml cannot approve itself; remove pre_approved, or give the "
                    "group `drills` a rule with approvals: 0 in policy.yaml"
                )
    return problems


def require_valid_drills(config: Config, registry: Registry) -> None:
    """Raise ConfigError naming every drill that names an unknown runbook or bad parameters
    (the bot calls it at start, the ``drills.*`` and ``config.check`` tasks too)."""
    problems = drill_problems(config.schedules, registry, config)
    if problems:
        raise ConfigError("\n".join(problems))


def drill_runs(engine: Engine) -> DrillScheduler:
    """The request path's drill runs (``Engine(drill_runs=...)``): a person's ``drills.run``
    is authorised, recorded and announced by the drills' scheduler."""
    return DrillScheduler(engine, engine.config.schedules)
