"""Running executions: start (re-planning first), resume, steps, compensation, leases.

The ``Runner`` authorises nothing: the decision verbs that reach it (``Decisions.resume``,
``Decisions.cancel``) have authorised their actor first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock, format_duration
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import (
    Cancelled,
    ConcurrentUpdate,
    LeaseHeld,
    LeaseLost,
    Refused,
    RunbookError,
    StoreFull,
)
from runbooks.engine.lifecycle.journal import (
    ANSWER_KEY,
    CANCEL_POLL_S,
    DEFERRED_SWAP_TRIES,
    QUESTION_KEY,
    Journal,
    clean_reason,
    plan_target,
    step_records,
)
from runbooks.engine.lifecycle.planner import LazyAdapters, Planner
from runbooks.engine.models import (
    Actor,
    Execution,
    State,
    StepRecord,
    StepStatus,
    StopReason,
)
from runbooks.engine.params import validate_params
from runbooks.engine.plan import (
    Answer,
    RunContext,
    Step,
)
from runbooks.engine.registry import Registry
from runbooks.engine.store.base import Store

_log = logging.getLogger(__name__)
#: How often a running step's output so far is saved (engine clock seconds).
PROGRESS_SAVE_S = 5.0
#: Steps to run again later (``RunContext.defer``): [{execution_id, step, due}].
DEFERRED_KEY = "deferred.steps"


def _without(entries: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if (e["execution_id"], e["step"]) != (entry["execution_id"], entry["step"])
    ]


def error_text(exc: Exception) -> str:
    """A failure in words: our errors say their message, anything else names its type."""
    return exc.message if isinstance(exc, RunbookError) else f"{type(exc).__name__}: {exc}"


class _Heartbeat:
    """Renew an execution's lease from a background thread; note if it is lost."""

    def __init__(self, store: Store, execution_id: str, owner: str, ttl: float, clock: Clock):
        self._store, self._id, self._owner, self._ttl, self._clock = (
            store,
            execution_id,
            owner,
            ttl,
            clock,
        )
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(
            target=self._loop, name=f"lease-{execution_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(max(0.05, self._ttl / 3)):
            try:
                if not self._store.renew_lease(
                    self._id, self._owner, self._clock.now() + self._ttl
                ):
                    self.lost = True
                    return
            except StoreFull as exc:  # one line, no traceback: the run says it too
                _log.warning("lease renewal failed for %s: %s", self._id, exc.message)
            except Exception:  # a transient store error: try again next beat
                _log.warning("lease renewal failed for %s; retrying", self._id, exc_info=True)


class Runner:
    """Start, drive, resume and compensate executions under their lease, one thread each."""

    def __init__(
        self,
        *,
        journal: Journal,
        planner: Planner,
        registry: Registry,
        config: Config,
        store: Store,
        audit: AuditLog,
        clock: Clock,
        adapters: LazyAdapters,
        state_dir: Path,
        lease_ttl: float,
        owner: str,
    ) -> None:
        self._journal = journal
        self._planner = planner
        self._registry = registry
        self._config = config
        self._store = store
        self._audit = audit
        self._clock = clock
        self._adapters = adapters
        self._state_dir = state_dir
        self.lease_ttl = lease_ttl
        #: This process's name on leases (the bot's replicas each have their own).
        self.owner = owner
        #: Executions a thread of this process is driving now. A lease claim by our own
        #: owner succeeds ("already ours"), so this is what keeps a second thread out.
        self._driving: set[str] = set()
        self._driving_lock = threading.Lock()

    def driven_here(self, execution_id: str) -> bool:
        """Whether a thread of this process is driving the execution now."""
        with self._driving_lock:
            return execution_id in self._driving

    def take_over_cancelled(self, execution: Execution, *, actor: Actor) -> Execution:
        """After a cancel was requested: if nobody runs the execution (its process died),
        compensate it here and now; else its runner sees the request between steps."""
        now = self._clock.now()
        if self.driven_here(execution.id):
            return execution  # our own thread runs it and will see the request
        if self._store.claim_lease(execution.id, self.owner, now + self.lease_ttl, now):
            return self._drive(execution, actor=actor)
        return execution

    @contextmanager
    def hold(self, execution_id: str) -> Iterator[None]:
        """Hold the execution's lease while a requester waits for approval in this process.

        The bot starts approved executions that nobody holds; a waiting terminal holds its
        own, so exactly one process starts it. Released on exit (Ctrl-C included).
        """
        now = self._clock.now()
        if not self._store.claim_lease(execution_id, self.owner, now + self.lease_ttl, now):
            raise LeaseHeld(f"{execution_id} is held by another process")
        heartbeat = _Heartbeat(self._store, execution_id, self.owner, self.lease_ttl, self._clock)
        try:
            with heartbeat:
                yield
        finally:
            if not heartbeat.lost:
                self._store.release_lease(execution_id, self.owner)

    def startable(self) -> list[Execution]:
        """Approved executions that nobody is about to start (no live lease)."""
        now = self._clock.now()
        found = []
        for execution in self._store.list_executions(limit=1000, states=[State.APPROVED]):
            lease = self._store.get_lease(execution.id)
            if lease is None or lease.until <= now:
                found.append(execution)
        return found

    def start(self, execution_id: str, *, actor: Actor) -> Execution:
        """Run an approved execution in this process, re-planning first.

        If the live plan differs from the approved one, approvals are void and the execution
        returns to ``awaiting_approval`` with the new plan; nothing runs.
        """
        execution = self._journal.get(execution_id)
        if self._journal.expire_if_due(execution):
            raise Refused(
                f"{execution.id} expired: approvals must be given and the run started "
                "within the approval window"
            )
        if execution.state != State.APPROVED:
            raise Refused(
                f"{execution.id} is {execution.state}; only an approved execution can start"
            )
        fresh = self._planner.replan(execution)
        if fresh.hash != execution.plan.hash and execution.plan.read_only:
            # Nothing was approved: a read-only report is simply the newer one.
            execution.plan = fresh
            execution.confirmed_hash = fresh.hash
            execution.steps = step_records(fresh, execution.id)
        elif fresh.hash != execution.plan.hash:
            self._journal.void_for_plan_change(execution, fresh)
            return execution
        if not self._store.claim_lease(
            execution.id, self.owner, self._clock.now() + self.lease_ttl, self._clock.now()
        ):
            raise LeaseHeld(f"{execution.id} is already being started by another process")
        try:
            execution.started_at = self._clock.now()
            self._journal.transition(execution, State.RUNNING, actor=actor)
        except ConcurrentUpdate:
            self._store.release_lease(execution.id, self.owner)
            raise LeaseHeld(
                f"{execution.id} was started or resumed by another process just now; this "
                "one stepped back",
                hint=f"follow it with `runs.show {execution.id}`",
            ) from None
        return self._drive_or_yield(execution, actor=actor)

    def resume(self, execution: Execution, *, actor: Actor) -> Execution:
        """Continue a running execution whose process died, at the first step not verified.

        An approved execution that nobody started (its requester stopped waiting) is started.
        The caller has authorised ``actor`` (``Decisions.resume``).
        """
        if execution.state == State.APPROVED:
            return self.start(execution.id, actor=actor)
        if self._stranded(execution):
            # Saved as failed with steps left to undo by an engine that died before it could
            # record ``compensating`` (older versions wrote the two states separately).
            pass
        elif execution.state not in {State.RUNNING, State.COMPENSATING}:
            raise Refused(
                f"{execution.id} is {execution.state}; only a running execution whose "
                "process died can be resumed"
            )
        now = self._clock.now()
        if self.driven_here(execution.id) or not self._store.claim_lease(
            execution.id, self.owner, now + self.lease_ttl, now
        ):
            lease = self._store.get_lease(execution.id)
            left = format_duration(max(0.0, lease.until - now)) if lease else "?"
            raise LeaseHeld(
                f"{execution.id} is being run by {lease.owner if lease else 'another process'} "
                f"(lease valid for {left} more)",
                hint="if that process is gone, wait for the lease to expire and resume again",
            )
        self._audit.record(
            "execution.resumed",
            actor=actor,
            outcome=str(execution.state),
            execution_id=execution.id,
            target=plan_target(execution.plan),
            detail={"first_pending_step": self._first_pending(execution)},
        )
        self._journal.publish(execution, "execution.resumed", by=actor.name)
        if self._stranded(execution):
            self._journal.transition(execution, State.COMPENSATING, actor=actor)
        return self._drive_or_yield(execution, actor=actor)

    def _stranded(self, execution: Execution) -> bool:
        """Failed, still holding its lock, with reversible steps not undone."""
        return (
            execution.state == State.FAILED
            and execution.ended_at is None
            and bool(self._to_undo(execution))
        )

    def _drive_or_yield(self, execution: Execution, *, actor: Actor) -> Execution:
        """Drive the execution; if another process wrote it meanwhile (it started or resumed
        it too), say so plainly (a refusal, exit 2) rather than "changed underneath"."""
        try:
            return self._drive(execution, actor=actor)
        except ConcurrentUpdate:
            raise LeaseHeld(
                f"{execution.id} was started or resumed by another process just now; this "
                "one stepped back",
                hint=f"follow it with `runs.show {execution.id}`",
            ) from None

    def resumable(self) -> list[Execution]:
        """Running (or stranded) executions whose lease has expired (their process died)."""
        now = self._clock.now()
        found = []
        for execution in self._store.list_executions(
            limit=1000, states=[State.RUNNING, State.COMPENSATING, State.FAILED]
        ):
            if execution.state == State.FAILED and not self._stranded(execution):
                continue
            lease = self._store.get_lease(execution.id)
            if lease is None or lease.until <= now:
                found.append(execution)
        return found

    def _first_pending(self, execution: Execution) -> int | None:
        for record in execution.steps:
            if record.status != StepStatus.SUCCEEDED:
                return record.index + 1
        return None

    def _drive(self, execution: Execution, *, actor: Actor) -> Execution:
        """Run (or continue) steps while holding the lease; then compensate if needed."""
        with self._driving_lock:
            if execution.id in self._driving:
                raise LeaseHeld(f"{execution.id} is already running in this process")
            self._driving.add(execution.id)
        try:
            return self._drive_held(execution, actor=actor)
        finally:
            with self._driving_lock:
                self._driving.discard(execution.id)

    def _drive_held(self, execution: Execution, *, actor: Actor) -> Execution:
        steps = execution.plan.build_steps()
        spec = self._registry.get(execution.runbook)
        params = validate_params(spec.params, execution.plan.params, self._config)
        last_poll = [float("-inf")]
        heartbeat = _Heartbeat(self._store, execution.id, self.owner, self.lease_ttl, self._clock)

        def check_lease() -> None:
            if heartbeat.lost:
                raise LeaseLost(f"lost the lease on {execution.id}; another process took over")

        def check_cancelled() -> None:
            check_lease()
            now = self._clock.now()
            if now - last_poll[0] >= CANCEL_POLL_S:
                last_poll[0] = now
                request = self._store.get_cancel(execution.id)
                if request is not None:
                    execution.cancel_reason = request.get("reason") or None
                    raise Cancelled(f"cancelled by {request['actor']['name']}")

        ctx = RunContext(
            config=self._config,
            env=self._config.environment(execution.environment),
            params=params,
            clock=self._clock,
            adapters=self._adapters.get(),
            state_dir=self._state_dir,
            execution_id=execution.id,
            incident=execution.incident,
            started_at=execution.started_at or self._clock.now(),
            check_cancelled=check_cancelled,
            check_lease=check_lease,
            break_glass=execution.break_glass,
        )
        try:
            with heartbeat:
                if execution.state == State.RUNNING:
                    self._run_steps(execution, steps, ctx, actor=actor)
                if execution.state == State.COMPENSATING:
                    self._compensate(execution, steps, ctx, actor=actor)
        except LeaseLost:
            return execution  # another process owns it now; touch nothing
        except StoreFull as full:
            # What was saved is intact; the lease runs out and runs.resume continues.
            raise full.during(execution.id) from None
        finally:
            if not heartbeat.lost:
                with contextlib.suppress(StoreFull):
                    self._store.release_lease(execution.id, self.owner)
        return execution

    def _run_steps(
        self, execution: Execution, steps: list[Step], ctx: RunContext, *, actor: Actor
    ) -> None:
        for record, step in zip(execution.steps, steps, strict=True):
            if record.status == StepStatus.SUCCEEDED:
                continue
            try:
                ctx.check_cancelled()
            except Cancelled as exc:
                self._after_stop(execution, State.CANCELLED, str(exc), actor=actor)
                return
            record.status = StepStatus.RUNNING
            record.started_at = self._clock.now()
            record.attempts += 1
            record.error = None
            self._journal.step_transition(execution, record, "step.started", actor=actor)
            ctx.notes = []
            ctx.measures = []
            ctx.step_started_at = record.started_at
            ctx.on_progress = self._progress_reporter(execution, record, ctx)
            ctx.ask = self._asker(execution, record, ctx, actor=actor)
            ctx.defer = self._deferrer(execution, record)
            try:
                output = step.run(ctx)
                step.wait(ctx, self._clock.now() + step.timeout)
            except Cancelled as exc:
                record.status = StepStatus.CANCELLED
                record.progress = None
                record.ended_at = self._clock.now()
                record.error = str(exc)
                self._journal.step_transition(execution, record, "step.cancelled", actor=actor)
                self._after_stop(execution, State.CANCELLED, str(exc), actor=actor)
                return
            except (LeaseLost, StoreFull):
                raise
            except Exception as exc:
                message = error_text(exc)
                record.status = StepStatus.FAILED
                record.progress = None
                record.ended_at = self._clock.now()
                record.output = [*ctx.notes]
                record.measures = [m.to_doc() for m in ctx.measures]
                record.error = message
                self._journal.step_transition(execution, record, "step.failed", actor=actor)
                error = f"step {record.index + 1} failed: {message}"
                if step.keeps_done_on_failure and record.index:
                    error += (
                        f"; steps 1-{record.index} stay done, not undone: "
                        f"{step.keeps_done_on_failure}"
                    )
                    execution.error = error
                    execution.stop_reason = StopReason.FAILED
                    execution.ended_at = self._clock.now()
                    self._journal.transition(execution, State.FAILED, actor=actor)
                    return
                self._after_stop(execution, State.FAILED, error, actor=actor)
                return
            record.status = StepStatus.SUCCEEDED
            record.progress = None
            record.ended_at = self._clock.now()
            record.output = [line for line in [output, *ctx.notes] if line]
            record.measures = [m.to_doc() for m in ctx.measures]
            self._journal.step_transition(execution, record, "step.succeeded", actor=actor)
            self._audit_effect(execution, record, step.audit_action, actor=actor)
        execution.ended_at = self._clock.now()
        self._journal.transition(execution, State.SUCCEEDED, actor=actor)

    def _deferrer(self, execution: Execution, record: StepRecord) -> Callable[[float], None]:
        def defer(due: float) -> None:
            entry = {"execution_id": execution.id, "step": record.index, "due": due}
            self._swap_deferred(lambda entries: [*_without(entries, entry), entry])

        return defer

    def _swap_deferred(
        self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> None:
        self._store.kv_insert(DEFERRED_KEY, [])
        for _ in range(
            DEFERRED_SWAP_TRIES
        ):  # compare-and-set: replicas and terminals share the list
            current = self._store.kv_get(DEFERRED_KEY)
            if self._store.kv_swap(DEFERRED_KEY, current, change(list(current or []))):
                return
        raise ConcurrentUpdate(f"{DEFERRED_KEY}: too many concurrent changes")

    def _forget_deferred(self, entry: dict[str, Any]) -> None:
        self._swap_deferred(lambda entries: _without(entries, entry))

    def deferred(self) -> list[dict[str, Any]]:
        """Steps to run again later (a kept scratch database's drop), soonest first."""
        return sorted(self._store.kv_get(DEFERRED_KEY) or [], key=lambda e: float(e["due"]))

    def run_due_deferred(self, *, actor: Actor) -> list[str]:
        """Run each deferred step that is due at the engine clock's now, audited
        (``step.deferred_ran``); one that fails stays for the next call. Returns the lines
        the steps said (``dropped scratch database …``)."""
        done: list[str] = []
        for entry in self.deferred():
            if float(entry["due"]) > self._clock.now():
                break
            execution = self._store.get_execution(str(entry["execution_id"]))
            if execution is None:
                self._forget_deferred(entry)
                continue
            index = int(entry["step"])
            step = execution.plan.build_steps()[index]
            spec = self._registry.get(execution.runbook)
            ctx = RunContext(
                config=self._config,
                env=self._config.environment(execution.environment),
                params=validate_params(spec.params, execution.plan.params, self._config),
                clock=self._clock,
                adapters=self._adapters.get(),
                state_dir=self._state_dir,
                execution_id=execution.id,
                incident=execution.incident,
                started_at=execution.started_at or self._clock.now(),
                break_glass=execution.break_glass,
            )
            target = {"runbook": execution.runbook, "environment": execution.environment}
            try:
                output = step.run(ctx) or ""
                step.wait(ctx, self._clock.now() + step.timeout)
            except Exception as exc:
                self._audit.record(
                    "step.deferred_ran",
                    actor=actor,
                    outcome="failed",
                    target=target,
                    execution_id=execution.id,
                    detail={"step": index + 1, "error": error_text(exc)},
                )
                _log.warning("deferred step %s of %s failed: %s", index + 1, execution.id, exc)
                continue
            self._audit.record(
                "step.deferred_ran",
                actor=actor,
                outcome="ok",
                target=target,
                execution_id=execution.id,
                detail={"step": index + 1, "output": output},
            )
            self._forget_deferred(entry)
            with contextlib.suppress(ConcurrentUpdate):
                record = execution.steps[index]
                record.output = [*record.output, *ctx.notes, output]
                self._journal.save(execution)
            done.append(output)
        return done

    def _progress_reporter(
        self, execution: Execution, record: StepRecord, ctx: RunContext
    ) -> Callable[[str, bool], None]:
        """Show a long step's notes and waits at once: an event for the CLI's live line and
        the Slack card, and (at most every ``PROGRESS_SAVE_S`` of the engine's clock) the
        output so far saved, for ``runs.show`` in another terminal. The step's start was just
        saved: a step shorter than that saves its output once, when it ends."""
        last_save = [self._clock.now()]

        def report(text: str, is_note: bool) -> None:
            record.progress = text
            self._journal.publish(
                execution, "step.progress", step=record.index + 1, text=text, note=is_note
            )
            now = self._clock.now()
            if now - last_save[0] >= PROGRESS_SAVE_S:
                last_save[0] = now
                record.output = [*ctx.notes]
                # Progress is best effort; the step's own transitions decide.
                with contextlib.suppress(ConcurrentUpdate):
                    self._journal.save(execution)

        return report

    def _asker(
        self, execution: Execution, record: StepRecord, ctx: RunContext, *, actor: Actor
    ) -> Callable[[str, tuple[str, ...], float], Answer | None]:
        """Let a step ask people a question and wait for the first answer (``runs.answer``,
        Slack's buttons), on the engine's clock: the question is saved on the step (runs.show,
        the card), audited and published; a cancel still stops the wait."""

        def ask(question: str, choices: tuple[str, ...], within: float) -> Answer | None:
            asked = self._clock.now()
            step = record.index + 1
            key = ANSWER_KEY.format(execution.id, step, record.attempts)
            doc = {
                "step": step,
                "attempt": record.attempts,
                "text": question,
                "choices": list(choices),
                "asked_at": asked,
                "until": asked + within,
                "answer_key": key,
            }
            record.question = doc
            waiting = (
                f"waiting up to {format_duration(within)} for an answer "
                f"({' or '.join(choices)}: `runs.answer {execution.id} CHOICE`)"
            )
            detail = {"step": step, "question": question, "choices": list(choices)}
            self._audit.record(
                "execution.question",
                actor=actor,
                outcome="asked",
                execution_id=execution.id,
                target=plan_target(execution.plan),
                incident=execution.incident,
                detail={**detail, "within_s": within},
            )
            ctx.on_progress(f"{waiting}: {question}", False)
            record.output = [*ctx.notes]
            with contextlib.suppress(ConcurrentUpdate):  # shown by runs.show and the card
                self._journal.save(execution)
            # Answerable only once the step shows it: whoever sees the open question (and
            # answers it) finds it in runs.show too.
            self._store.kv_set(QUESTION_KEY.format(execution.id), doc)
            self._journal.publish(execution, "execution.question", **detail, until=asked + within)
            answered: object = None
            try:
                while True:
                    answered = self._store.kv_get(key)
                    now = self._clock.now()
                    if answered or now >= asked + within:
                        break
                    ctx.check_cancelled()
                    self._clock.sleep(min(CANCEL_POLL_S, asked + within - now))
            finally:
                self._store.kv_set(QUESTION_KEY.format(execution.id), None)
                record.question = None
                record.progress = None
            if not isinstance(answered, dict):
                self._audit.record(
                    "execution.question_expired",
                    actor=actor,
                    outcome="unanswered",
                    execution_id=execution.id,
                    target=plan_target(execution.plan),
                    incident=execution.incident,
                    detail={**detail, "within_s": within},
                )
                self._journal.publish(execution, "execution.question_expired", **detail)
                return None
            return Answer(
                choice=str(answered["choice"]),
                by=str(answered["actor"]["name"]),
                reason=clean_reason(answered.get("reason")),
            )

        return ask

    def _to_undo(self, execution: Execution) -> list[StepRecord]:
        ran = {
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.CANCELLED,
            StepStatus.UNDOING,
            StepStatus.UNDO_FAILED,
        }
        return [r for r in reversed(execution.steps) if r.status in ran and r.reversible]

    def _after_stop(self, execution: Execution, state: State, error: str, *, actor: Actor) -> None:
        execution.error = error
        execution.stop_reason = (
            StopReason.CANCELLED if state == State.CANCELLED else StopReason.FAILED
        )
        compensate = bool(self._to_undo(execution))
        if compensate:
            # Straight from running to compensating in one write: a process that dies here
            # leaves an execution that resume (and the supervisor) will compensate. (Saving
            # ``failed`` first left a window in which a crash stranded done steps for good.)
            previous = execution.state
            execution.state = State.COMPENSATING
            self._journal.save(execution)
            if state == State.FAILED:
                # The failure keeps its own audit record (written after the one save).
                self._audit.record(
                    "execution.failed",
                    actor=actor,
                    outcome=str(State.FAILED),
                    execution_id=execution.id,
                    target=plan_target(execution.plan),
                    reason=execution.reason,
                    incident=execution.incident,
                    detail={"from": str(previous), "error": error, "then": "compensating"},
                )
            self._journal.after_transition(
                execution,
                previous,
                actor=actor,
                detail={"because": "failed" if state == State.FAILED else "cancelled"},
            )
        elif state == State.FAILED:
            execution.ended_at = self._clock.now()
            self._journal.transition(execution, State.FAILED, actor=actor)
        elif state == State.CANCELLED:
            execution.ended_at = self._clock.now()
            self._journal.transition(execution, State.CANCELLED, actor=actor)

    def _audit_effect(
        self, execution: Execution, record: StepRecord, action: str | None, *, actor: Actor
    ) -> None:
        """A step's effect under its own audit action (``Step.audit_action``)."""
        if not action:
            return
        self._audit.record(
            action,
            actor=actor,
            outcome="ok",
            execution_id=execution.id,
            target=plan_target(execution.plan),
            incident=execution.incident,
            detail={
                "step": record.index + 1,
                "description": record.description,
                "output": record.output,
            },
        )

    def _compensate(
        self, execution: Execution, steps: list[Step], ctx: RunContext, *, actor: Actor
    ) -> None:
        failed = []
        # Undo is what a cancel asks for: its own waits must not see the stored cancel
        # request and abort themselves. Only a lost lease stops compensation.
        ctx.check_cancelled = ctx.check_lease
        for record in self._to_undo(execution):
            step = steps[record.index]
            record.status = StepStatus.UNDOING
            self._journal.step_transition(execution, record, "step.undoing", actor=actor)
            ctx.notes = []
            try:
                output = step.undo(ctx)
            except StoreFull:
                raise
            except Exception as exc:
                message = error_text(exc)
                record.status = StepStatus.UNDO_FAILED
                record.error = f"undo failed: {message}"
                failed.append(record.index + 1)
                self._journal.step_transition(execution, record, "step.undo_failed", actor=actor)
                continue
            record.status = StepStatus.UNDONE
            record.output = [*record.output, *[line for line in [output, *ctx.notes] if line]]
            self._journal.step_transition(execution, record, "step.undone", actor=actor)
            if step.audit_action:
                self._audit_effect(execution, record, f"{step.audit_action}.undone", actor=actor)
        execution.ended_at = self._clock.now()
        kept = [
            f"step {r.index + 1} ({r.description}) stays done: "
            f"{execution.plan.steps[r.index].get('irreversible_reason') or 'it cannot be undone'}"
            for r in execution.steps
            if r.status == StepStatus.SUCCEEDED and not r.reversible
        ]
        if kept:
            execution.error = f"{execution.error}; NOT UNDONE: {' | '.join(kept)}"
        if failed:
            execution.error = (
                f"{execution.error}; compensation failed at step(s) "
                f"{', '.join(map(str, failed))}: manual action needed"
            )
            self._journal.transition(execution, State.COMPENSATION_FAILED, actor=actor)
        elif execution.stop_reason == StopReason.CANCELLED:
            self._journal.transition(execution, State.CANCELLED, actor=actor)
        else:
            self._journal.transition(execution, State.COMPENSATED, actor=actor)
