"""Alertmanager notifications become runbook requests, under policy, at most once a cooldown.

``config/alerts.yaml`` maps alert names to a runbook and its parameters, filled from the
alert's labels (``"{service}"``; ``"{region?}"`` leaves the parameter out when the label is
missing). The spec's automatic rollback triggers ship mapped: ``HighErrorRate``,
``HighLatencyP95`` and ``HealthCheckFailing`` → ``rollback ENV --service S``.

``AlertIntake.receive`` is what ``POST /webhooks/alertmanager`` calls after authentication and
parsing (the wire format is the webhook's, ``bot/webhooks/alertmanager.py``); it is quick and
decides, per firing alert:

- **accepted**: the route's target (runbook, environment, service) is claimed for the
  cooldown (default 30 minutes) in the store, atomically, so repeats, Alertmanager's grouping
  and an HA pair's duplicate notifications, on any replica, claim it once. An
  ``alert.request`` event goes into the outbox; ``AlertRequests`` (an outbox consumer, on the
  leader) makes the request through the engine's one path as the policy person
  ``alertmanager``: policy decides whether it runs at once or posts an approval card.
- **suppressed**: the target was claimed less than a cooldown ago.
- **escalated**: the target had ``max_consecutive`` automatic requests in a row (each within
  ``streak_window`` of the last): no more rollbacks; an ``alert.escalate`` event pages (through
  PagerDuty where configured) and tells the approvals channel, once per escalation (later
  claims in the same streak say when it escalated and page no more).
- **ignored**: not mapped, or a label the route needs is missing (said why).

``resolved`` alerts are recorded and change nothing. Every notification is audited once
(``alert.received``) with what was decided for each alert.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbooks.engine.background.outbox import QueuedConsumer
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.alerts import AlertRoute, AlertsFile
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import ConfigError, InvalidInput, NeedsPerson, RunbookError
from runbooks.engine.models import Actor, Origin, Trigger, TriggerKind
from runbooks.engine.registry import Registry

if TYPE_CHECKING:
    from runbooks.engine.engine import Engine
    from runbooks.engine.models import Event

ALERTMANAGER = Actor("alertmanager", "Alertmanager", Origin.ALERTMANAGER)
CLAIM_KEY = "alert.claim.{}"
DONE_KEY = "alert.done.{}"
#: Claims of one target tried while other notifications (or replicas) claim it meanwhile.
CLAIM_TRIES = 20
_PLACEHOLDER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)(\??)\}")


def route_problems(alerts: AlertsFile, registry: Registry) -> list[str]:
    """Routes checked against the catalog: the runbook exists and takes the parameters."""
    problems = []
    for index, route in enumerate(alerts.routes):
        where = f"alerts.yaml: routes[{index}] ({', '.join(route.alerts)})"
        try:
            spec = registry.get(route.runbook)
        except RunbookError as exc:
            problems.append(f"{where}: {exc.message}")
            continue
        unknown = sorted(set(route.params) - set(spec.params.model_fields))
        if unknown:
            problems.append(
                f"{where}: {route.runbook} has no parameter {', '.join(unknown)}; it takes "
                f"{', '.join(spec.params.model_fields)}"
            )
    return problems


def suggestion_problems(config: Config, registry: Registry) -> list[str]:
    """PagerDuty services' suggested runbooks (environments.yaml) exist, and their services."""
    problems = []
    known = {spec.name for spec in registry}
    for name in config.environment_names():
        pagerduty = config.environment(name).pagerduty
        for service_id, service in (pagerduty.services if pagerduty else {}).items():
            where = f"environments.yaml: {name}.pagerduty.services.{service_id}"
            for runbook in service.suggest:
                if runbook not in known:
                    problems.append(
                        f"{where}.suggest: {runbook!r} is not in the catalog; known: "
                        f"{', '.join(sorted(known))}"
                    )
            services = config.environment(name).services
            if service.service is not None and service.service not in services:
                problems.append(
                    f"{where}.service: {service.service!r} is not a service of {name}; known: "
                    f"{', '.join(services) or 'none'}"
                )
    return problems


