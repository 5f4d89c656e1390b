"""Task namespace ``incident``: PagerDuty incidents of our environments. Docstrings are the
--help text. Link a runbook to an incident with ``--incident ID`` on the runbook itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from invoke.collection import Collection
from invoke.tasks import Task, task

if TYPE_CHECKING:
    from runbooks.adapters.pagerduty import PagerDuty
    from runbooks.engine.models import Actor
    from runbooks.engine.wiring import Runtime


def _pagerduty() -> PagerDuty:
    from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
    from runbooks.engine.errors import InvalidInput

    settings = PagerDutySettings.from_env()
    if not settings.api_token:
        raise InvalidInput(
            "PagerDuty is not configured: set PAGERDUTY_API_TOKEN (the sandbox exports one)"
        )
    return PagerDuty(settings)


def _services(rt: Runtime, environment: str) -> dict[str, str]:
    """PagerDuty service id → environment, for one environment or all."""
    config = rt.config
    names = [environment] if environment else config.environment_names()
    found: dict[str, str] = {}
    for name in names:
        pagerduty = config.environment(name).pagerduty
        for service_id in pagerduty.services if pagerduty else {}:
            found[service_id] = name
    return found


def _email(rt: Runtime, actor: Actor) -> str:
    from runbooks.engine.errors import InvalidInput

    person = rt.config.policy.people.get(actor.id)
    email = getattr(person, "email", None) if person is not None else None
    if not email:
        raise InvalidInput(
            f"{actor.name} has no email in policy.yaml: PagerDuty needs it as From: "
            f"(people.{actor.id}.email)"
        )
    return str(email)


def _line(incident: dict[str, Any], environment: str | None = None) -> str:
    service = (incident.get("service") or {}).get("summary", "")
    where = f" [{environment}]" if environment else ""
    return (
        f"{incident['id']}  #{incident.get('incident_number', '?')}  {incident['status']:<12} "
        f"{incident.get('title', '')}  ({service}){where}"
    )


@task(help={"environment": "one environment (default: all)", "json": "one JSON array"})
def list_(c: Any, environment: str = "", json: bool = False) -> None:
    """Open incidents (triggered, acknowledged) of the environments' PagerDuty services."""
    from runbook_cli.commands import consoles, emit_json, with_runtime

    def go(rt: Runtime) -> None:
        services = _services(rt, environment)
        out = consoles(json)[0]
        if not services:
            out.print("no PagerDuty services mapped (environments.yaml: <env>.pagerduty)")
            if json:
                emit_json([])
            return
        pagerduty = _pagerduty()
        try:
            found = pagerduty.incidents(list(services))
        finally:
            pagerduty.close()
        if json:
            emit_json(found)
            return
        if not found:
            out.print("no open incidents")
        for incident in found:
            env = services.get(str((incident.get("service") or {}).get("id")))
            out.print(_line(incident, env), markup=False, highlight=False)

    with_runtime(go, as_json=json)


@task(help={"id": "the incident id (incident.list names them)", "json": "one JSON document"})
def show(c: Any, id: str, json: bool = False) -> None:
    """One incident: status, title, service, and its notes (the timeline runbook-bot wrote)."""
    from runbook_cli.commands import consoles, emit_json, with_runtime

    def go(rt: Runtime) -> None:
        pagerduty = _pagerduty()
        try:
            incident = pagerduty.incident(id)
            notes = pagerduty.notes(id)
        finally:
            pagerduty.close()
        if json:
            emit_json({"incident": incident, "notes": notes})
            return
        out = consoles(False)[0]
        out.print(_line(incident), markup=False)
        if incident.get("html_url"):
            out.print(incident["html_url"], markup=False)
        for note in notes:
            who = (note.get("user") or {}).get("summary", "")
            text = f"— {note.get('created_at', '')} {who}:\n  {note.get('content', '')}"
            out.print(text, markup=False)

    with_runtime(go, as_json=json)


def _set_status(id: str, status: str) -> None:
    from runbook_cli.commands import cli_actor, consoles, with_runtime

    def go(rt: Runtime) -> None:
        actor = cli_actor(rt)
        pagerduty = _pagerduty()
        try:
            done = pagerduty.set_status(id, status, from_email=_email(rt, actor))
        finally:
            pagerduty.close()
        rt.engine.audit.record(
            f"incident.{status}", actor=actor, outcome="ok", target={"incident": id}, incident=id
        )
        consoles(False)[0].print(f"{id} {done.get('status', status)}")

    with_runtime(go)


@task(help={"id": "the incident id"})
def ack(c: Any, id: str) -> None:
    """Acknowledge an incident, as you (From: your email in policy.yaml)."""
    _set_status(id, "acknowledged")


@task(help={"id": "the incident id"})
def resolve(c: Any, id: str) -> None:
    """Resolve an incident, as you."""
    _set_status(id, "resolved")


@task(help={"id": "the incident id", "text": "the note"})
def note(c: Any, id: str, text: str) -> None:
    """Add a note to an incident's timeline, as you."""
    from runbook_cli.commands import cli_actor, consoles, with_runtime
    from runbooks.engine.errors import InvalidInput
    from runbooks.engine.redact import redact_text

    def go(rt: Runtime) -> None:
        if not text.strip():
            raise InvalidInput("a note needs text (incident.note ID 'what happened')")
        actor = cli_actor(rt)
        pagerduty = _pagerduty()
        try:
            pagerduty.add_note(id, redact_text(text.strip()), from_email=_email(rt, actor))
        finally:
            pagerduty.close()
        rt.engine.audit.record(
            "incident.noted", actor=actor, outcome="ok", target={"incident": id}, incident=id
        )
        consoles(False)[0].print(f"noted on {id}")

    with_runtime(go)


def collections() -> list[Collection]:
    incident = Collection("incident")
    incident.add_task(cast("Task[Any]", list_), name="list")
    for item in (show, ack, resolve, note):
        incident.add_task(item)
    return [incident]
