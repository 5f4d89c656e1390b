"""PagerDuty through the official ``pagerduty`` package: REST API v2 (incidents, notes, status)
and Events API v2 (trigger and resolve by dedup key).

Settings come from the environment (each may be an ``aws-secretsmanager:`` reference, resolved
at start; never logged): ``PAGERDUTY_API_TOKEN`` (REST), ``PAGERDUTY_ROUTING_KEY`` (Events),
``PAGERDUTY_API_URL`` / ``PAGERDUTY_EVENTS_URL`` (https; default PagerDuty's), and
``PAGERDUTY_CA_BUNDLE`` for a private certificate authority (the sandbox's emulator). Every
call has a timeout (``TIMEOUT_S``).

The package would retry 429 and 5xx answers itself, sleeping in the calling thread (forever,
for 429). A follower that sleeps while holding its lease can lose the lease and have another
replica deliver the same note, so the clients here never sleep: at most one immediate retry,
then the answer comes back as an error. A 429 raises :class:`RateLimited` with PagerDuty's
``ratelimit-reset`` (or ``Retry-After``) seconds; the outbox follower waits that long before
its next pass, and a person at the CLI or in Slack is told when to try again.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from runbooks.engine.errors import InvalidInput, NotFound
from runbooks.interfaces import InfrastructureError

TIMEOUT_S = 10
DEFAULT_API_URL = "https://api.pagerduty.com"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com"
#: PagerDuty's limit on a dedup key.
DEDUP_KEY_MAX = 255
#: A 429 without a reset header: wait this long.
RATE_LIMIT_DEFAULT_S = 5.0
#: One immediate retry of these, then the answer is ours to handle (no sleeping in the package).
RETRY_ONCE = {429: 1, 500: 1, 502: 1, 503: 1, 504: 1}


class RateLimited(InfrastructureError):
    """PagerDuty answered 429: try again after ``retry_after`` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float:
    for name in ("ratelimit-reset", "retry-after"):
        try:
            return max(0.0, float(headers.get(name)))
        except (TypeError, ValueError):
            continue
    return RATE_LIMIT_DEFAULT_S


@dataclass(frozen=True)
class PagerDutySettings:
    api_token: str | None = None
    routing_key: str | None = None
    api_url: str = DEFAULT_API_URL
    events_url: str = DEFAULT_EVENTS_URL
    ca_bundle: str | None = None

    @staticmethod
    def from_env(env: dict[str, str] | None = None) -> PagerDutySettings:
        env = dict(os.environ if env is None else env)
        settings = PagerDutySettings(
            api_token=env.get("PAGERDUTY_API_TOKEN") or None,
            routing_key=env.get("PAGERDUTY_ROUTING_KEY") or None,
            api_url=(env.get("PAGERDUTY_API_URL") or DEFAULT_API_URL).rstrip("/"),
            events_url=(env.get("PAGERDUTY_EVENTS_URL") or DEFAULT_EVENTS_URL).rstrip("/"),
            ca_bundle=env.get("PAGERDUTY_CA_BUNDLE") or None,
        )
        for name, url in (
            ("PAGERDUTY_API_URL", settings.api_url),
            ("PAGERDUTY_EVENTS_URL", settings.events_url),
        ):
            if not url.startswith("https://"):
                raise InvalidInput(
                    f"{name}={url!r} must be an https:// URL (the pagerduty package refuses "
                    "anything else; a local emulator serves TLS, see PAGERDUTY_CA_BUNDLE)"
                )
        return settings

    @property
    def configured(self) -> bool:
        return bool(self.api_token or self.routing_key)

    def describe(self) -> str:
        parts = []
        parts.append(f"REST {self.api_url}" if self.api_token else "REST off (no token)")
        parts.append(f"Events {self.events_url}" if self.routing_key else "Events off (no key)")
        return "; ".join(parts)


