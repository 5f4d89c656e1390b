"""Task namespace ``incident``: PagerDuty incidents of our environments. Docstrings are the
--help text. Link a runbook to an incident with ``--incident ID`` on the runbook itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from invoke.collection import Collection
from invoke.tasks import Task, task

if TYPE_CHECKING:
    from runbooks.adapters.pagerduty import PagerDuty
    from runbooks.engine import Incidents
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


@contextmanager
def _incidents(rt: Runtime) -> Iterator[Incidents]:
    """The engine's incident verbs over the PagerDuty adapter (closed afterwards)."""
    from runbooks.engine import Incidents

    pagerduty = _pagerduty()
    try:
        yield Incidents(rt.engine, pagerduty)
    finally:
        pagerduty.close()


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
        from runbooks.engine import pagerduty_services

        out = consoles(json)[0]
        if not pagerduty_services(rt.config, environment or None):
            out.print("no PagerDuty services mapped (environments.yaml: <env>.pagerduty)")
            if json:
                emit_json([])
            return
        with _incidents(rt) as incidents:
            found = incidents.list_open(environment or None)
        if json:
            emit_json([listed.incident for listed in found])
            return
        if not found:
            out.print("no open incidents")
        for listed in found:
            out.print(_line(listed.incident, listed.environment), markup=False, highlight=False)

    with_runtime(go, as_json=json)


@task(help={"id": "the incident id (incident.list names them)", "json": "one JSON document"})
def show(c: Any, id: str, json: bool = False) -> None:
    """One incident: status, title, service, and its notes (the timeline runbook-bot wrote)."""
    from runbook_cli.commands import consoles, emit_json, with_runtime

    def go(rt: Runtime) -> None:
        with _incidents(rt) as incidents:
            incident, notes = incidents.show(id)
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
        with _incidents(rt) as incidents:
            done = incidents.set_status(id, status, actor=actor)
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
    """Add a note to an incident's timeline, as you (credential-shaped text is masked)."""
    from runbook_cli.commands import cli_actor, consoles, with_runtime

    def go(rt: Runtime) -> None:
        actor = cli_actor(rt)
        with _incidents(rt) as incidents:
            incidents.note(id, text, actor=actor)
        consoles(False)[0].print(f"noted on {id}")

    with_runtime(go)


def collections() -> list[Collection]:
    incident = Collection("incident")
    incident.add_task(cast("Task[Any]", list_), name="list")
    for item in (show, ack, resolve, note):
        incident.add_task(item)
    return [incident]
