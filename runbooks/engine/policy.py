"""Access policy and the approval gate, enforced by the engine for every front end.

- Who may request: the rule's ``requesters`` (groups, people, ``slack:<usergroup id>``).
- Where from: Slack requests only from the rule's ``channels`` (if any); terminal requests only
  where ``terminal_requests`` allows.
- Change freezes: during a freeze of the environment only break-glass requests run.
- Approvals: ``approvals`` distinct people from ``approvers``, never the requester, bound to the
  plan hash, before ``expiry``; ``slack_approvals_only`` refuses approvals from terminals (Slack
  identities are verified by Slack's request signature, terminal ones are OS logins).
- Break-glass: only where the rule allows it, with a reason and an incident id.
"""

from __future__ import annotations

import fnmatch
import getpass
from collections.abc import Callable
from dataclasses import dataclass, field

from runbooks.engine.clock import format_duration, iso, parse_iso
from runbooks.engine.config.loader import Config
from runbooks.engine.config.policy_file import Freeze, Rule
from runbooks.engine.errors import InvalidInput, RefusalKind
from runbooks.engine.models import Actor, Origin

#: Resolves a Slack user group id to the Slack user ids in it (provided by the Slack front end).
UsergroupResolver = Callable[[str], set[str]]
SLACK_GROUP_PREFIX = "slack:"


@dataclass(frozen=True)
class Refusal:
    """Why policy refuses a request: its kind (read by programs) and its words (for people)."""

    kind: RefusalKind
    message: str


@dataclass(frozen=True)
class Gate:
    """What a request must pass before it runs."""

    required: int
    approver_groups: tuple[str, ...]
    expiry: float
    break_glass_allowed: bool
    requesters: tuple[str, ...] = ("*",)
    channels: tuple[str, ...] = ()
    terminal_requests: bool = True
    slack_approvals_only: bool = False
    maintenance_window: bool = False
    rule: str = "default: no rule matched"
    freezes: tuple[Freeze, ...] = field(default=())
    #: Who besides the requester may cancel or resume (``operators``; see ``ConfigPolicy.gate``).
    operators: tuple[str, ...] = ("*",)
    #: With open readiness findings for the runbook here: ``warn`` (on the plan) or ``refuse``.
    when_not_ready: str = "warn"


