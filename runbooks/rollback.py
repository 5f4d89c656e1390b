"""``rollback``: undo a bad release, like ``kubectl rollout undo``, then wait and check health.

By default every region where the environment runs the service (the active region first),
since a bad release reached them all; ``--region`` narrows it. Blue-green services roll back
by pointing their Service at the previous colour.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.config.environments import EnvironmentConfig, ServiceConfig
from runbooks.engine.errors import InvalidInput, NeedsPerson, Refused, RunbookError, StepFailed
from runbooks.engine.params import RegionalParams
from runbooks.engine.plan import PastRun, PlanContext, PlanDraft, RunContext, Step
from runbooks.engine.readiness import Observation, observe, readiness_check
from runbooks.engine.registry import runbook
from runbooks.interfaces import (
    GitOpsApp,
    InfrastructureError,
    KubeOps,
    MetricsOps,
    Revision,
    infrastructure,
)
from runbooks.kit.gitops import GitOpsPlan, find_owner, owned_words, plan_owned, unfollowed
from runbooks.kit.kube import KubeStep, kube_for, rollout_regions, service_config, service_name

POLL_S = 0.2


class RollbackParams(RegionalParams):
    service: str = Field("api", description="service to roll back (default api)")
    to_revision: int | None = Field(
        None, ge=1, description="revision to return to (default: the one before the current)"
    )


class HistoryParams(RegionalParams):
    service: str = Field("api", description="service whose history to show (default api)")


@dataclass(frozen=True, kw_only=True)
class UndoDeployment(KubeStep, kind="kube.undo"):
    """Return a deployment to an earlier ReplicaSet's template, then wait for it to be healthy.

    The target is named by ReplicaSet, not by revision number: an undo renumbers revisions
    (revision 2 becomes 4), and a resumed step must still recognise its own effect.
    """

    deployment: str
    service: str
    from_revision: int
    from_replicaset: str
    from_images: str
    to_revision: int
    to_replicaset: str
    to_images: str
    timeout: float = 300.0
    #: Set when the target is a release a rollback moved away from (asked for by revision):
    #: the plan says so in words.
    redeploys: str = ""

    def describe(self) -> str:
        return (
            f"roll back deployment {self.deployment} in {self.environment} ({self.region}): "
            f"revision {self.from_revision} ({self.from_images}) → revision "
            f"{self.to_revision} ({self.to_images})"
            + (f"; this RE-DEPLOYS {self.to_images}, {self.redeploys}" if self.redeploys else "")
        )

    def _go_to(self, ctx: RunContext, replicaset: str) -> str:
        kube = self.kube(ctx)
        target = _revision_of(kube.revisions(self.namespace, self.deployment), replicaset)
        if target is None:
            raise StepFailed(
                f"replica set {replicaset} of {self.deployment} ({self.region}) "
                "no longer exists; nothing to return to"
            )
        if kube.deployment(self.namespace, self.deployment).template == target.template:
            return f"{self.region}: already at {replicaset} ({target.image_text()})"
        kube.undo(self.namespace, self.deployment, target.number)
        return f"{self.region}: patched {self.deployment} to {replicaset} ({target.image_text()})"

    def run(self, ctx: RunContext) -> str | None:
        return self._go_to(ctx, self.to_replicaset)

    def wait(self, ctx: RunContext, deadline: float) -> None:
        _wait_healthy(ctx, self, deadline)

    def verify(self, ctx: RunContext) -> bool:
        kube = self.kube(ctx)
        target = _revision_of(kube.revisions(self.namespace, self.deployment), self.to_replicaset)
        state = kube.deployment(self.namespace, self.deployment)
        return (
            target is not None
            and state.template == target.template
            and state.available >= state.replicas
        )

    def undo(self, ctx: RunContext) -> str | None:
        output = self._go_to(ctx, self.from_replicaset)
        kube = self.kube(ctx)
        kube.wait_rollout(
            self.namespace, self.deployment, timeout=self.timeout, check=ctx.check_cancelled
        )
        return output


def template_changes(current: dict[str, Any], target: dict[str, Any]) -> list[str]:
    """What a rollback changes in the pod template besides images, per container: resources,
    environment variable names, probes, ports (an undo of a resources change shows only
    images otherwise, so it looked like a no-op)."""

    def containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
        spec = template.get("spec") or {}
        return {c.get("name", "?"): c for c in spec.get("containers") or []}

    def flat(resources: dict[str, Any] | None) -> dict[str, str]:
        return {
            f"{kind}.{key}": str(value)
            for kind, values in (resources or {}).items()
            for key, value in (values or {}).items()
        }

    now, then = containers(current), containers(target)
    lines: list[str] = []
    for name in sorted(now.keys() | then.keys()):
        if name not in then:
            lines.append(f"container {name} removed")
            continue
        if name not in now:
            lines.append(f"container {name} added")
            continue
        before, after = now[name], then[name]
        parts = []
        a, b = flat(before.get("resources")), flat(after.get("resources"))
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                parts.append(f"{key} {a.get(key, 'unset')} → {b.get(key, 'unset')}")
        env_a = {e.get("name") for e in before.get("env") or []}
        env_b = {e.get("name") for e in after.get("env") or []}
        parts += [f"env +{n}" for n in sorted(str(n) for n in env_b - env_a)]
        parts += [f"env -{n}" for n in sorted(str(n) for n in env_a - env_b)]
        changed_env = sorted(
            str(e.get("name"))
            for e in after.get("env") or []
            if e.get("name") in env_a and e not in (before.get("env") or [])
        )
        parts += [f"env {n} changed" for n in changed_env]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if before.get(probe) != after.get(probe):
                parts.append(f"{probe} changed")
        if before.get("ports") != after.get("ports"):
            parts.append("ports changed")
        if parts:
            lines.append(f"{name}: {', '.join(parts)}")
    return lines


@dataclass(frozen=True)
class RolledBack:
    """A release a rollback moved away from, and what is known of that rollback."""

    revision: Revision
    #: The revision that deployed an earlier template over it (it has ``earlier`` numbers).
    by: Revision
    #: runbook-bot's own run that did it, when it was one.
    run: PastRun | None

    def words(self) -> str:
        if self.run is not None:
            at = iso(self.run.ended_at) if self.run.ended_at is not None else "an unknown time"
            who = f" ({self.run.requester})" if self.run.requester else ""
            return f"the release rolled back at {at} by {self.run.id}{who}"
        return (
            f"the release rolled back outside runbook-bot (revision {self.by.number} "
            f"re-deployed revision {max(self.by.earlier)}'s template over it)"
        )


def rolled_back(
    revisions: list[Revision], runs: list[PastRun], *, environment: str, region: str
) -> dict[int, RolledBack]:
    """The revisions that a rollback (ours, or ``kubectl rollout undo`` by hand) moved away
    from, by number, read from the cluster's own history: a ReplicaSet deployed again keeps
    its former numbers in ``revision-history``, so every revision numbered between a former
    number and the next one was replaced by an older release. Our finished rollback runs
    (newest first) say when and by whom, where they did it."""
    found: dict[int, RolledBack] = {}
    for again in revisions:
        numbers = sorted(again.earlier)
        if not numbers:
            continue
        for low, high in zip(numbers, [*numbers[1:], again.number], strict=True):
            for moved in revisions:
                if low < moved.number < high and moved.number not in found:
                    found[moved.number] = RolledBack(
                        moved, again, _our_run(runs, moved, environment, region)
                    )
    return found


def _our_run(runs: list[PastRun], moved: Revision, environment: str, region: str) -> PastRun | None:
    for run in runs:  # newest first
        if run.runbook != "rollback" or run.environment != environment:
            continue
        for step in run.steps:
            args = step.get("args") or {}
            if (
                step.get("kind") == UndoDeployment.kind
                and args.get("region") == region
                and args.get("from_replicaset") == moved.replicaset
            ):
                return run
    return None


def _revision_of(revisions: list[Revision], replicaset: str) -> Revision | None:
    return next((r for r in revisions if r.replicaset == replicaset), None)


def _wait_healthy(ctx: RunContext, step: UndoDeployment, deadline: float) -> None:
    """Rollout complete (watched), then every replica ready behind the service."""
    kube = step.kube(ctx)
    left = max(1.0, deadline - ctx.clock.now())
    state = kube.wait_rollout(
        step.namespace, step.deployment, timeout=left, check=ctx.check_cancelled
    )
    ctx.note(
        f"{step.region}: rollout complete, {state.available}/{state.replicas} available "
        f"({state.image_text()})"
    )
    # Healthy means the service's endpoints are the target ReplicaSet's pods (named
    # ``<replica set>-<suffix>``, as the ReplicaSet controller names them), all ready: old
    # pods still behind the service would make any count of ready endpoints look fine.
    prefix = step.to_replicaset + "-"
    while True:
        ready, not_ready = kube.endpoints(step.namespace, step.service)
        ours = [p for p in ready if p.startswith(prefix)]
        others = [p for p in ready if not p.startswith(prefix)]
        if len(ours) >= state.replicas and not not_ready and not others:
            ctx.note(
                f"{step.region}: service {step.service} has {len(ours)} ready endpoints, all "
                f"pods of {step.to_replicaset}"
            )
            return
        if ctx.clock.now() >= deadline:
            raise StepFailed(
                f"service {step.service} ({step.region}) has {len(ours)} ready endpoints of "
                f"{step.to_replicaset} (wanted {state.replicas}), {len(others)} of other "
                f"replica sets ({', '.join(others[:3]) or 'none'}) and {len(not_ready)} unready "
                "after the rollout"
            )
        ctx.check_cancelled()
        ctx.clock.sleep(POLL_S)


@dataclass(frozen=True, kw_only=True)
class SwitchColor(KubeStep, kind="kube.switch_color"):
    """Point a blue-green service at another colour and check its endpoints."""

    service: str
    label: str
    from_color: str
    from_images: str
    to_color: str
    to_deployment: str
    to_images: str
    timeout: float = 120.0
    poll_interval = POLL_S

    def describe(self) -> str:
        return (
            f"switch service {self.service} in {self.environment} ({self.region}) from "
            f"{self.from_color} ({self.from_images}) to {self.to_color} ({self.to_images})"
        )

    def _switch(self, ctx: RunContext, color: str) -> str:
        kube = self.kube(ctx)
        selector = kube.service_selector(self.namespace, self.service)
        if selector.get(self.label) == color:
            return f"{self.service} already selects {color}"
        kube.set_service_selector(self.namespace, self.service, {**selector, self.label: color})
        return f"{self.service} now selects {self.label}={color}"

    def run(self, ctx: RunContext) -> str | None:
        return self._switch(ctx, self.to_color)

    def verify(self, ctx: RunContext) -> bool:
        kube = self.kube(ctx)
        if kube.service_selector(self.namespace, self.service).get(self.label) != self.to_color:
            return False
        ready, _ = kube.endpoints(self.namespace, self.service)
        return bool(ready) and all(p.startswith(self.to_deployment + "-") for p in ready)

    def undo(self, ctx: RunContext) -> str | None:
        return self._switch(ctx, self.from_color)


@dataclass(frozen=True, kw_only=True)
class WatchSignals(Step, kind="rollback.watch_signals"):
    """After the rollback, the spec's trigger signals stay healthy for a settle time.

    Every ``interval`` for ``settle`` it asks Prometheus, per region, for the service's error
    rate, p95 response time and failing health probes, over the traffic served since the
    rollback finished: the queries' ``{window}`` is the time since then, and the first sample
    waits ``min_window`` (two scrapes at least). Healthy means every sample below its
    trigger (health: fewer than ``failing_checks`` failing samples in a row). No data, NaN or
    a Prometheus error is never healthy: the step fails "unverified". A failure keeps the
    rollback: rolling forward would return to the release that was just rolled back.
    """

    environment: str
    service: str
    regions: list[str]
    #: One per signal: name, query (``{region}`` and ``{window}`` still to replace), trigger,
    #: unit.
    signals: list[dict[str, Any]]
    failing_checks: int
    settle: float
    interval: float
    #: The first sample's window: the time since the rollback finished, when it is taken.
    min_window: float = 0.0
    #: ``fail`` or ``ask`` (the gate's ``unverified``) and how long an answer may take.
    unverified: str = "fail"
    answer_within: float = 900.0
    timeout: float = 0.0  # run() does the watching; the engine's wait has nothing left
    irreversible_reason = "a check: it changes nothing"
    keeps_done_on_failure = (
        "a failed check after a rollback does not roll forward to the release it rolled back; "
        "look at the signals and decide by hand (`rollback.history`, `rollback --to-revision`)"
    )

    def describe(self) -> str:
        triggers = ", ".join(
            f"{s['name']} below {_show(s['trigger'], s['unit'])}"
            if s["unit"] != "probes"
            else f"fewer than {self.failing_checks} failing health checks in a row"
            for s in self.signals
        )
        return (
            f"watch {self.service} in {self.environment} ({', '.join(self.regions)}) for "
            f"{format_duration(self.settle)} in Prometheus: {triggers}, over the traffic "
            f"served since the rollback finished (first sample after "
            f"{format_duration(self.min_window)}); no data is not healthy"
            + (
                f" (then it asks: healthy or failed, within {format_duration(self.answer_within)})"
                if self.unverified == "ask"
                else ""
            )
        )

    def _unverified(self, ctx: RunContext, why: str) -> None:
        """No signal: fail, or ask people and go by their answer (a note says whose)."""
        if self.unverified != "ask":
            raise StepFailed(f"unverified: {why}; a rollback is not healthy without its signals")
        answer = ctx.ask(
            f"unverified: {why}. Is {self.service} in {self.environment} healthy after the "
            "rollback? Look at its dashboards, then answer healthy or failed",
            ("healthy", "failed"),
            self.answer_within,
        )
        if answer is None:
            raise StepFailed(
                f"unverified: {why}; nobody answered within "
                f"{format_duration(self.answer_within)}, and a rollback is not healthy without "
                "its signals"
            )
        if answer.choice != "healthy":
            raise StepFailed(f"unverified: {why}; {answer.said()}")
        ctx.note(f"unverified: {why}; {answer.said()}, so it passes on their word")

    def run(self, ctx: RunContext) -> str | None:
        metrics = infrastructure(ctx).metrics(self.environment)
        worst: dict[tuple[str, str], float] = {}
        in_a_row: dict[str, int] = {}
        longest: dict[str, int] = {}
        started = ctx.clock.now()  # the rollback finished: the previous step verified it
        while (waited := ctx.clock.now() - started) < self.min_window:
            ctx.progress(
                f"waiting for {format_duration(self.min_window)} of traffic after the rollback "
                "before the first sample"
            )
            ctx.check_cancelled()
            ctx.clock.sleep(min(self.interval, self.min_window - waited))
        samples = 0
        while True:
            samples += 1
            # Only what was served since the rollback finished (whole seconds, rounded down).
            window = f"{max(1, int(ctx.clock.now() - started))}s"
            for region in self.regions:
                for signal in self.signals:
                    name, unit = str(signal["name"]), str(signal["unit"])
                    query = (
                        str(signal["query"]).replace("{region}", region).replace("{window}", window)
                    )
                    unread: str | None = None
                    try:
                        value = metrics.query(query)
                    except InfrastructureError as exc:
                        value, unread = None, f"{name} in {region} could not be read ({exc})"
                    if value is None or math.isnan(value):
                        self._unverified(
                            ctx, unread or f"no data for {name} in {region} (query {query})"
                        )
                        return None
                    key = (region, name)
                    worst[key] = max(worst.get(key, value), value)
                    if unit == "probes":
                        in_a_row[region] = in_a_row.get(region, 0) + 1 if value > 0 else 0
                        longest[region] = max(longest.get(region, 0), in_a_row[region])
                        if in_a_row[region] >= self.failing_checks:
                            raise StepFailed(
                                f"{region}: health checks of {self.service} failing in "
                                f"{in_a_row[region]} samples in a row "
                                f"{format_duration(ctx.clock.now() - started)} after the "
                                f"rollback (trigger {self.failing_checks}): the release rolled "
                                "back to is unhealthy too"
                            )
                    elif value >= float(signal["trigger"]):
                        raise StepFailed(
                            f"{region}: {name} {_show(value, unit)} "
                            f"{format_duration(ctx.clock.now() - started)} after the rollback, "
                            f"at or above the trigger {_show(float(signal['trigger']), unit)}: "
                            "the release rolled back to is unhealthy too"
                        )
            elapsed = ctx.clock.now() - started
            ctx.progress(
                f"signals healthy for {format_duration(elapsed)} of "
                f"{format_duration(self.settle)} ({samples} sample(s))"
            )
            if elapsed >= self.settle:
                break
            ctx.check_cancelled()
            ctx.clock.sleep(min(self.interval, self.settle - elapsed))
        for region in self.regions:
            ctx.note(
                f"{region}: healthy for {format_duration(self.settle)} ({samples} samples): "
                + ", ".join(
                    f"{s['name']}: longest failing run {longest.get(region, 0)} sample(s) "
                    f"(trigger {self.failing_checks} in a row)"
                    if s["unit"] == "probes"
                    else f"{s['name']} at most {_show(worst[region, s['name']], s['unit'])} "
                    f"(trigger {_show(float(s['trigger']), s['unit'])})"
                    for s in self.signals
                )
            )
        return None


def _show(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value * 100:.2f} %".replace(".00 %", " %")
    if unit == "seconds":
        return f"{value * 1000:.0f} ms"
    return f"{value:g} failing"


def _watch_step(
    env: EnvironmentConfig, params: RollbackParams, regions: list[str]
) -> WatchSignals | None:
    gate, prometheus = env.rollback_gate, env.prometheus
    if gate is None or prometheus is None:
        return None
    triggers = env.rollback_triggers

    def query(text: str) -> str:
        # {region} and {window} stay placeholders: the step fills them per region and sample.
        return prometheus.render(
            text, environment=params.environment, region="{region}", service=params.service
        )

    return WatchSignals(
        environment=params.environment,
        service=params.service,
        regions=regions,
        signals=[
            {
                "name": "error rate",
                "query": query(prometheus.service_error_rate_query),
                "trigger": triggers.error_rate,
                "unit": "ratio",
            },
            {
                "name": "p95 response time",
                "query": query(prometheus.latency_p95_query),
                "trigger": triggers.p95_ms / 1000,
                "unit": "seconds",
            },
            {
                "name": "failing health checks",
                "query": query(prometheus.health_failures_query),
                "trigger": 1,
                "unit": "probes",
            },
        ],
        failing_checks=triggers.failing_health_checks,
        settle=gate.settle,
        interval=gate.interval,
        min_window=gate.min_window,
        unverified=gate.unverified,
        answer_within=gate.answer_within,
    )


@runbook("rollback", params=RollbackParams, lock="{environment}:{service}")
def rollback(ctx: PlanContext, params: RollbackParams) -> PlanDraft:
    """Roll a service back to its previous release (or --to-revision N), in every region.

    Like `kubectl rollout undo`, then waits like `kubectl rollout status` and checks that every
    replica is ready behind the service. Blue-green services switch to the previous colour.
    A deployment Argo CD or Flux owns gets its application's automated sync suspended first
    and a revert branch in Git after; sync comes back once Git matches (docs/gitops.md).
    """
    env = ctx.env
    service = service_config(env, params.environment, params.service)
    steps: list[Step] = []
    notes: list[str] = []
    gitops = GitOpsPlan()
    regions = rollout_regions(env, params.region)
    for region in regions:
        kube = kube_for(ctx, params.environment, region)
        if service.strategy == "blue-green":
            steps.append(_plan_blue_green(kube, params, service, region))
            continue
        step, more = _plan_undo(ctx, kube, params, service, region)
        if step is not None:
            steps.append(step)
            app = find_owner(kube, service.namespace, service.deployment)
            if app is not None:
                revisions = kube.revisions(service.namespace, service.deployment)
                now = _revision_of(revisions, step.from_replicaset)
                then = _revision_of(revisions, step.to_replicaset)
                plan_owned(
                    ctx,
                    kube,
                    gitops,
                    app=app,
                    environment=params.environment,
                    region=region,
                    namespace=service.namespace,
                    deployment=service.deployment,
                    from_images=now.images if now is not None else {},
                    to_images=then.images if then is not None else {},
                    limit=env.gitops.suspend_limit,
                )
        notes.extend(more)
    summary = f"roll back {params.service} in {params.environment} ({len(steps)} region(s))"
    # Sync off everywhere before the first undo; the revert once the cluster is rolled back.
    steps = [*gitops.suspends, *steps, *gitops.reverts.values()]
    notes.extend(gitops.notes)
    watch = _watch_step(env, params, list(regions)) if steps else None
    if watch is not None:
        steps.append(watch)
    return PlanDraft(steps=steps, summary=summary, notes=notes)


def _plan_undo(
    ctx: PlanContext, kube: KubeOps, params: RollbackParams, service: ServiceConfig, region: str
) -> tuple[UndoDeployment | None, list[str]]:
    """The undo step for one region, and the plan's notes about it.

    Unlike ``kubectl rollout undo`` (the revision before the current one), the default target
    skips releases a rollback moved away from: after 1.4.2 → 1.4.1, "the previous revision"
    is 1.4.2 again, the release just rolled back. Such a release is re-deployed only when a
    person asks for it by revision, and the plan says so. An automatic request (an alert)
    never rolls back a release that a rollback put there: it is refused and the requester
    pages (``NeedsPerson``).
    """
    name, namespace = service.deployment, service.namespace
    state = kube.deployment(namespace, name)
    if state.paused:
        raise Refused(
            f"deployment {namespace}/{name} ({region}) is paused: a rollout is in "
            "progress and was paused; resume or finish it before rolling back"
        )
    revisions = kube.revisions(namespace, name)
    current = next((r for r in revisions if r.template == state.template), None)
    if current is None:
        raise Refused(
            f"{namespace}/{name} ({region}): no replica set matches the current "
            "template; wait for the controller and try again"
        )
    moved = rolled_back(revisions, ctx.history(), environment=params.environment, region=region)
    notes: list[str] = []
    redeploys = ""
    if ctx.automatic and current.earlier:
        before = next((m for m in moved.values() if m.by.number == current.number), None)
        # Not "the release before it": the release that rollback replaced is the newer one
        # (1.4.2 before 1.4.1 went back on); the release before 1.4.1 is older still.
        rolled = (
            f"; the release that rollback replaced, {before.revision.image_text()} (revision "
            f"{before.revision.number}), is {before.words()}"
            if before is not None
            else ""
        )
        raise NeedsPerson(
            f"{name} in {params.environment} ({region}) is still failing after rolling back to "
            f"{current.image_text()} (revision {current.number}){rolled}: no earlier good "
            "release is known, and an automatic rollback does not go further back on its own",
            hint=(
                f"a person decides: `rollback.history {params.environment}`, then "
                f"`rollback {params.environment} --to-revision N` (or a fix forward)"
            ),
        )
    if params.to_revision is not None:
        target = next((r for r in revisions if r.number == params.to_revision), None)
        if target is None:
            raise InvalidInput(
                f"--to-revision {params.to_revision}: {name} in {params.environment} ({region}) "
                f"has revisions {', '.join(str(r.number) for r in revisions)}; see "
                f"`rollback.history {params.environment}`"
            )
        if target.number in moved:
            redeploys = moved[target.number].words()
            notes.append(
                f"{region}: WARNING: revision {target.number} re-deploys "
                f"{target.image_text()}, {redeploys}"
            )
    else:
        earlier = [r for r in revisions if r.number < current.number]
        good = [r for r in earlier if r.number not in moved]
        notes += [
            f"{region}: skips revision {r.number} ({r.image_text()}): {moved[r.number].words()}"
            for r in earlier
            if r.number in moved and (not good or r.number > good[-1].number)
        ]
        if not good:
            raise Refused(
                f"{name} in {params.environment} ({region}) has no revision before "
                f"{current.number} that a rollback did not move away from; there is nothing "
                "to roll back to"
                + (
                    f" (re-deploying one takes --to-revision: {', '.join(map(str, moved))})"
                    if moved
                    else ""
                )
            )
        target = good[-1]
    if target.template == state.template:
        return None, [
            *notes,
            f"{region}: {name} already runs revision {target.number}'s template "
            f"({target.image_text()}); nothing to do there",
        ]
    changes = template_changes(state.template, target.template)
    if changes:
        notes.append(f"{region}: besides images, the pod template changes: {'; '.join(changes)}")
    return UndoDeployment(
        environment=params.environment,
        region=region,
        namespace=namespace,
        deployment=name,
        service=service_name(params.service, service),
        from_revision=current.number,
        from_replicaset=current.replicaset,
        from_images=current.image_text(),
        to_revision=target.number,
        to_replicaset=target.replicaset,
        to_images=target.image_text(),
        redeploys=redeploys,
    ), notes


def _plan_blue_green(
    kube: KubeOps, params: RollbackParams, service: ServiceConfig, region: str
) -> SwitchColor:
    assert service.service is not None  # validated by ServiceConfig
    if params.to_revision is not None:
        raise InvalidInput(
            "--to-revision does not apply to a blue-green service; it switches to the other colour"
        )
    selector = kube.service_selector(service.namespace, service.service)
    live = selector.get(service.color_label)
    if live not in service.colors:
        raise Refused(
            f"service {service.service} ({region}) selects "
            f"{service.color_label}={live!r}, which is none of "
            f"{', '.join(service.colors)}"
        )
    others = [c for c in service.colors if c != live]
    if len(others) != 1:
        raise InvalidInput(
            f"{params.service} has {len(service.colors)} colours; cannot tell which one is previous"
        )
    target = others[0]
    target_state = kube.deployment(service.namespace, service.colors[target])
    if target_state.available == 0:
        raise Refused(
            f"{service.colors[target]} ({region}) has no available pods; scale it up "
            "before switching traffic to it"
        )
    live_state = kube.deployment(service.namespace, service.colors[live])
    return SwitchColor(
        environment=params.environment,
        region=region,
        namespace=service.namespace,
        service=service.service,
        label=service.color_label,
        from_color=live,
        from_images=live_state.image_text(),
        to_color=target,
        to_deployment=service.colors[target],
        to_images=target_state.image_text(),
    )


@runbook("rollback.history", params=HistoryParams, read_only=True)
def history(ctx: PlanContext, params: HistoryParams) -> PlanDraft:
    """List a service's revisions (images, change-cause) in each region, to choose from.

    Each release a rollback moved away from is marked, with when and by whom where it was
    ours (the same reading of the cluster's history as the rollback planner's)."""
    env = ctx.env
    service = service_config(env, params.environment, params.service)
    notes = []
    for region in rollout_regions(env, params.region):
        kube = kube_for(ctx, params.environment, region)
        names = (
            list(service.colors.values())
            if service.strategy == "blue-green"
            else [service.deployment]
        )
        for name in names:
            state = kube.deployment(service.namespace, name)
            revisions = kube.revisions(service.namespace, name)
            moved = rolled_back(
                revisions, ctx.history(), environment=params.environment, region=region
            )
            for revision in revisions:
                mark = "  ← current" if revision.template == state.template else ""
                if revision.number in moved:
                    # A release a rollback moved away from: not one to return to blindly.
                    mark += f"  ✗ rolled back: {moved[revision.number].words()}"
                notes.append(
                    f"{region} {name} revision {revision.number}: "
                    f"{revision.image_text()}  {revision.change_cause}{mark}"
                )
    return PlanDraft(
        steps=[], summary=f"history of {params.service} in {params.environment}", notes=notes
    )


@readiness_check("rollback", "an earlier release to return to")
def earlier_release(ctx: PlanContext) -> Iterator[Observation]:
    """Per service and region: the deployment is not paused (a rollback would be refused) and
    a revision before the current one exists that no rollback moved away from (a history
    limit of 0, or nothing but rolled-back releases, leaves nothing to return to); a
    blue-green service's other colour has available pods."""
    env = ctx.env
    for name, service in env.services.items():
        for region in rollout_regions(env, None):
            kube = kube_for(ctx, ctx.environment, region)

            def look(
                kube: KubeOps = kube, service: ServiceConfig = service, region: str = region
            ) -> tuple[bool, str]:
                if service.strategy == "blue-green":
                    assert service.service is not None  # validated by ServiceConfig
                    live = kube.service_selector(service.namespace, service.service).get(
                        service.color_label
                    )
                    others = [c for c in service.colors if c != live]
                    ready = {
                        c: kube.deployment(service.namespace, service.colors[c]) for c in others
                    }
                    empty = [c for c, state in ready.items() if state.available == 0]
                    if empty or not others:
                        colours = ", ".join(empty) or "none"
                        return False, f"the other colour ({colours}) has no available pods"
                    return True, f"can switch to {', '.join(others)}"
                state = kube.deployment(service.namespace, service.deployment)
                if state.paused:
                    return False, (
                        f"deployment {service.deployment} is paused: a rollback would be "
                        "refused; resume or finish its rollout"
                    )
                revisions = kube.revisions(service.namespace, service.deployment)
                current = next((r for r in revisions if r.template == state.template), None)
                if current is None:
                    return False, "no replica set matches the current template"
                moved = rolled_back(
                    revisions, ctx.history(), environment=ctx.environment, region=region
                )
                good = [r for r in revisions if r.number < current.number and r.number not in moved]
                if not good:
                    return False, (
                        f"no revision before {current.number} ({current.image_text()}) to roll "
                        "back to"
                        + (
                            " that a rollback did not move away from (every earlier release "
                            "was rolled back; `rollback --to-revision N` re-deploys one)"
                            if moved
                            else " (revisionHistoryLimit 0, or a fresh deployment)"
                        )
                    )
                return True, (
                    f"revision {current.number} ({current.image_text()}) can return to "
                    f"{good[-1].number} ({good[-1].image_text()})"
                )

            yield observe(f"{name} {region}", look)