def require_valid_routes(config: Config, registry: Registry) -> None:
    """Raise ConfigError naming every route whose runbook or parameters are wrong, and every
    PagerDuty suggestion that names no runbook (the bot at start and ``config.check``)."""
    problems = route_problems(config.alerts, registry) + suggestion_problems(config, registry)
    if problems:
        raise ConfigError("\n".join(problems))


# --- what arrived ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as the intake needs it (the wire format is the webhook's:
    ``bot/webhooks/alertmanager.py``)."""

    status: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    starts_at: str = ""
    fingerprint: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class AlertBatch:
    """A notification: the alerts of one group, sent to one receiver."""

    alerts: list[Alert]
    receiver: str = ""
    group_key: str = ""
    status: str = ""


def render(route: AlertRoute, labels: dict[str, str]) -> dict[str, Any]:
    """The route's parameters with ``{label}`` filled in; InvalidInput names a missing label."""
    params: dict[str, Any] = {}
    for name, value in route.params.items():
        if not isinstance(value, str):
            params[name] = value
            continue
        missing: list[str] = []
        optional_missing = False

        def fill(match: re.Match[str], missing: list[str] = missing) -> str:
            nonlocal optional_missing
            label, optional = match.group(1), match.group(2)
            if label in labels:
                return labels[label]
            if optional:
                optional_missing = True
            else:
                missing.append(label)
            return ""

        text = _PLACEHOLDER.sub(fill, value)
        if missing:
            raise InvalidInput(f"label {', '.join(missing)} missing (the route's {name})")
        if optional_missing and not text:
            continue
        params[name] = text
    return params


# --- the intake ----------------------------------------------------------------------------


@dataclass
class Decision:
    alert: str
    outcome: str  # accepted | suppressed | escalated | ignored | resolved
    why: str = ""
    target: str = ""

    def to_doc(self) -> dict[str, str]:
        doc = {"alert": self.alert, "outcome": self.outcome}
        if self.why:
            doc["why"] = self.why
        if self.target:
            doc["target"] = self.target
        return doc


@dataclass
class Intake:
    decisions: list[Decision] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for d in self.decisions if d.outcome == outcome)

    def to_doc(self) -> dict[str, Any]:
        outcomes = ("accepted", "suppressed", "escalated", "ignored", "resolved")
        return {
            **{outcome: self.count(outcome) for outcome in outcomes},
            "alerts": [d.to_doc() for d in self.decisions],
        }


