"""PagerDuty incidents acted on as a person: list, show, acknowledge, resolve, note.

The one copy of the incident verbs that the terminal (``incident.*``) and Slack (``/incident``)
both call. Each verb that changes an incident is authorised here by policy
(``incidents.responders`` in policy.yaml) before any call to PagerDuty; a refusal is audited
(``incident.refused``) and sends nothing. A note's text has credential-shaped substrings masked
before it leaves. PagerDuty is reached through :class:`IncidentOps`, a port the front end
gives (the PagerDuty adapter implements it): the engine imports no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runbooks.engine.errors import InvalidInput, Refused
from runbooks.engine.redact import redact_text

if TYPE_CHECKING:
    from runbooks.engine.config.loader import Config
    from runbooks.engine.engine import Engine
    from runbooks.engine.models import Actor

#: The verbs that change an incident, as policy and the audit name them.
STATUS_VERBS = {"acknowledged": "acknowledge", "resolved": "resolve"}


class IncidentOps(Protocol):
    """What the incident verbs need from PagerDuty (REST API v2, as the bot's token)."""

    def incidents(self, service_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Open (triggered, acknowledged) incidents of these services."""
        ...

    def incident(self, incident_id: str) -> dict[str, Any]: ...

    def notes(self, incident_id: str) -> list[dict[str, Any]]: ...

    def set_status(self, incident_id: str, status: str, *, from_email: str) -> dict[str, Any]:
        """``acknowledged`` or ``resolved``, ``From:`` the acting person."""
        ...

    def add_note(self, incident_id: str, content: str, *, from_email: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ListedIncident:
    incident: dict[str, Any]
    #: The environment whose PagerDuty service it is on.
    environment: str | None


def pagerduty_services(config: Config, environment: str | None = None) -> dict[str, str]:
    """PagerDuty service id → environment, for one environment or all."""
    names = [environment] if environment else config.environment_names()
    found: dict[str, str] = {}
    for name in names:
        pagerduty = config.environment(name).pagerduty
        for service_id in pagerduty.services if pagerduty else {}:
            found[service_id] = name
    return found


class Incidents:
    """The incident verbs over ``ops``, for ``engine``'s configuration, policy and audit log."""

    def __init__(self, engine: Engine, ops: IncidentOps) -> None:
        self.engine = engine
        self.ops = ops

    def list_open(self, environment: str | None = None) -> list[ListedIncident]:
        """Open incidents of the environments' services (none mapped: an empty list)."""
        services = pagerduty_services(self.engine.config, environment)
        if not services:
            return []
        return [
            ListedIncident(i, services.get(str((i.get("service") or {}).get("id"))))
            for i in self.ops.incidents(list(services))
        ]

    def show(self, incident_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The incident and its notes (its timeline as runbook-bot and people wrote it)."""
        return self.ops.incident(incident_id), self.ops.notes(incident_id)

    def set_status(self, incident_id: str, status: str, *, actor: Actor) -> dict[str, Any]:
        """Acknowledge or resolve, as ``actor``; authorised and audited before PagerDuty."""
        verb = STATUS_VERBS.get(status)
        if verb is None:
            raise InvalidInput(f"status must be acknowledged or resolved, not {status!r}")
        email = self._authorise(verb, incident_id, actor=actor)
        done = self.ops.set_status(incident_id, status, from_email=email)
        self._audit(f"incident.{status}", incident_id, actor=actor)
        return done

    def note(self, incident_id: str, text: str, *, actor: Actor) -> str:
        """Add a note to the incident's timeline, as ``actor``; returns the text as sent
        (credential-shaped substrings masked)."""
        said = redact_text(text.strip())
        if not said:
            raise InvalidInput("a note needs text (incident.note ID 'what happened')")
        email = self._authorise("note", incident_id, actor=actor)
        self.ops.add_note(incident_id, said, from_email=email)
        self._audit("incident.noted", incident_id, actor=actor)
        return said

    def _authorise(self, verb: str, incident_id: str, *, actor: Actor) -> str:
        """The actor's email (PagerDuty's ``From:``) if they may ``verb``; else a refusal,
        audited as ``incident.refused``."""
        why = self.engine.policy.incident_refusal(verb, actor, incident=incident_id)
        if why is not None:
            self.engine.audit.record(
                "incident.refused",
                actor=actor,
                outcome="not_allowed",
                target={"incident": incident_id},
                incident=incident_id,
                detail={"verb": verb, "why": why},
            )
            raise Refused(why)
        person = self.engine.config.policy.people.get(actor.id)
        email = person.email if person is not None else None
        if not email:
            raise InvalidInput(
                f"{actor.name} has no email in policy.yaml: PagerDuty needs it as From: "
                f"(people.{actor.id}.email)"
            )
        return email

    def _audit(self, action: str, incident_id: str, *, actor: Actor) -> None:
        self.engine.audit.record(
            action,
            actor=actor,
            outcome="ok",
            target={"incident": incident_id},
            incident=incident_id,
        )