class ConfigPolicy:
    """Reads ``config/policy.yaml``: the first matching rule decides."""

    def __init__(self, config: Config, *, usergroups: UsergroupResolver | None = None) -> None:
        self._config = config
        self._usergroups = usergroups

    def use_usergroups(self, resolver: UsergroupResolver) -> None:
        """Resolve ``slack:<usergroup id>`` members with this (the Slack front end sets it)."""
        self._usergroups = resolver

    def gate(self, runbook: str, environment: str, *, read_only: bool) -> Gate:
        if read_only:
            return Gate(0, (), 0.0, False, rule="read-only runbook: no gate")
        policy = self._config.policy
        index, rule = policy.rule_for(runbook, environment)
        freezes = tuple(f for f in policy.freezes if environment in f.environments)
        return Gate(
            required=rule.approvals,
            approver_groups=tuple(rule.approvers),
            expiry=rule.expiry,
            break_glass_allowed=rule.break_glass,
            requesters=tuple(rule.requesters),
            channels=tuple(rule.channels),
            terminal_requests=rule.terminal_requests,
            slack_approvals_only=rule.slack_approvals_only,
            maintenance_window=rule.maintenance_window,
            rule=f"rules[{index}] ({rule.runbooks} in {', '.join(rule.environments)})"
            if index >= 0
            else "default: no rule matched (0 approvals)",
            freezes=freezes,
            operators=self._operators(rule, environment),
            when_not_ready=rule.when_not_ready,
        )

    def _operators(self, rule: Rule, environment: str) -> tuple[str, ...]:
        """Who besides the requester may cancel or resume under ``rule``.

        The rule's ``operators`` when it names them. Otherwise, in development (tier sandbox)
        its approvers, as before; in staging and production never "anyone": the approvers
        the rule names, else the environment's approvers (see ``environment_approvers``).
        """
        if rule.operators is not None:
            return tuple(rule.operators)
        if not self._guarded(environment):
            return tuple(rule.approvers)
        return _named(rule) or self.environment_approvers(environment)

    def _guarded(self, environment: str) -> bool:
        """Staging and production tiers (an environment the config does not know, too)."""
        env = self._config.environments.environments.get(environment)
        return env is None or env.tier != "sandbox"

    def environment_approvers(self, environment: str) -> tuple[str, ...]:
        """Everyone a rule covering ``environment`` names as an approver ("*" never counts)."""
        found: list[str] = []
        for rule in self._config.policy.rules:
            if any(fnmatch.fnmatchcase(environment, p) for p in rule.environments):
                found.extend(name for name in _named(rule) if name not in found)
        return tuple(found)

    def drill_operators(self, runbook: str, environment: str) -> tuple[str, ...]:
        """Who may pause, resume and run a drill of ``runbook`` in ``environment``:
        ``drills.operators``, else the approvers of that runbook there (never "anyone")."""
        configured = self._config.policy.drills.operators
        if configured is not None:
            return tuple(configured)
        _index, rule = self._config.policy.rule_for(runbook, environment)
        return _named(rule) or self.environment_approvers(environment)

    def drill_refusal(
        self, verb: str, actor: Actor, *, drill: str, runbook: str, environment: str
    ) -> str | None:
        """Why this person may not ``verb`` (pause, resume, run) the drill, or None."""
        if actor.origin == Origin.SYSTEM:
            return None
        operators = self.drill_operators(runbook, environment)
        if self.member_of(actor, operators):
            return None
        source = (
            "policy.yaml drills.operators"
            if self._config.policy.drills.operators is not None
            else f"the approvers of {runbook} in {environment}"
        )
        who = ", ".join(operators) or "nobody"
        return f"{actor.name} may not {verb} the drill {drill}; only {who} may ({source})"

    def incident_refusal(self, verb: str, actor: Actor, *, incident: str) -> str | None:
        """Why this person may not ``verb`` (acknowledge, resolve, note) the incident, or None."""
        responders = tuple(self._config.policy.incidents.responders)
        if self.member_of(actor, responders):
            return None
        return (
            f"{actor.name} may not {verb} PagerDuty incident {incident}; only "
            f"{', '.join(responders) or 'nobody'} may (policy.yaml incidents.responders)"
        )

    def member_of(self, actor: Actor, groups: tuple[str, ...] | list[str]) -> bool:
        """Tell whether the actor belongs to any of ``groups`` (or is named in it)."""
        if "*" in groups:
            return True
        person = self._config.policy.people.get(actor.id)
        if person is None:
            return False
        if actor.id in groups or set(person.groups) & set(groups):
            return True
        if self._usergroups is not None and person.slack_id:
            for group in groups:
                if group.startswith(SLACK_GROUP_PREFIX) and person.slack_id in self._usergroups(
                    group.removeprefix(SLACK_GROUP_PREFIX)
                ):
                    return True
        return False

    def approvers(self, groups: tuple[str, ...] | list[str], *, requester: str) -> list[str]:
        """``Name (key)`` of each person who may approve a request of ``requester`` (never
        the requester), members of ``groups`` as policy.yaml lists them."""
        return [
            f"{p.name} ({key})"
            for key, p in self._config.policy.people.items()
            if key != requester and self.member_of(Actor(key, p.name, Origin.SLACK), groups)
        ]

    def active_freeze(self, gate: Gate, now: float) -> Freeze | None:
        for freeze in gate.freezes:
            if parse_iso(freeze.start) <= now < parse_iso(freeze.end):
                return freeze
        return None

    def request_refusal(
        self,
        actor: Actor,
        gate: Gate,
        *,
        runbook: str,
        environment: str,
        channel: str | None,
        break_glass: bool,
        now: float,
    ) -> str | None:
        """Why this person may not make this request here and now, or None."""
        refusal = self.check_request(
            actor,
            gate,
            runbook=runbook,
            environment=environment,
            channel=channel,
            break_glass=break_glass,
            now=now,
        )
        return None if refusal is None else refusal.message

    def check_request(
        self,
        actor: Actor,
        gate: Gate,
        *,
        runbook: str,
        environment: str,
        channel: str | None,
        break_glass: bool,
        now: float,
    ) -> Refusal | None:
        """The refusal (its kind and its words) of this request here and now, or None: the
        requester's permission (``permission_refusal``), then the moment (a change freeze,
        a maintenance window)."""
        refusal = self.permission_refusal(
            actor,
            gate,
            runbook=runbook,
            environment=environment,
            channel=channel,
            break_glass=break_glass,
        )
        if refusal is not None:
            return refusal
        freeze = self.active_freeze(gate, now)
        if freeze is not None and not break_glass:
            return Refusal(
                RefusalKind.FREEZE,
                f"{environment} is in a change freeze until {freeze.end}"
                f"{': ' + freeze.reason if freeze.reason else ''}; only break-glass "
                "requests (--break-glass --reason TEXT --incident ID) run during a freeze",
            )
        if gate.maintenance_window and not break_glass:
            schedules = self._config.schedules
            if schedules.open_window(environment, now) is None:
                upcoming = schedules.next_window(environment, now)
                nxt = (
                    f"the next is {upcoming[0].name!r} at {iso(upcoming[1])}"
                    if upcoming
                    else f"schedules.yaml declares none for {environment}"
                )
                return Refusal(
                    RefusalKind.OUTSIDE_WINDOW,
                    f"{runbook} in {environment} runs only inside a maintenance window; "
                    f"none is open now ({nxt})",
                )
        return None

    def permission_refusal(
        self,
        actor: Actor,
        gate: Gate,
        *,
        runbook: str,
        environment: str,
        channel: str | None,
        break_glass: bool,
    ) -> Refusal | None:
        """Whether this person may request this here, from this front end and channel, with
        break-glass if asked: what depends on neither the plan nor the moment, so that the
        request path refuses it before planning reads live state."""
        not_allowed = RefusalKind.NOT_ALLOWED
        if not self.member_of(actor, gate.requesters):
            return Refusal(
                not_allowed,
                f"{actor.name} may not request {runbook} in {environment}; requesters: "
                f"{', '.join(gate.requesters)} ({gate.rule})",
            )
        if actor.origin == Origin.CLI and not gate.terminal_requests:
            return Refusal(
                not_allowed,
                f"{runbook} in {environment} cannot be requested from a terminal; "
                f"use Slack ({gate.rule})",
            )
        if actor.origin == Origin.SLACK and gate.channels and channel not in gate.channels:
            return Refusal(
                not_allowed,
                f"{runbook} in {environment} can only be requested from "
                f"{', '.join('<#' + c + '>' for c in gate.channels)}, not from "
                f"{'<#' + channel + '>' if channel else 'a direct message'}",
            )
        # Before the freeze and the window as it always could be: with break-glass neither
        # of them refuses.
        if break_glass and not gate.break_glass_allowed:
            return Refusal(
                not_allowed,
                f"break-glass is not allowed for {runbook} in {environment} ({gate.rule})",
            )
        return None

    def approval_refusal(
        self, actor: Actor, gate: Gate, *, runbook: str, environment: str
    ) -> str | None:
        if not self.member_of(actor, gate.approver_groups):
            return (
                f"{actor.name} may not approve {runbook} in {environment}; approvers: "
                f"{', '.join(gate.approver_groups) or 'nobody'}"
            )
        if gate.slack_approvals_only and actor.origin != Origin.SLACK:
            return (
                f"approvals for {runbook} in {environment} must come from Slack "
                "(its identity is verified by Slack's signature), not from a terminal"
            )
        return None

    def operator_refusal(
        self,
        verb: str,
        actor: Actor,
        *,
        execution_id: str,
        runbook: str,
        environment: str,
        requester: Actor,
        requester_may: bool = True,
    ) -> str | None:
        """Why this person may not ``verb`` (cancel, resume) someone's execution, or None.

        The requester may act on their own request (unless ``requester_may`` is False: a
        break-glass review is never closed by the person who broke the glass), and so may the
        engine itself; everyone else must be one of the rule's ``operators`` (see ``gate``).
        """
        if actor.origin == Origin.SYSTEM or (requester_may and actor.id == requester.id):
            return None
        gate = self.gate(runbook, environment, read_only=False)
        if actor.id != requester.id and self.member_of(actor, gate.operators):
            return None
        operators = ", ".join(gate.operators) or "nobody"
        who = f"the requester or {operators}" if requester_may else operators
        never = "" if requester_may else ", never the requester"
        return (
            f"{actor.name} may not {verb} {execution_id} ({runbook} in {environment}, requested "
            f"by {requester.name}); only {who} may{never} ({gate.rule})"
        )

    def explain(
        self, runbook: str, environment: str, person: str, *, read_only: bool, now: float
    ) -> list[str]:
        """Say in words what this person may do with this runbook here, and why."""
        policy = self._config.policy
        if person not in policy.people:
            raise InvalidInput(f"unknown person {person!r}; known: {', '.join(policy.people)}")
        who = policy.people[person]
        actor = Actor(person, who.name, Origin.CLI)
        gate = self.gate(runbook, environment, read_only=read_only)
        lines = [f"{runbook} in {environment}: decided by {gate.rule}."]
        if read_only:
            lines.append(
                f"It is read-only: anyone known may run it, {who.name} included; "
                "no approval, no lock."
            )
            return lines
        groups = ", ".join(who.groups) or "no groups"
        if self.member_of(actor, gate.requesters):
            lines.append(
                f"{who.name} ({groups}) MAY request it: requesters are "
                f"{', '.join(gate.requesters)}."
            )
        else:
            lines.append(
                f"{who.name} ({groups}) may NOT request it: requesters are "
                f"{', '.join(gate.requesters)}."
            )
        if gate.required == 0:
            lines.append("It needs no approval: it runs once the requester confirms the plan.")
        else:
            approvers = self.approvers(gate.approver_groups, requester=person)
            lines.append(
                f"It needs {gate.required} approval(s) from {', '.join(gate.approver_groups)}, "
                f"never the requester, within {format_duration(gate.expiry)}; approvals are "
                "bound to the exact plan shown and void if it changes before the first step."
            )
            lines.append(
                f"Who can approve a request by {who.name}: {', '.join(approvers) or 'nobody'}."
            )
            if self.member_of(actor, gate.approver_groups):
                lines.append(f"{who.name} may approve other people's requests for it.")
        lines.append(
            "Cancelling or resuming someone else's request is for "
            f"{', '.join(gate.operators) or 'nobody'}; the requester may always cancel their own."
        )
        if gate.slack_approvals_only:
            lines.append("Approvals must come from Slack, not a terminal.")
        if gate.maintenance_window:
            window = self._config.schedules.open_window(environment, now)
            upcoming = self._config.schedules.next_window(environment, now)
            state = (
                f"window {window.name!r} is open now"
                if window
                else f"next window: {upcoming[0].name!r} at {iso(upcoming[1])}"
                if upcoming
                else "no window is declared for this environment"
            )
            lines.append(f"It runs only inside a maintenance window ({state}).")
        if gate.channels:
            lines.append(f"Slack requests only from channels {', '.join(gate.channels)}.")
        if not gate.terminal_requests:
            lines.append("Terminal requests are not allowed; use Slack.")
        lines.append(
            "Break-glass is "
            + (
                "allowed (needs --reason and --incident; audited and reviewed afterwards)."
                if gate.break_glass_allowed
                else "not allowed."
            )
        )
        freeze = self.active_freeze(gate, now)
        if freeze is not None:
            why = freeze.reason or "no reason given"
            lines.append(
                f"A change freeze is in force until {freeze.end} ({why}): only "
                "break-glass requests run."
            )
        ahead = [f for f in gate.freezes if parse_iso(f.start) > now]
        lines.extend(f"Freeze ahead: {f.start} to {f.end}." for f in ahead)
        lines.append(f"(as of {iso(now)})")
        return lines


#: What break-glass needs besides the flag, said the same by every front end.
BREAK_GLASS_NEEDS = (
    "--break-glass needs --reason TEXT and --incident ID (the PagerDuty incident this "
    "emergency belongs to)"
)


def require_break_glass_context(reason: str | None, incident: str | None) -> None:
    """Break-glass bypasses approvals: only with a reason and the incident it belongs to.
    The one copy of the rule: the request path, a direct ``submit`` and Slack's parser use it."""
    if not ((reason or "").strip() and (incident or "").strip()):
        raise InvalidInput(BREAK_GLASS_NEEDS)


def _named(rule: Rule) -> tuple[str, ...]:
    """The approvers a rule names itself: not the default, never "*"."""
    if "approvers" not in rule.model_fields_set:
        return ()
    return tuple(name for name in rule.approvers if name != "*")


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
    return Actor(id=key, name=policy.people[key].name, origin=Origin.CLI)