class AlertIntake:
    def __init__(self, engine: Engine, alerts: AlertsFile) -> None:
        self.engine = engine
        self.alerts = alerts
        self.store = engine.store
        self.clock = engine.clock

    def receive(self, notification: AlertBatch, *, source: str = "") -> Intake:
        done = Intake()
        for alert in notification.alerts:
            done.decisions.append(self._one(alert))
        self.engine.audit.record(
            "alert.received",
            actor=ALERTMANAGER,
            outcome=",".join(sorted({d.outcome for d in done.decisions})) or "empty",
            target={"receiver": notification.receiver, "source": source},
            detail={
                "group_key": notification.group_key[:500],
                "status": notification.status,
                "alerts": [d.to_doc() for d in done.decisions][:50],
            },
        )
        return done

    def _one(self, alert: Alert) -> Decision:
        name = alert.name or "(no alertname)"
        if alert.status == "resolved":
            return Decision(name, "resolved", "recorded; a resolved alert changes nothing")
        if alert.status != "firing":
            return Decision(name, "ignored", f"status {alert.status!r} is not firing")
        route = self.alerts.route(alert.name)
        if route is None:
            return Decision(name, "ignored", "no route in alerts.yaml")
        try:
            params = render(route, alert.labels)
        except InvalidInput as exc:
            return Decision(name, "ignored", exc.message)
        environment = str(params.get("environment", ""))
        if not any(fnmatch.fnmatchcase(environment, p) for p in route.environments):
            return Decision(name, "ignored", f"environment {environment!r} is not routed")
        # What the cooldown is per: the service where the runbook names one (a rollback of
        # api), and its region where the request names one (a rollback of api in us-east-1
        # leaves us-west-2's alert free); else the whole request.
        covering: list[str] = []
        if "service" in params:
            service = f"{route.runbook}:{environment}:{params['service']}"
            region = params.get("region")
            target = f"{service}:{region}" if region else service
            # A rollback of the whole service covers each region's, and the other way round.
            covering = (
                [service] if region else [f"{service}:{r}" for r in self._regions(environment)]
            )
        else:
            rest = {k: v for k, v in sorted(params.items()) if k != "environment"}
            target = f"{route.runbook}:{environment}:" + json.dumps(rest, separators=(",", ":"))
        return self._claim(alert, route, params, target, covering)

    def _regions(self, environment: str) -> list[str]:
        try:
            return list(self.engine.config.environment(environment).regions)
        except RunbookError:
            return []

    def _covered(self, covering: list[str], now: float) -> tuple[str, dict[str, Any]] | None:
        """A claim within the cooldown of a target that covers this one (service, region)."""
        for other in covering:
            claim = self.store.kv_get(CLAIM_KEY.format(other))
            if claim is not None and now - float(claim["at"]) < self.alerts.cooldown:
                return other, claim
        return None

    def _claim(
        self,
        alert: Alert,
        route: AlertRoute,
        params: dict[str, Any],
        target: str,
        covering: list[str] | None = None,
    ) -> Decision:
        key = CLAIM_KEY.format(target)
        cfg = self.alerts
        for _ in range(CLAIM_TRIES):
            now = self.clock.now()
            covered = self._covered(covering or [], now)
            if covered is not None:
                other, claim = covered
                return Decision(
                    alert.name,
                    "suppressed",
                    f"{other} {claim['state']} {format_duration(now - float(claim['at']))} "
                    f"ago; cooldown until {iso(float(claim['at']) + cfg.cooldown)}",
                    target,
                )
            previous = self.store.kv_get(key)
            if previous is not None and now - float(previous["at"]) < cfg.cooldown:
                until = float(previous["at"]) + cfg.cooldown
                return Decision(
                    alert.name,
                    "suppressed",
                    f"{previous['state']} {format_duration(now - float(previous['at']))} ago; "
                    f"cooldown until {iso(until)}",
                    target,
                )
            in_streak = previous is not None and now - float(previous["at"]) <= (cfg.streak_window)
            streak = int(previous["streak"]) if previous is not None and in_streak else 0
            state = "escalated" if streak >= cfg.max_consecutive else "requested"
            # Paged already in this streak: say so again, page and notify once.
            repeat = state == "escalated" and in_streak and previous["state"] == "escalated"
            claim = {
                "at": now,
                "state": state,
                "streak": streak if state == "escalated" else streak + 1,
                "alert": alert.name,
                "fingerprint": alert.fingerprint,
                "escalated_at": previous.get("escalated_at", now) if repeat else now,
            }
            won = (
                self.store.kv_insert(key, claim)
                if previous is None
                else self.store.kv_swap(key, previous, claim)
            )
            if not won:
                continue  # another notification (or replica) claimed it first: look again
            payload = {
                "alert": alert.name,
                "labels": dict(alert.labels),
                "summary": alert.annotations.get("summary")
                or alert.annotations.get("description", ""),
                "fingerprint": alert.fingerprint,
                "starts_at": alert.starts_at,
                "runbook": route.runbook,
                "params": params,
                "target": target,
                "streak": claim["streak"],
            }
            if repeat:
                return Decision(
                    alert.name,
                    "escalated",
                    f"escalated at {iso(float(claim['escalated_at']))} and paged then; no more "
                    f"automatic {route.runbook} requests for {target} until "
                    f"{format_duration(cfg.streak_window)} pass quietly",
                    target,
                )
            if state == "escalated":
                self.store.append_event(None, "alert.escalate", payload, now)
                return Decision(
                    alert.name,
                    "escalated",
                    f"{streak} automatic {route.runbook} requests in a row for {target}; "
                    "no more until a person looks: paged",
                    target,
                )
            self.store.append_event(None, "alert.request", payload, now)
            return Decision(alert.name, "accepted", f"{route.runbook} requested", target)
        return Decision(alert.name, "suppressed", "claimed by another notification", target)


