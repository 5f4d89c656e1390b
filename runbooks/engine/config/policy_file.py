"""``config/policy.yaml``'s schema: people, approval rules, freezes, Slack channels, drill
and incident operators (who may do what is ``runbooks.engine.policy``)."""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from runbooks.engine.config.environments import Strict
from runbooks.engine.config.yaml_files import Seconds


class Person(Strict):
    """Someone who may request or approve runbooks."""

    name: str
    slack_id: str | None = None
    email: str | None = None
    terminal_users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class Rule(Strict):
    """Who may do what where. Rules are read top to bottom; the first that matches wins."""

    runbooks: str = "*"
    environments: list[str] = Field(default_factory=lambda: ["*"])
    approvals: int = Field(0, ge=0, le=5)
    requesters: list[str] = Field(default_factory=lambda: ["*"])
    approvers: list[str] = Field(default_factory=lambda: ["*"])
    #: Who may cancel or resume someone else's execution. Without it: the approvers the rule
    #: names; in staging and production never "anyone" (see ``ConfigPolicy.gate``).
    operators: list[str] | None = None
    expiry: Seconds = 1800.0
    channels: list[str] = Field(default_factory=list)
    terminal_requests: bool = True
    slack_approvals_only: bool = False
    maintenance_window: bool = False
    break_glass: bool = False
    #: When the bot's last readiness evaluation left findings open for the runbook in the
    #: environment: ``warn`` (the plan shows them) or ``refuse`` (break-glass still runs).
    when_not_ready: Literal["warn", "refuse"] = "warn"

    def matches(self, runbook: str, environment: str) -> bool:
        return fnmatch.fnmatchcase(runbook, self.runbooks) and any(
            fnmatch.fnmatchcase(environment, pattern) for pattern in self.environments
        )


class Freeze(Strict):
    """A change freeze: only break-glass requests run in these environments meanwhile."""

    environments: list[str]
    start: str
    end: str
    reason: str = ""

    @model_validator(mode="after")
    def _times(self) -> Freeze:
        from runbooks.engine.clock import parse_iso

        try:
            start, end = parse_iso(self.start), parse_iso(self.end)
        except ValueError:
            raise ValueError(
                f"start and end must be ISO times like 2026-12-20T00:00Z "
                f"(got {self.start!r}, {self.end!r})"
            ) from None
        if end <= start:
            raise ValueError(f"end {self.end} is not after start {self.start}")
        return self


class SlackPolicy(Strict):
    """Where the Slack front end posts approval cards (environment glob -> channel id)."""

    approvals_channels: dict[str, str] = Field(default_factory=dict)

    def approvals_channel(self, environment: str) -> str | None:
        for pattern, channel in self.approvals_channels.items():
            if fnmatch.fnmatchcase(environment, pattern):
                return channel
        return None


class DrillPolicy(Strict):
    """Who may pause, resume and run a drill by hand (``drills:`` in policy.yaml)."""

    #: Groups, people or ``slack:<user group id>``. Without it: the approvers of the drill's
    #: runbook in its environment (never "anyone").
    operators: list[str] | None = None


class IncidentPolicy(Strict):
    """Who may act on PagerDuty incidents through the bot (``incidents:`` in policy.yaml)."""

    #: May acknowledge, resolve and add notes, as themselves (groups, people or
    #: ``slack:<user group id>``). Without it: nobody. Listing and showing is for anyone known.
    responders: list[str] = Field(default_factory=list)


class PolicyFile(Strict):
    """``policy.yaml``."""

    allow_user_override: bool = False
    slack: SlackPolicy = SlackPolicy()
    people: dict[str, Person] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)
    drills: DrillPolicy = DrillPolicy()
    incidents: IncidentPolicy = IncidentPolicy()

    def rule_for(self, runbook: str, environment: str) -> tuple[int, Rule]:
        """The first rule matching (its index in ``rules``), else no approval (index -1)."""
        for index, rule in enumerate(self.rules):
            if rule.matches(runbook, environment):
                return index, rule
        return -1, Rule(runbooks=runbook, environments=[environment], approvals=0)

    def person_for_terminal(self, login: str) -> str | None:
        for key, person in self.people.items():
            if login in person.terminal_users:
                return key
        return None

    def person_for_slack(self, user_id: str) -> str | None:
        for key, person in self.people.items():
            if person.slack_id == user_id:
                return key
        return None

    def terminal_users(self) -> list[str]:
        return sorted(u for p in self.people.values() for u in p.terminal_users)
