"""Task namespace ``drills``: the drills of schedules.yaml. Docstrings are the --help text."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from invoke.collection import Collection
from invoke.tasks import Task, task

if TYPE_CHECKING:
    from runbooks.engine import DrillScheduler
    from runbooks.engine.wiring import Runtime


def _scheduler(rt: Runtime) -> DrillScheduler:
    """The drills, checked against the catalog (an unknown runbook or bad parameters is a
    configuration error, exit 2), and the scheduler's state in the store."""
    from runbooks.engine import DrillScheduler, require_valid_drills

    require_valid_drills(rt.config, rt.engine.registry)
    return DrillScheduler(rt.engine, rt.config.schedules)


@task(help={"json": "one JSON array on stdout"})
def list_(c: Any, json: bool = False) -> None:
    """List the drills: runbook, schedule, next fire (UTC and local), paused, last fire."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbooks.engine.clock import iso

    def go(rt: Runtime) -> None:
        scheduler = _scheduler(rt)
        now = rt.engine.clock.now()
        rows: list[dict[str, Any]] = []
        for drill in rt.config.schedules.drills:
            fire = drill.next_fire(now)
            history = scheduler.history(drill.name)
            rows.append(
                {
                    "name": drill.name,
                    "runbook": drill.runbook,
                    "params": drill.params,
                    "cron": drill.cron,
                    "timezone": drill.timezone,
                    "next_fire": iso(fire),
                    "next_fire_local": drill.local(fire),
                    "catch_up_s": drill.catch_up,
                    "overlap": drill.overlap,
                    "channel": drill.channel,
                    "paused": scheduler.paused(drill.name),
                    "last_fire": history[0] if history else None,
                }
            )
        if json:
            emit_json(rows)
            return
        from rich.table import Table

        table = Table(title="drills (schedules.yaml)", title_justify="left")
        for column in ("drill", "runbook", "schedule", "next fire (UTC)", "local", "last fire"):
            table.add_column(column, overflow="fold")
        for row in rows:
            params = " ".join(f"{k}={v}" for k, v in row["params"].items())
            last = row["last_fire"]
            last_text = "none" if last is None else f"{iso(last['at'])} {last['state']}"
            if last and last.get("execution_id"):
                last_text += f" ({last['execution_id']})"
            paused = row["paused"]
            name = row["name"] + (
                f"\n[yellow]PAUSED: {paused['reason']}[/yellow]" if paused else ""
            )
            table.add_row(
                name,
                f"{row['runbook']} {params}",
                f"{row['cron']} ({row['timezone']})",
                row["next_fire"],
                row["next_fire_local"],
                last_text,
            )
        consoles(False)[0].print(table)

    with_runtime(go, as_json=json)


@task(
    help={
        "name": "the drill (drills.list names them)",
        "dry_run": "show the plan, change nothing",
        "yes": "do not ask for confirmation (needed without a terminal)",
        "no_wait": "submit, print the execution id and return",
        "json": "one JSON document on stdout",
    }
)
def run(  # noqa: PLR0917 - invoke makes each parameter a flag
    c: Any,
    name: str,
    dry_run: bool = False,
    yes: bool = False,
    no_wait: bool = False,
    json: bool = False,
) -> None:
    """Run a drill now, as you, through the same request path as the scheduler."""
    from runbook_cli.commands import cli_actor, cli_errors, open_cli_runtime, run_runbook

    with cli_errors(json):
        runtime = open_cli_runtime()
        try:
            drill = _scheduler(runtime).authorise("run", name, actor=cli_actor(runtime))
        finally:
            runtime.close()
    run_runbook(
        drill.runbook,
        {
            **drill.params,
            "dry_run": dry_run,
            "yes": yes,
            "json": json,
            "no_wait": no_wait,
            "reason": f"drill {drill.name} (run by hand)",
            "break_glass": False,
            "incident": None,
            "drill": drill.name,
        },
    )


@task(help={"name": "the drill", "reason": "why (shown in listings and announced)"})
def pause(c: Any, name: str, reason: str = "") -> None:
    """Pause a drill: its fires are recorded as paused and announced, not run."""
    from runbook_cli.commands import cli_actor, consoles, with_runtime

    def go(rt: Runtime) -> None:
        said = _scheduler(rt).pause(name, actor=cli_actor(rt), reason=reason)
        consoles(False)[0].print(f"⏸ {name} paused: {said}", markup=False, highlight=False)

    with_runtime(go)


@task(help={"name": "the drill"})
def resume(c: Any, name: str) -> None:
    """Resume a paused drill."""
    from runbook_cli.commands import cli_actor, consoles, with_runtime

    def go(rt: Runtime) -> None:
        _scheduler(rt).resume(name, actor=cli_actor(rt))
        consoles(False)[0].print(f"▶ {name} resumed")

    with_runtime(go)


@task(help={"name": "the drill (drills.list names them)", "json": "one JSON object on stdout"})
def preview(c: Any, name: str, json: bool = False) -> None:
    """Show the announcements of a drill's next fire, as the scheduler would post them.

    Before (each notify_before lead time), at the fire and after the run: when, in which
    channel, and the text, built by the scheduler's own functions ([brackets]: what only the
    run can tell). Changes nothing.

    Example: invoke drills.preview monthly-restore-test
    """
    from runbook_cli.commands import emit_json, with_runtime
    from runbooks.engine.clock import format_duration, iso

    def go(rt: Runtime) -> None:
        drill, fire, announcements = _scheduler(rt).preview(name)
        now = rt.engine.clock.now()
        if json:
            emit_json(
                {
                    "drill": drill.name,
                    "runbook": drill.runbook,
                    "params": drill.params,
                    "next_fire": iso(fire),
                    "next_fire_local": drill.local(fire),
                    "announcements": [
                        {
                            "phase": a.phase,
                            "post_at": None if a.post_at is None else iso(a.post_at),
                            "channel": a.channel,
                            "text": a.text,
                        }
                        for a in announcements
                    ],
                }
            )
            return
        params = " ".join(f"{k}={v}" for k, v in drill.params.items())
        print(f"{drill.name}: {drill.runbook} {params}".rstrip())
        print(f"next fire: {iso(fire)} ({drill.local(fire)}), in {format_duration(fire - now)}")
        print("announcements (Slack prefixes each with ':calendar: *drill*'):")
        for item in announcements:
            posted = "when the run ends" if item.post_at is None else iso(item.post_at)
            where = f"in {item.channel}" if item.channel else "nowhere (the drill has no channel)"
            print(f"{item.phase}, posted {posted} {where}:")
            for line in item.text.splitlines():
                print(f"  {line}")

    with_runtime(go, as_json=json)


@task(help={"name": "one drill (default: all)", "json": "one JSON array on stdout"})
def history(c: Any, name: str = "", json: bool = False) -> None:
    """Fires of the drills, newest first: time, state, execution."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbooks.engine.clock import iso

    def go(rt: Runtime) -> None:
        scheduler = _scheduler(rt)
        names = [name] if name else [d.name for d in rt.config.schedules.drills]
        rows = [{"drill": n, **entry} for n in names for entry in scheduler.history(n)]
        rows.sort(key=lambda r: -float(r["at"]))
        if json:
            emit_json(rows)
            return
        out = consoles(False)[0]
        if not rows:
            out.print("no fires recorded yet")
        for row in rows:
            execution = f" {row['execution_id']}" if row.get("execution_id") else ""
            note = f" ({row['note']})" if row.get("note") else ""
            out.print(f"{iso(row['at'])}  {row['drill']:<28} {row['state']}{execution}{note}")

    with_runtime(go, as_json=json)


