"""Alertmanager notifications → requests: parsing, label templates, the cooldown claim (repeats,
HA duplicates, threads), consecutive automatic requests that page instead, and the requests
made through the engine's one path under policy. On an injected clock; the store is SQLite."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from bot.webhooks.alertmanager import parse_notification
from runbooks.catalog import load_catalog
from runbooks.engine.background.outbox import OutboxFollower
from runbooks.engine.background.supervisor import Supervisor
from runbooks.engine.clock import FakeClock
from runbooks.engine.config.alerts import AlertRoute, AlertsFile
from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.engine import Engine
from runbooks.engine.errors import InvalidInput
from runbooks.engine.models import State
from runbooks.engine.requesters.alerts import (
    ALERTMANAGER,
    AlertIntake,
    AlertRequests,
    render,
    route_problems,
)
from tests.conftest import ROOT, EngineFactory
from tests.engine import world
from tests.support.people import ALICE

ROUTES = {
    "cooldown": "30m",
    "max_consecutive": 2,
    "streak_window": "6h",
    "routes": [
        {
            "alerts": ["KeyBroken", "KeySlow"],
            "runbook": "test.set",
            "params": {"environment": "{environment}", "keys": "{service}", "value": 3},
        }
    ],
}


@pytest.fixture(autouse=True)
def _fresh_world() -> None:
    world.reset()


def config(production_approvals: int | None = None) -> Config:
    base = load_config(ROOT / "config")
    policy = base.policy.model_dump()
    if production_approvals is not None:
        policy["rules"].insert(
            0,
            {
                "runbooks": "test.*",
                "environments": ["production"],
                "requesters": ["alerts"],
                "approvers": ["sre"],
                "approvals": production_approvals,
            },
        )
    return Config(
        base.directory,
        base.environments,
        PolicyFile.model_validate(policy),
        base.schedules,
        AlertsFile.model_validate(ROUTES),
    )


def notification(*alerts: dict[str, Any], status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "status": status,
            "receiver": "runbook-bot",
            "groupKey": '{}:{alertname="KeyBroken"}',
            "alerts": [
                {
                    "status": status,
                    "labels": {"alertname": "KeyBroken", "environment": "development", **a},
                    "annotations": {"summary": "error rate 7 %"},
                    "startsAt": "2027-01-01T00:00:00Z",
                    "fingerprint": "f" * 16,
                }
                for a in alerts
            ],
        }
    ).encode()


class Alerts:
    def __init__(self, make_engine: EngineFactory, cfg: Config, clock: FakeClock) -> None:
        self.clock = clock
        self.engine: Engine = make_engine(config=cfg, clock=clock)
        self.intake = AlertIntake(self.engine, cfg.alerts)
        self.pages: list[tuple[str, str]] = []
        self.requests = AlertRequests(
            self.engine, page=lambda summary, key, _doc: self.pages.append((summary, key))
        )
        self.follower = OutboxFollower(
            self.engine.store, clock, self.requests, name="alerts", owner="bot-1"
        )
        self.supervisor = Supervisor(self.engine, spawn=lambda _name, work: work())

    def send(self, body: bytes) -> dict[str, Any]:
        return self.intake.receive(parse_notification(body)).to_doc()

    def deliver(self, *, run: bool = False) -> None:
        """The leader's pass: request what was accepted (and run what needs no approval)."""
        assert self.follower.lead()
        self.follower.pass_once()
        if run:
            self.supervisor.sweep()

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [
            e.payload for e in self.engine.store.events_after(0, limit=10_000) if e.type == type_
        ]


