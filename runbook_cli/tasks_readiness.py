"""Task namespace ``readiness``: would each runbook work now? Docstrings are the --help text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke.collection import Collection
from invoke.tasks import task

if TYPE_CHECKING:
    from runbooks.engine.wiring import Runtime

#: Exit code when a check found a problem (the CLI contract: 1 failed, 2 refused or invalid).
EXIT_FINDINGS = 1


@task(
    help={
        "environment": "one environment (default: all)",
        "runbook": "one runbook's checks (default: every runbook's)",
        "json": "one JSON object on stdout",
        "all_": "list passing checks too (default: problems and a count)",
    },
)
def check(
    c: Any,
    environment: str | None = None,
    runbook: str | None = None,
    json: bool = False,
    all_: bool = False,
) -> None:
    """Check every runbook's preconditions against live state, read-only; exit 1 on findings.

    Node groups and capacity in both regions, weighted DNS records, images equal across
    regions, replication lag within the RPO, an earlier release to roll back to, a recent
    backup, autoscaler bounds. A check that cannot run is a finding, never a pass.
    """
    from runbook_cli.commands import cli_actor, consoles, emit_json, with_runtime

    def go(rt: Runtime) -> int:
        report = rt.engine.readiness(actor=cli_actor(rt), environment=environment, runbook=runbook)
        if json:
            emit_json(report.to_doc())
            return 0 if report.ready else EXIT_FINDINGS
        shown = report.findings if all_ else tuple(report.problems)
        out, _ = consoles(False)
        for f in shown:
            mark = "[green]ok[/]       " if f.ok else "[red]NOT READY[/]"
            out.print(
                f"{mark} {f.environment} {f.runbook} · {f.check} · {f.subject}: {f.detail}",
                markup=True,
                soft_wrap=True,
            )
        verdict = "ready" if report.ready else f"{len(report.problems)} finding(s)"
        out.print(f"readiness: {len(report.findings)} check(s), {verdict}")
        return 0 if report.ready else EXIT_FINDINGS

    with_runtime(go, as_json=json)


@task(help={"json": "one JSON object on stdout"})
def status(c: Any, json: bool = False) -> None:
    """Show what the bot's last readiness evaluation found: open findings, since when."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbooks.engine.clock import format_duration, iso

    def go(rt: Runtime) -> int:
        status = rt.engine.readiness_status()
        found = status.open
        now = rt.engine.clock.now()
        if json:
            emit_json({"last_evaluation": status.last_evaluated_at, "open": found})
            return EXIT_FINDINGS if found else 0
        out, _ = consoles(False)
        if status.last_evaluated_at is None:
            out.print(
                "readiness: not evaluated yet (the bot's leader evaluates every "
                f"{format_duration(rt.config.schedules.readiness.interval)}; "
                "`invoke readiness.check` runs the checks now)"
            )
            return 0
        at = status.last_evaluated_at
        out.print(
            f"readiness: last evaluated {iso(at)} ({format_duration(now - at)} ago), "
            f"{status.checked} check(s), {len(found)} open finding(s)"
        )
        for entry in sorted(found.values(), key=lambda f: float(f["opened_at"])):
            out.print(
                f"[red]NOT READY[/] since {iso(float(entry['opened_at']))} "
                f"{entry['environment']} {entry['runbook']} · {entry['check']} · "
                f"{entry['subject']}: {entry['detail']}",
                soft_wrap=True,
            )
        return EXIT_FINDINGS if found else 0

    with_runtime(go, as_json=json)


def collections() -> list[Collection]:
    readiness = Collection("readiness")
    readiness.add_task(check)
    readiness.add_task(status)
    return [readiness]