class PagerDuty:
    def __init__(self, settings: PagerDutySettings) -> None:
        import pagerduty

        self.settings = settings
        verify: Any = True
        if settings.ca_bundle:
            verify = ssl.create_default_context(cafile=settings.ca_bundle)
        self._rest = None
        self._events = None
        if settings.api_token:
            self._rest = pagerduty.RestApiV2Client(
                settings.api_token, base_url=settings.api_url, verify=verify
            )
        if settings.routing_key:
            self._events = pagerduty.EventsApiV2Client(
                settings.routing_key, base_url=settings.events_url, verify=verify
            )
        for client in (self._rest, self._events):
            if client is not None:
                client.timeout = TIMEOUT_S
                client.sleep_timer = 0.0  # the package never sleeps in our threads
                client.retry = dict(RETRY_ONCE)
                client.max_network_attempts = 1

    def close(self) -> None:
        for client in (self._rest, self._events):
            if client is not None:
                client.close()

    def _call(
        self, what: str, fn: Any, *args: Any, missing: str | None = None, **kwargs: Any
    ) -> Any:
        """Call PagerDuty; its errors become ours. ``missing``: what a 404 means (not found is
        invalid input, exit 2, rather than a failure of PagerDuty)."""
        import pagerduty

        try:
            return fn(*args, **kwargs)
        except pagerduty.HttpError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            detail = ""
            try:
                body = exc.response.json() if exc.response is not None else {}
                error = body.get("error") or {}
                detail = error.get("message", "") if isinstance(error, dict) else str(error)
                if isinstance(error, dict) and error.get("errors"):
                    detail += ": " + "; ".join(map(str, error["errors"]))
            except Exception:  # noqa: S110 - a body that is not JSON says nothing more
                pass
            if status == 404 and missing is not None:
                raise NotFound(
                    missing, hint="incident.list (or /incident list) names the open ones"
                ) from None
            if status == 429 and exc.response is not None:
                wait = _retry_after(exc.response.headers)
                raise RateLimited(
                    f"PagerDuty {what}: rate limited (HTTP 429); try again in {wait:g} s",
                    retry_after=wait,
                ) from None
            raise InfrastructureError(f"PagerDuty {what}: HTTP {status} {detail}".strip()) from None
        except pagerduty.Error as exc:
            raise InfrastructureError(f"PagerDuty {what}: {exc}") from None

    def _rest_client(self) -> Any:
        if self._rest is None:
            raise InvalidInput("PagerDuty's REST API is not configured: set PAGERDUTY_API_TOKEN")
        return self._rest

    # --- REST ----------------------------------------------------------------------------

    def identity(self) -> str:
        """Whether the REST token is valid: ``GET /abilities`` (any valid token may read it)."""
        rest = self._rest_client()
        found = self._call("token check (GET /abilities)", rest.rget, "/abilities")
        return f"REST token valid ({len(found or [])} abilities)"

    def incidents(
        self,
        service_ids: list[str] | None = None,
        statuses: tuple[str, ...] = ("triggered", "acknowledged"),
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"statuses[]": list(statuses)}
        if service_ids:
            params["service_ids[]"] = list(service_ids)
        rest = self._rest_client()
        return list(
            self._call("list incidents", lambda: list(rest.iter_all("incidents", params=params)))
        )

    def incident(self, incident_id: str) -> dict[str, Any]:
        rest = self._rest_client()
        found = self._call(
            f"incident {incident_id}",
            rest.rget,
            f"/incidents/{incident_id}",
            missing=_no_incident(incident_id),
        )
        return dict(found)

    def set_status(self, incident_id: str, status: str, *, from_email: str) -> dict[str, Any]:
        if status not in ("acknowledged", "resolved"):
            raise InvalidInput(f"status must be acknowledged or resolved, not {status!r}")
        rest = self._rest_client()
        done = self._call(
            f"{status} {incident_id}",
            rest.rput,
            f"/incidents/{incident_id}",
            json={"incident": {"type": "incident_reference", "status": status}},
            headers={"From": from_email},
            missing=_no_incident(incident_id),
        )
        return dict(done or {})

    def add_note(self, incident_id: str, content: str, *, from_email: str) -> dict[str, Any]:
        rest = self._rest_client()
        note = self._call(
            f"note on {incident_id}",
            rest.rpost,
            f"/incidents/{incident_id}/notes",
            json={"note": {"content": content[:25_000]}},
            headers={"From": from_email},
            missing=_no_incident(incident_id),
        )
        return dict(note)

    def notes(self, incident_id: str) -> list[dict[str, Any]]:
        rest = self._rest_client()
        found = self._call(
            f"notes of {incident_id}",
            rest.rget,
            f"/incidents/{incident_id}/notes",
            missing=_no_incident(incident_id),
        )
        return list(found)

    # --- Events API v2 -------------------------------------------------------------------

    @property
    def can_page(self) -> bool:
        return self._events is not None

    def trigger(
        self,
        summary: str,
        dedup_key: str,
        *,
        source: str = "runbook-bot",
        severity: str = "error",
        details: dict[str, Any] | None = None,
    ) -> str:
        if self._events is None:
            raise InvalidInput(
                "PagerDuty's Events API is not configured: set PAGERDUTY_ROUTING_KEY"
            )
        events = self._events
        return str(
            self._call(
                f"trigger {dedup_key}",
                events.trigger,
                summary[:1024],
                source,
                dedup_key=dedup_key[:DEDUP_KEY_MAX],
                severity=severity,
                custom_details=details or {},
            )
        )

    def resolve(self, dedup_key: str) -> None:
        if self._events is None:
            raise InvalidInput(
                "PagerDuty's Events API is not configured: set PAGERDUTY_ROUTING_KEY"
            )
        self._call(f"resolve {dedup_key}", self._events.resolve, dedup_key[:DEDUP_KEY_MAX])


def _no_incident(incident_id: str) -> str:
    return f"PagerDuty has no incident {incident_id}"
