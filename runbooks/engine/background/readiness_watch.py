"""Readiness on the leader: every runbook's checks every ``interval`` (schedules.yaml
``readiness:``, default 30 minutes), findings tracked like alerts.

- **The first** evaluation comes ``first_after`` (default 5 minutes) after a leader first
  starts on a new store, then one every ``interval``.
- **Once per interval, whatever the replicas.** The evaluation runs on the ``readiness`` leader
  lease, and the time of the last one is claimed in the store (compare-and-set, fenced by the
  lease's term), so two replicas, or a new leader, do not evaluate twice in one interval.
- **Opened once.** A finding not open before is opened: audited (``readiness.opened``), and an
  outbox event that ``ReadinessNotices`` turns into a line in the environment's ops channel and a
  low-urgency PagerDuty alert whose dedup key is the finding's key. Still open a ``reannounce``
  later (default a day): announced again, once. Gone from an evaluation: resolved (audited,
  posted, the PagerDuty alert resolved).
- Each evaluation is kept (``readiness:report``) for ``readiness.status`` and ``/metrics``,
  and audited (``readiness.checked``) with the replica that made it in the actor's name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbooks.engine.background.leases import LeaderLease
from runbooks.engine.background.outbox import QueuedConsumer
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.models import Actor, Event, Origin
from runbooks.engine.readiness import (
    ENVIRONMENT_WIDE,
    EVERY_ENVIRONMENT,
    Finding,
    ReadinessReport,
)

if TYPE_CHECKING:
    from runbooks.engine.config.schedules import ReadinessSchedule
    from runbooks.engine.engine import Engine
    from runbooks.engine.store.base import Store

_log = logging.getLogger(__name__)

LEASE_NAME = "readiness"
READINESS = Actor("readiness", "readiness watch", Origin.SCHEDULER)
LAST_KEY = "readiness:last"
OPEN_KEY = "readiness:open"
REPORT_KEY = "readiness:report"
EVENT_TYPES = ("readiness.opened", "readiness.reminded", "readiness.resolved")


@dataclass
class WatchTick:
    leader: bool = False
    evaluated: bool = False
    opened: list[str] = field(default_factory=list)
    reminded: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)


class ReadinessWatch:
    """Evaluate on the leader once per interval; open, re-announce and resolve findings."""

    def __init__(
        self,
        engine: Engine,
        schedule: ReadinessSchedule,
        *,
        owner: str | None = None,
        lease: LeaderLease | None = None,
    ) -> None:
        self.engine = engine
        self.schedule = schedule
        self.store = engine.store
        self.clock = engine.clock
        self.lease = lease or LeaderLease(
            engine.store, LEASE_NAME, owner or engine.owner, engine.clock
        )
        #: The watch as the audit names it: which replica evaluated (its lease owner).
        self.actor = Actor(READINESS.id, f"{READINESS.name} ({self.lease.owner})", READINESS.origin)

    def due(self) -> float:
        """When the next evaluation is due (now, if nothing was recorded yet)."""
        last = self.store.kv_get(LAST_KEY)
        return self.clock.now() if last is None else float(last["at"]) + self.schedule.interval

    def tick(self) -> WatchTick:
        done = WatchTick()
        term = self.lease.acquire()
        if term is None or not self.schedule.enabled:
            return done
        done.leader = True
        now = self.clock.now()
        last = self.store.kv_get(LAST_KEY)
        if last is None:  # a new installation: the first evaluation after ``first_after``
            seed = {"at": now - self.schedule.interval + self.schedule.first_after, "term": term}
            self.store.kv_insert(LAST_KEY, seed)
            return done
        if now - float(last["at"]) < self.schedule.interval:
            return done
        claim = {"at": now, "term": term, "owner": self.lease.owner}
        if not self.store.kv_swap(LAST_KEY, last, claim) or not self.lease.leads(term):
            return done  # another replica claimed this interval, or the lease moved on
        report = self.engine.readiness(actor=self.actor)
        done.evaluated = True
        self._track(report, now, done)
        self.store.kv_set(REPORT_KEY, report.to_doc())
        return done

    def _track(self, report: ReadinessReport, now: float, done: WatchTick) -> None:
        was: dict[str, Any] = dict(self.store.kv_get(OPEN_KEY) or {})
        still: dict[str, Any] = {}
        for finding in report.problems:
            entry = was.get(finding.key)
            if entry is None:
                still[finding.key] = {
                    **finding.to_doc(),
                    "opened_at": now,
                    "announced_at": now,
                }
                self._event("readiness.opened", finding, now, opened_at=now)
                done.opened.append(finding.key)
                continue
            still[finding.key] = dict(entry)
            if now - float(entry["announced_at"]) >= self.schedule.reannounce:
                still[finding.key]["announced_at"] = now
                self._event("readiness.reminded", finding, now, opened_at=entry["opened_at"])
                done.reminded.append(finding.key)
        ok = {f.key: f for f in report.findings if f.ok}
        for key, entry in was.items():
            if key in still:
                continue
            finding = ok.get(key) or Finding(
                str(entry["environment"]),
                str(entry["runbook"]),
                str(entry["check"]),
                str(entry["subject"]),
                True,
                "no longer found",
            )
            self._event("readiness.resolved", finding, now, opened_at=entry["opened_at"])
            done.resolved.append(key)
        self.store.kv_set(OPEN_KEY, still)

    def _event(self, kind: str, finding: Finding, now: float, *, opened_at: float) -> None:
        payload = {**finding.to_doc(), "opened_at": opened_at}
        self.engine.audit.record(
            kind,
            actor=self.actor,
            outcome="ok" if finding.ok else "not_ready",
            target={"environment": finding.environment, "runbook": finding.runbook},
            detail={"check": finding.check, "subject": finding.subject, "detail": finding.detail},
        )
        self.store.append_event(None, kind, payload, now)

    def open_findings(self) -> dict[str, Any]:
        return dict(self.store.kv_get(OPEN_KEY) or {})

    def last_report(self) -> dict[str, Any] | None:
        report = self.store.kv_get(REPORT_KEY)
        return dict(report) if report else None


@dataclass(frozen=True)
class WatchStatus:
    """What the readiness watch last found, for readers (``readiness.status``, /metrics):
    when the leader last evaluated (None: not yet), how many checks, and the open findings by
    key (each: environment, runbook, check, subject, detail, opened_at)."""

    last_evaluated_at: float | None
    checked: int
    open: dict[str, dict[str, Any]]


def watch_status(store: Store) -> WatchStatus:
    report = store.kv_get(REPORT_KEY)
    return WatchStatus(
        last_evaluated_at=float(report["at"]) if report else None,
        checked=int(report["checked"]) if report else 0,
        open={str(k): dict(v) for k, v in (store.kv_get(OPEN_KEY) or {}).items()},
    )


def open_for(store: Store, environment: str, runbook: str | None = None) -> list[dict[str, Any]]:
    """The last evaluation's open findings about ``environment`` (its own and the
    installation's), of ``runbook`` and the environment-wide checks (all, without one)."""
    found = dict(store.kv_get(OPEN_KEY) or {})
    return sorted(
        (
            dict(entry)
            for entry in found.values()
            if entry["environment"] in (environment, EVERY_ENVIRONMENT)
            and (runbook is None or entry["runbook"] in (runbook, ENVIRONMENT_WIDE))
        ),
        key=lambda e: (float(e["opened_at"]), str(e["key"])),
    )


