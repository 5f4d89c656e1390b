"""The approval gate: how many approvals a request needs, who may give them, who is asking.

This issue fills in the counting rules the engine enforces (never the requester, one person
counts once, bound to the plan hash, expiring); the full policy language (channels, windows,
freezes, break-glass reviews) grows here in the approvals issue.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Protocol

from runbooks.engine.config import Config
from runbooks.engine.errors import InvalidInput
from runbooks.engine.models import Actor


@dataclass(frozen=True)
class Gate:
    """What a request must pass before it runs."""

    required: int
    approver_groups: tuple[str, ...]
    expiry: float
    break_glass_allowed: bool


class ApprovalPolicy(Protocol):
    def gate(self, runbook: str, environment: str, *, read_only: bool) -> Gate: ...

    def may_approve(self, actor: Actor, groups: tuple[str, ...] | list[str]) -> bool: ...


class ConfigPolicy:
    """Reads ``config/policy.yaml``: first matching rule wins."""

    def __init__(self, config: Config) -> None:
        self._config = config

    def gate(self, runbook: str, environment: str, *, read_only: bool) -> Gate:
        if read_only:
            return Gate(0, (), 0.0, False)
        rule = self._config.policy.rule_for(runbook, environment)
        return Gate(rule.approvals, tuple(rule.approvers), rule.expiry, rule.break_glass)

    def may_approve(self, actor: Actor, groups: tuple[str, ...] | list[str]) -> bool:
        if "*" in groups:
            return True
        person = self._config.policy.people.get(actor.id)
        if person is None:
            return False
        return actor.id in groups or bool(set(person.groups) & set(groups))


def terminal_actor(config: Config, *, override: str | None, login: str | None = None) -> Actor:
    """Map the OS login (or ``RUNBOOK_USER`` where the config allows it) to a person."""
    policy = config.policy
    if override:
        if not policy.allow_user_override:
            raise InvalidInput(
                "RUNBOOK_USER is set, but this configuration does not allow overriding the "
                "terminal identity (allow_user_override in policy.yaml)",
                hint="unset RUNBOOK_USER; you act as your OS login name",
            )
        login = override
    login = login or getpass.getuser()
    key = policy.person_for_terminal(login) or (login if login in policy.people else None)
    if key is None:
        hint = "add your login to terminal_users of your entry in policy.yaml"
        if policy.allow_user_override:
            people = ", ".join(policy.people)
            hint = f"in the sandbox, act as someone with RUNBOOK_USER=<one of: {people}>"
        raise InvalidInput(
            f"unknown user {login!r}: no person in policy.yaml has this terminal user "
            f"(known: {', '.join(policy.terminal_users()) or 'none'})",
            hint=hint,
        )
    return Actor(id=key, name=policy.people[key].name, origin="cli")
