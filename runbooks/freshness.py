"""Readiness of the evidence: each drill passed recently enough, on today's configuration.

A drill (``schedules.yaml``) is evidence that its runbook works. The evidence is stale when

1. **its cadence passed**: the drill's next fire after its last passing run, plus the drill's
   ``catch_up`` (how late a missed fire may still run) and ``RUN_ALLOWANCE`` (time to finish),
   is behind us: the monthly restore test of 1 December failed, so November's pass stops
   counting on 3 December 03:00 (1 Dec 03:00 + 1 day catch-up + 1 day);
2. **a material change** happened since: the environment's configuration (environments.yaml,
   hashed on every plan as ``Plan.config_hash``) differs from the last passing run's (DORA
   asks for DR tests after material changes);
3. or it never passed, once the first fire since the installation started (its first audit
   record) plus catch-up and a day is behind us.

Runs count when they are runs of the drill (the scheduler's fires and ``drills.run``), found
among the engine's finished runs (its newest 500). Checked per environment: a drill belongs
to the environment its ``params.environment`` names.
"""

from __future__ import annotations

from collections.abc import Iterator

from runbooks.engine.clock import format_duration, iso
from runbooks.engine.plan import PastRun, PlanContext
from runbooks.engine.readiness import DRILLS, Observation, readiness_check

#: After a drill's next fire and its catch-up, how long its run may take before its last
#: pass stops counting.
RUN_ALLOWANCE = 86400.0


def _passes(ctx: PlanContext, drill: str) -> list[PastRun]:
    runs = [r for r in ctx.history() if r.drill == drill and r.state == "succeeded"]
    return sorted(runs, key=lambda r: r.ended_at or 0.0, reverse=True)


@readiness_check(DRILLS, "drill evidence")
def drill_evidence(ctx: PlanContext) -> Iterator[Observation]:
    """Each drill of the environment passed within its cadence (next fire after the last
    pass + catch-up + a day to run), and on the environment's configuration as it is now."""
    now = ctx.clock.now()
    current = ctx.config.environment_hash(ctx.environment)
    for drill in ctx.config.schedules.drills:
        if drill.params.get("environment") != ctx.environment:
            continue
        subject = f"drill {drill.name}"
        passes = _passes(ctx, drill.name)
        if not passes or passes[0].ended_at is None:
            # Never passed: missing evidence once the first fire since this installation
            # started (its first audit record) came and went without a pass.
            since = ctx.installed_at() or now
            first = drill.next_fire(since)
            due = first + drill.catch_up + RUN_ALLOWANCE
            if now > due:
                yield (
                    subject,
                    False,
                    (
                        f"no passing run of {drill.runbook} since this installation started "
                        f"({iso(since)}): the fire of {iso(first)} brought none "
                        f"(`invoke drills.run {drill.name}` runs it now)"
                    ),
                )
            else:
                yield subject, True, f"no passing run yet; the first is due by {iso(due)}"
            continue
        last = passes[0]
        ended = float(last.ended_at or 0.0)
        due = drill.next_fire(ended) + drill.catch_up + RUN_ALLOWANCE
        age = format_duration(now - ended)
        if now > due:
            yield (
                subject,
                False,
                (
                    f"last passed {iso(ended)} ({age} ago, run {last.id}); the fire of "
                    f"{iso(drill.next_fire(ended))} brought no pass: stale since {iso(due)}"
                ),
            )
        elif last.config_hash is not None and last.config_hash != current:
            yield (
                subject,
                False,
                (
                    f"stale after a material change: {ctx.environment}'s configuration changed "
                    f"since the last pass ({iso(ended)}, run {last.id}); run the drill again"
                ),
            )
        else:
            yield (
                subject,
                True,
                (f"passed {iso(ended)} ({age} ago, run {last.id}); due again by {iso(due)}"),
            )