def plan_warnings(store: Store, environment: str, runbook: str) -> list[str]:
    """A plan's warnings: the runbook's open findings here as of the last evaluation."""
    report = store.kv_get(REPORT_KEY)
    if not report:
        return []
    at = iso(float(report["at"]))
    return [
        f"not ready (readiness, evaluated {at}): {e['check']} · {e['subject']}: {e['detail']}"
        for e in open_for(store, environment, runbook)
    ]


def summary_line(store: Store, environment: str, *, now: float, interval: float) -> str:
    """``readiness: ready, checked 12m ago`` or ``readiness: 2 findings (…)`` for one
    environment, from the bot's last evaluation."""
    report = store.kv_get(REPORT_KEY)
    if not report:
        return (
            f"readiness: not evaluated yet (the bot evaluates every {format_duration(interval)}; "
            "`invoke readiness.check` checks now)"
        )
    ago = format_duration(max(0.0, now - float(report["at"])))
    found = open_for(store, environment)
    if not found:
        return f"readiness: ready, checked {ago} ago"
    named = "; ".join(f"{e['runbook']}: {e['subject']}" for e in found[:5])
    more = f"; +{len(found) - 5} more" if len(found) > 5 else ""
    return f"readiness: {len(found)} finding(s) ({named}{more}), checked {ago} ago"


#: ``alert(summary, dedup_key, details)`` and ``resolve(dedup_key)``: PagerDuty's Events API.
Alert = Callable[[str, str, dict[str, Any]], None]
Resolve = Callable[[str], None]


class ReadinessNotices(QueuedConsumer):
    """Readiness findings to people: a line in the environment's ops channel (a ``notice``
    event the Slack notifier posts) and a low-urgency PagerDuty alert per finding, resolved
    when the finding is. Each event is handled once (a mark in the store)."""

    def __init__(
        self, engine: Engine, *, alert: Alert | None = None, resolve: Resolve | None = None
    ) -> None:
        super().__init__()
        self.engine = engine
        self.alert, self.resolve = alert, resolve

    def wants(self, event: Event) -> bool:
        return event.type in EVENT_TYPES

    def deliver(self, event: Event) -> None:
        done_key = f"readiness:done:{event.id}"
        if self.engine.store.kv_get(done_key) is not None:
            return
        doc = event.payload
        dedup = f"runbook-bot:readiness:{doc['key']}"[:255]
        what = f"{doc['environment']} {doc['runbook']}: {doc['check']} ({doc['subject']})"
        if event.type == "readiness.resolved":
            text = f":white_check_mark: ready again: {what}: {doc['detail']}"
            if self.resolve is not None:
                self.resolve(dedup)
        else:
            since = (
                "" if event.type == "readiness.opened" else f" (open since {iso(doc['opened_at'])})"
            )
            text = f":warning: not ready{since}: {what}: {doc['detail']}"
            if self.alert is not None:
                self.alert(f"runbook-bot readiness: {what}: {doc['detail']}", dedup, doc)
        channel = self.engine.config.policy.slack.approvals_channel(str(doc["environment"]))
        self.engine.store.append_event(
            None, "notice", {"channel": channel, "text": text}, self.engine.clock.now()
        )
        self.engine.store.kv_set(done_key, {"at": self.engine.clock.now()})
