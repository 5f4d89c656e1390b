"""One error taxonomy for the whole project.

Every error carries a stable ``code`` and a message written for the person at the keyboard:
what was wrong and what would be right. Front ends map ``exit_code`` (CLI) or render the
message (Slack) in one place each.
"""

from __future__ import annotations

from enum import StrEnum


class RunbookError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "error"
    #: Exit code in the CLI contract: 1 failed, 2 refused or invalid, 3 still pending.
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class InvalidInput(RunbookError):
    """A parameter, a name or a flag was wrong; nothing was created."""

    code = "invalid_input"
    exit_code = 2


class ConfigError(InvalidInput):
    """The configuration files are invalid (file, key path, what is allowed)."""

    code = "config_error"


class NotFound(InvalidInput):
    """An execution, runbook or record does not exist."""

    code = "not_found"


class RefusalKind(StrEnum):
    """Why a valid request may not happen: a fact a program reads (never the message)."""

    NOT_ALLOWED = "not_allowed"  # this person, front end or channel may not
    FREEZE = "freeze"  # a change freeze is on
    OUTSIDE_WINDOW = "outside_window"  # no maintenance window is open
    LOCK_HELD = "lock_held"  # another execution holds a lock it needs
    LEASE_HELD = "lease_held"  # another process runs the execution
    PLAN_CHANGED = "plan_changed"  # the live plan differs from the one shown
    NEEDS_PERSON = "needs_person"  # an automatic request that needs a person's judgement
    STATE = "state"  # the execution or the world is not in a state that allows it now
    NOT_READY = "not_ready"  # open readiness findings and policy says refuse (when_not_ready)


class Refused(RunbookError):
    """The request is valid but may not happen now (policy, lock, state); ``kind`` says why."""

    code = "refused"
    exit_code = 2
    kind = RefusalKind.STATE

    def __init__(
        self, message: str, *, hint: str | None = None, kind: RefusalKind | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        if kind is not None:
            self.kind = kind


class NeedsPerson(Refused):
    """An automatic request (an alert) refused because what it would do next needs a person's
    judgement (a rollback after a rollback): the requester pages instead of retrying."""

    code = "needs_person"
    kind = RefusalKind.NEEDS_PERSON


class LockHeld(Refused):
    """Another execution holds the lock key."""

    code = "lock_held"
    kind = RefusalKind.LOCK_HELD

    def __init__(self, message: str, *, holder: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.holder = holder


class PlanChanged(Refused):
    """The live plan no longer matches the one shown: approvals are void."""

    code = "plan_changed"
    kind = RefusalKind.PLAN_CHANGED


class LeaseHeld(Refused):
    """Another live process is running this execution."""

    code = "lease_held"
    kind = RefusalKind.LEASE_HELD


class ConcurrentUpdate(RunbookError):
    """An optimistic write lost a race; the caller re-reads and retries."""

    code = "concurrent_update"


class StepFailed(RunbookError):
    """A step's run raised or its verification did not hold before the deadline."""

    code = "step_failed"


class Cancelled(RunbookError):
    """Someone asked for the execution to stop."""

    code = "cancelled"


class LeaseLost(RunbookError):
    """This process no longer owns the execution's lease; it must stop touching it."""

    code = "lease_lost"


class AuditError(RunbookError):
    """The audit log cannot be written or its key is missing."""

    code = "audit_error"


class StoreFull(RunbookError):
    """The state store cannot write: its disk (or its SQLite page limit) is full. What was
    written before is safe; the run continues with ``runs.resume`` once there is space."""

    code = "store_full"

    def __init__(self, location: str, *, execution_id: str | None = None) -> None:
        self.location = location
        self.execution_id = execution_id
        then = (
            f"free space and run runs.resume {execution_id}"
            if execution_id
            else "free space and try again"
        )
        super().__init__(f"the state store at {location} is full; {then}")

    def during(self, execution_id: str) -> StoreFull:
        """The same error, naming the execution that was running (kept if already named)."""
        return self if self.execution_id else StoreFull(self.location, execution_id=execution_id)