# --- the requests (an outbox consumer, on the leader) --------------------------------------


def _reason(payload: dict[str, Any]) -> str:
    labels = payload.get("labels") or {}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname")
    summary = f": {payload['summary']}" if payload.get("summary") else ""
    return f"alert {payload['alert']} firing ({shown}){summary}"[:500]


class AlertRequests(QueuedConsumer):
    """Turns ``alert.request`` events into requests, ``alert.escalate`` into pages and
    notices. Each event is handled once (a mark in the store after it is done)."""

    def __init__(
        self,
        engine: Engine,
        *,
        kick: Any = None,
        page: Any = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.kick = kick
        #: ``page(summary, dedup_key, details)``: the PagerDuty adapter's trigger, if any.
        self.page = page

    def wants(self, event: Event) -> bool:
        return event.type in ("alert.request", "alert.escalate")

    def deliver(self, event: Event) -> None:
        done_key = DONE_KEY.format(event.id)
        if self.engine.store.kv_get(done_key) is not None:
            return
        handle = self._request if event.type == "alert.request" else self._escalate
        self.engine.store.kv_set(done_key, handle(event))

    def _notice(self, environment: str, text: str) -> None:
        channel = self.engine.config.policy.slack.approvals_channel(environment)
        self.engine.store.append_event(
            None, "notice", {"channel": channel, "text": text}, self.engine.clock.now()
        )

    def _request(self, event: Event) -> dict[str, Any]:
        from runbooks.engine.lifecycle.requests import Request

        payload = event.payload
        environment = str(payload["params"].get("environment", ""))
        try:
            result = self.engine.request(
                Request(
                    runbook=str(payload["runbook"]),
                    params=dict(payload["params"]),
                    actor=ALERTMANAGER,
                    reason=_reason(payload),
                    trigger=Trigger(
                        TriggerKind.ALERT,
                        str(payload["alert"]),
                        str(payload["target"]),
                        self.engine.clock.now(),
                    ),
                    assume_yes=True,
                    # An automatic run is never silent: its card (progress, result) goes to
                    # the environment's approvals channel even when it needs no approval.
                    channel=self.engine.config.policy.slack.approvals_channel(environment),
                )
            )
        except NeedsPerson as exc:
            # What comes next needs a person (a rollback after a rollback): page, once per
            # target (the dedup key), instead of acting.
            paged = self.page is not None
            if self.page is not None:
                self.page(
                    f"runbook-bot did not roll back automatically: {exc.message}",
                    f"runbook-bot:auto:{payload['target']}",
                    {**payload, "refused": exc.message},
                )
            self._notice(
                environment,
                f":rotating_light: alert {payload['alert']} ({payload['target']}): "
                f"{payload['runbook']} was not requested: {exc.message}. "
                + ("Paged on-call." if paged else "PagerDuty is not configured: nobody was paged."),
            )
            return {"refused": exc.message, "paged": paged}
        except RunbookError as exc:
            self._notice(
                environment,
                f":rotating_light: alert {payload['alert']} ({payload['target']}): "
                f"{payload['runbook']} was not requested: {exc.message}",
            )
            return {"refused": exc.message}
        execution = result.execution
        if execution is None:
            return {"outcome": str(result.outcome)}
        if self.kick is not None:
            self.kick()
        return {"execution_id": execution.id, "state": str(execution.state)}

    def _escalate(self, event: Event) -> dict[str, Any]:
        payload = event.payload
        environment = str(payload["params"].get("environment", ""))
        summary = (
            f"runbook-bot stopped automatic {payload['runbook']} of {payload['target']} after "
            f"{payload['streak']} in a row: alert {payload['alert']} still firing"
        )
        paged = False
        if self.page is not None:
            self.page(summary, f"runbook-bot:auto:{payload['target']}", payload)
            paged = True
        self._notice(
            environment,
            f":rotating_light: {summary}. "
            + ("Paged on-call. " if paged else "PagerDuty is not configured: nobody was paged. ")
            + "A person decides what next.",
        )
        return {"escalated": True, "paged": paged}