@task(
    help={
        "name": "one drill (default: all)",
        "format": "md (default) or html (self-contained, with the trend charts)",
        "out": "write to FILE (default: stdout); with md, each chart is written beside it",
        "since_days": "runs of the last N days (default 400: a year and the month before)",
        "json": "the evidence as one JSON array on stdout",
    }
)
def report(  # noqa: PLR0917 - invoke makes each parameter a flag
    c: Any,
    name: str = "",
    format: str = "md",
    out: str = "",
    since_days: int = 400,
    json: bool = False,
) -> None:
    """Drill evidence for auditors: each run's date, verdict, RTO/RPO against targets,
    approvals and execution, per drill, with a trend chart (html)."""
    from pathlib import Path

    from reports import drills as report
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbooks.engine import drill_evidence as evidence
    from runbooks.engine.errors import InvalidInput

    def go(rt: Runtime) -> None:
        if format not in ("md", "html"):
            raise InvalidInput(f"--format must be md or html, not {format!r}")
        if since_days < 1:
            raise InvalidInput(f"--since-days must be at least 1, not {since_days}")
        now = rt.engine.clock.now()
        found = evidence.collect(
            _scheduler(rt), name=name or None, since=now - since_days * 86400.0
        )
        if json:
            emit_json([drill.to_doc() for drill in found])
            return
        target = Path(out) if out else None
        chain = rt.engine.audit.verify()
        scope = evidence.ReportScope(
            installation=rt.config.environments.installation,
            since=now - since_days * 86400.0,
            until=now,
            audit_head=chain.head,
            audit_records=chain.count,
            audit_intact=chain.ok,
            audit_problem=chain.problem,
        )
        if format == "html":
            text = report.html(found, generated_at=now, scope=scope)
        else:
            charts: dict[str, str] = {}
            if target is not None:
                for drill in found:
                    if drill.executed and report.measured(drill):
                        chart = target.with_name(f"{target.stem}-{drill.name}.svg")
                        chart.write_text(report.chart_svg(drill), encoding="utf-8")
                        charts[drill.name] = chart.name
            text = report.markdown(found, generated_at=now, scope=scope, charts=charts)
        if target is None:
            sys.stdout.write(text + "\n")
            return
        target.write_text(text + "\n", encoding="utf-8")
        runs = sum(len(d.runs) for d in found)
        consoles(False)[0].print(f"wrote {target} ({len(found)} drill(s), {runs} run(s))")

    with_runtime(go, as_json=json)


def collections() -> list[Collection]:
    drills = Collection("drills")
    drills.add_task(cast("Task[Any]", list_), name="list")
    for item in (run, pause, resume, preview, history, report):
        drills.add_task(item)
    return [drills]
