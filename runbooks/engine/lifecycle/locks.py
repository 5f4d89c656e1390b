"""Lock sets: a request holds every key of the resources it touches, or none."""

from __future__ import annotations

import time

from runbooks.engine.audit import AuditLog
from runbooks.engine.clock import Clock
from runbooks.engine.errors import (
    LockHeld,
    Refused,
)
from runbooks.engine.lifecycle.journal import (
    LOCK_TRIES,
    LOCK_UNBORN_CHECKS,
    LOCK_UNBORN_WAIT_S,
    Journal,
    plan_target,
)
from runbooks.engine.models import (
    Actor,
    Execution,
    State,
)
from runbooks.engine.store.base import Store


class Locks:
    """Take a request's lock set at submit, expiring stale holders through the journal."""

    def __init__(self, *, store: Store, journal: Journal, audit: AuditLog, clock: Clock) -> None:
        self._store = store
        self._journal = journal
        self._audit = audit
        self._clock = clock

    def acquire(self, keys: list[str], execution: Execution, *, actor: Actor) -> None:
        """Take every key of the lock set, or none: overlapping sets exclude each other.

        ``ENV:*`` overlaps every key of ENV. Each side takes its own keys first and then
        looks for the other (the wildcard holder for ``ENV:*``, or any ``ENV:`` key), so of
        two overlapping requests racing, at least one sees the other and steps back.
        """
        taken: list[str] = []
        try:
            for key in sorted(keys):
                self._acquire_one(key, execution, actor=actor)
                taken.append(key)
            for key in keys:
                environment, _, resource = key.partition(":")
                if resource == "*":
                    others = self._store.lock_holders(f"{environment}:")
                else:
                    wildcard = f"{environment}:*"
                    holder = self._store.lock_holder(wildcard)
                    others = {wildcard: holder} if holder else {}
                for other_key, holder in sorted(others.items()):
                    if holder == execution.id:
                        continue
                    held = self._store.get_execution(holder)
                    if held is not None:
                        self._journal.expire_if_due(held)
                        if held.terminal:
                            continue  # finished: its keys are on their way out
                    # A holder not stored yet is mid-submit (or died there): treating it as
                    # live is what keeps two racing requests from both going ahead.
                    raise self._lock_refusal(other_key, holder, held, execution, actor=actor)
        except BaseException:
            for key in taken:
                self._store.release_lock(key, execution.id)
            raise

    def _acquire_one(self, key: str, execution: Execution, *, actor: Actor) -> None:
        unborn_checks = 0
        for _ in range(LOCK_TRIES):
            holder = self._store.try_lock(key, execution.id)
            if holder is None:
                return
            held = self._store.get_execution(holder)
            if held is not None:
                # Expiring a stale holder releases its lock; the next try then takes it.
                self._journal.expire_if_due(held)
            elif unborn_checks < LOCK_UNBORN_CHECKS:
                # A concurrent submit takes the lock just before it stores its execution: give
                # it a moment. Only a holder still missing after that is an orphan (a process
                # died between the two writes) whose lock may be taken over. The wait is on
                # the wall clock, not the engine's: what it waits for is another thread's or
                # process's write, which a skipping test clock would not wait for.
                unborn_checks += 1
                time.sleep(LOCK_UNBORN_WAIT_S)
                continue
            if held is None or held.terminal:
                if self._store.steal_lock(key, execution.id, holder):
                    return
                continue  # released or taken meanwhile: look again
            break
        else:
            raise Refused(f"{key} kept changing hands; try again")
        raise self._lock_refusal(key, holder, held, execution, actor=actor)

    def _lock_refusal(
        self,
        key: str,
        holder: str,
        held: Execution | None,
        execution: Execution,
        *,
        actor: Actor,
    ) -> LockHeld:
        state = (
            f"{held.state}, requested by {held.requester.name}"
            if held
            else "being submitted right now; try again in a moment"
        )
        if held is not None and held.runbook != execution.runbook:
            state = f"{held.runbook}, {state}"
        hint = f"see `runs.show {holder}`"
        if held is not None and held.state in {State.RUNNING, State.COMPENSATING}:
            lease = self._store.get_lease(holder)
            if lease is None or lease.until <= self._clock.now():
                hint = (
                    f"its process is gone: resume it with `runs.resume {holder}` or stop it "
                    f"with `runs.cancel {holder}`"
                )
        self._audit.record(
            "request.refused",
            actor=actor,
            outcome="lock_held",
            target=plan_target(execution.plan),
            params=execution.plan.params,
            reason=execution.reason,
            detail={"lock": key, "holder": holder},
        )
        return LockHeld(f"{key} is locked by {holder} ({state})", holder=holder, hint=hint)