@readiness_check("rollback", "GitOps sync can be suspended")
def gitops_suspendable(ctx: PlanContext) -> Iterator[Observation]:
    """Per service and region whose deployment Argo CD or Flux owns with automated sync on:
    runbook-bot may suspend that application (patch it and list its kind in all namespaces,
    two SelfSubjectAccessReviews), as the rollback's plan demands. Without it a rollback is
    refused, or with break-glass reverted by the reconciler at its next sync
    (docs/gitops.md)."""
    env = ctx.env
    for name, service in env.services.items():
        if service.strategy == "blue-green":
            continue  # the rollback switches a Service, and suspends nothing
        for region in rollout_regions(env, None):
            kube = kube_for(ctx, ctx.environment, region)
            try:
                app = find_owner(kube, service.namespace, service.deployment)
            except RunbookError:
                continue  # an unreachable cluster is the reach check's and earlier_release's
            if app is None or not app.automated:
                continue

            def look(
                kube: KubeOps = kube, app: GitOpsApp = app, service: ServiceConfig = service
            ) -> tuple[bool, str]:
                owned = f"{service.deployment} is {owned_words(app, change='rollback')}"
                if unfollowed(app):
                    return False, (
                        f"{owned}, and {unfollowed(app)}: a rollback would be refused, or with "
                        "break-glass reverted at the next sync"
                    )
                if kube.may_suspend(app.owner):
                    return True, f"{owned}; runbook-bot may suspend it"
                return False, (
                    f"{owned}, and RBAC does not let runbook-bot suspend it (patch the "
                    "application, list its kind in all namespaces): a rollback would be "
                    "refused, or with break-glass reverted at the next sync; bind "
                    "deploy/kubernetes/components/gitops-* (docs/gitops.md)"
                )

            yield observe(f"{name} {region}", look)


@readiness_check("rollback", "the gate's signals have data")
def gate_signals(ctx: PlanContext) -> Iterator[Observation]:
    """Where ``rollback_gate`` is on, each trigger query returns data for each region: a gate
    without data fails every rollback "unverified" at 3 a.m."""
    env = ctx.env
    for name in env.services:
        watch = _watch_step(
            env, RollbackParams(environment=ctx.environment, service=name), list(env.regions)
        )
        if watch is None:
            continue
        metrics = infrastructure(ctx).metrics(ctx.environment)
        for region in watch.regions:
            for signal in watch.signals:
                # The window the gate samples first: the last min_window of traffic.
                window = f"{max(1, int(watch.min_window))}s"
                query = str(signal["query"]).replace("{region}", region).replace("{window}", window)

                def look(query: str = query, metrics: MetricsOps = metrics) -> tuple[bool, str]:
                    value = metrics.query(query)
                    if value is None or math.isnan(value):
                        return False, f"no data (query {query})"
                    return True, f"{value:g}"

                yield observe(f"{name} {region} {signal['name']}", look)