@pytest.fixture
def alerts(make_engine: EngineFactory) -> Alerts:
    return Alerts(make_engine, config(), FakeClock(1_800_000_000.0))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "body is not JSON"),
        (b"[]", "body must be a JSON object"),
        (b'{"version": "3", "alerts": []}', "payload version '3' is not supported"),
        (b'{"version": "4"}', "payload: alerts: Field required"),
        (b'{"version": "4", "alerts": [{"labels": {}}]}', "payload: alerts.0.status"),
    ],
)
def test_a_body_that_is_not_a_version_4_payload_is_refused_with_the_reason(
    body: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_notification(body)
    assert message in refused.value.message


def test_labels_fill_the_parameters_and_a_missing_one_is_named() -> None:
    route = AlertRoute(
        alerts=["A"],
        runbook="rollback",
        params={"environment": "{environment}", "service": "{service}", "region": "{region?}"},
    )
    assert render(route, {"environment": "production", "service": "api"}) == {
        "environment": "production",
        "service": "api",
    }
    assert render(route, {"environment": "p", "service": "s", "region": "us-west-2"}) == {
        "environment": "p",
        "service": "s",
        "region": "us-west-2",
    }
    with pytest.raises(InvalidInput, match="label service missing"):
        render(route, {"environment": "production"})


def test_the_shipped_routes_map_the_spec_triggers_to_rollback() -> None:
    shipped = load_config(ROOT / "config").alerts
    for name in ("HighErrorRate", "HighLatencyP95", "HealthCheckFailing"):
        route = shipped.route(name)
        assert route is not None and route.runbook == "rollback"
    assert shipped.cooldown == 1800 and shipped.max_consecutive == 2 and shipped.require_auth
    assert route_problems(shipped, load_catalog()) == []
    broken = AlertsFile.model_validate(
        {"routes": [{"alerts": ["X"], "runbook": "rollback", "params": {"colour": "red"}}]}
    )
    (problem,) = route_problems(broken, load_catalog())
    assert "rollback has no parameter colour" in problem
    with pytest.raises(ValueError, match="alert 'X' is mapped twice"):
        AlertsFile.model_validate(
            {
                "routes": [
                    {"alerts": ["X"], "runbook": "rollback"},
                    {"alerts": ["X"], "runbook": "scale.pods"},
                ]
            }
        )


def test_repeats_and_ha_duplicates_request_once_per_cooldown(alerts: Alerts) -> None:
    first = alerts.send(notification({"service": "a"}))
    assert first["accepted"] == 1
    # Alertmanager repeats, and its HA twin sends the same group: all inside the cooldown.
    for _ in range(3):
        again = alerts.send(notification({"service": "a"}))
        assert again["accepted"] == 0 and again["suppressed"] == 1
        assert "cooldown until" in again["alerts"][0]["why"]
    # Another alert of the same route and target shares the claim; another target does not.
    other = alerts.send(notification({"service": "a", "alertname": "KeySlow"}))
    assert other["suppressed"] == 1
    alerts.deliver(run=True)  # test.set locks the environment: one at a time
    assert alerts.send(notification({"service": "b"}))["accepted"] == 1
    assert [e["params"]["keys"] for e in alerts.events("alert.request")] == ["a", "b"]
    alerts.deliver(run=True)
    executions = alerts.engine.list()
    assert len(executions) == 2
    assert all(e.requester == ALERTMANAGER for e in executions)
    assert all(e.state == State.SUCCEEDED for e in executions)  # development: no approvals
    assert {(str(e.trigger.kind), e.trigger.name) for e in executions if e.trigger} == {
        ("alert", "KeyBroken")
    }
    assert "alert KeyBroken firing (environment=development, service=a): error rate 7 %" in {
        e.reason for e in executions
    }
    alerts.deliver(run=True)  # a second pass requests nothing again
    assert len(alerts.engine.list()) == 2


def test_after_two_automatic_requests_in_a_row_it_pages_instead(alerts: Alerts) -> None:
    outcomes = []
    for _ in range(5):
        outcomes.append(alerts.send(notification({"service": "a"}))["alerts"][0]["outcome"])
        alerts.deliver(run=True)
        alerts.clock.advance(31 * 60)  # past the cooldown, within the streak window
    assert outcomes == ["accepted", "accepted", "escalated", "escalated", "escalated"]
    assert [e.state for e in alerts.engine.list()] == [State.SUCCEEDED] * 2
    # One escalation pages once and tells the channel once, however long the alert fires.
    assert [key for _, key in alerts.pages] == [
        'runbook-bot:auto:test.set:development:{"keys":"a","value":3}'
    ]
    assert "stopped automatic test.set" in alerts.pages[0][0]
    notices = [n["text"] for n in alerts.events("notice")]
    assert len([n for n in notices if "stopped automatic" in n]) == 1
    assert any("Paged on-call" in n and "A person decides" in n for n in notices)
    assert len(alerts.events("alert.escalate")) == 1
    # A quiet streak window later, automatic requests start again.
    alerts.clock.advance(7 * 3600)
    assert alerts.send(notification({"service": "a"}))["accepted"] == 1


def test_a_region_scoped_rollback_claims_its_cooldown_per_region(
    make_engine: EngineFactory,
) -> None:
    base = config()
    routes = AlertsFile.model_validate(
        {
            "routes": [
                {
                    "alerts": ["KeyBroken"],
                    "runbook": "rollback",
                    "params": {
                        "environment": "{environment}",
                        "service": "{service}",
                        "region": "{region?}",
                    },
                }
            ]
        }
    )
    cfg = Config(base.directory, base.environments, base.policy, base.schedules, routes)
    alerts = Alerts(make_engine, cfg, FakeClock(1_800_000_000.0))

    def send(**labels: str) -> dict[str, str]:
        doc = alerts.send(notification({"environment": "production", "service": "api", **labels}))
        return dict(doc["alerts"][0])

    east = send(region="us-east-1")
    assert (east["outcome"], east["target"]) == ("accepted", "rollback:production:api:us-east-1")
    # The other region's alert is its own target; a repeat of the first is suppressed.
    assert send(region="us-west-2")["outcome"] == "accepted"
    assert send(region="us-east-1")["outcome"] == "suppressed"
    # A whole-service alert is covered by the regions' rollbacks within their cooldown ...
    whole = send()
    assert whole["outcome"] == "suppressed"
    assert "rollback:production:api:us-east-1 requested" in whole["why"]
    alerts.clock.advance(31 * 60)
    # ... and after it, a whole-service rollback covers each region's alert.
    assert send()["outcome"] == "accepted"
    assert send(region="us-west-2")["outcome"] == "suppressed"
    assert [e["params"].get("region") for e in alerts.events("alert.request")] == [
        "us-east-1",
        "us-west-2",
        None,
    ]


def test_resolved_alerts_are_recorded_and_change_nothing(alerts: Alerts) -> None:
    done = alerts.send(notification({"service": "a"}, status="resolved"))
    assert done["resolved"] == 1 and done["accepted"] == 0
    assert alerts.events("alert.request") == []
    (row,) = [
        json.loads(r.body)
        for r in alerts.engine.store.iter_audit()
        if json.loads(r.body)["action"] == "alert.received"
    ]
    assert row["detail"]["alerts"][0]["outcome"] == "resolved"


def test_unmapped_and_unlabelled_alerts_are_ignored_with_the_reason(alerts: Alerts) -> None:
    done = alerts.send(
        notification({"alertname": "DiskFull"}, {"service": "x", "alertname": "KeySlow"}, {})
    )
    why = [(a["outcome"], a.get("why", "")) for a in done["alerts"]]
    assert why[0] == ("ignored", "no route in alerts.yaml")
    assert why[1][0] == "accepted"
    assert why[2] == ("ignored", "label service missing (the route's keys)")


def test_twenty_threads_of_duplicates_claim_once(alerts: Alerts) -> None:
    barrier = threading.Barrier(20)
    results: list[int] = []

    def burst() -> None:
        barrier.wait()
        for _ in range(10):
            results.append(alerts.send(notification({"service": "a"}))["accepted"])

    threads = [threading.Thread(target=burst) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 200 and sum(results) == 1
    assert len(alerts.events("alert.request")) == 1


def test_policy_decides_run_at_once_approval_card_or_refusal(make_engine: EngineFactory) -> None:
    gated = Alerts(make_engine, config(production_approvals=1), FakeClock(1_800_000_000.0))
    gated.send(notification({"service": "a"}))
    gated.send(notification({"service": "b", "environment": "production"}))
    gated.deliver()
    by_env = {e.environment: e for e in gated.engine.list()}
    assert by_env["development"].state == State.APPROVED
    assert by_env["production"].state == State.AWAITING_APPROVAL
    assert by_env["production"].required_approvals == 1
    gated.engine.approve(by_env["production"].id, actor=ALICE)
    assert gated.engine.get(by_env["production"].id).state == State.APPROVED


def test_a_request_policy_refuses_is_told_to_the_approvers(alerts: Alerts) -> None:
    # The shipped policy lets `alerts` request test.set in development only.
    alerts.send(notification({"service": "a", "environment": "production"}))
    alerts.deliver()
    assert alerts.engine.list() == []
    (notice,) = alerts.events("notice")
    assert notice["channel"] == "C0APPROVALS"
    assert "test.set was not requested" in notice["text"]
