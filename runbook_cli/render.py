"""Terminal rendering with rich: the plan as a table, progress lines, a clear final line.

Also the JSON shapes scripts rely on (``--json``): every listing row has at least ``id``,
``runbook``, ``environment``, ``state``, ``requester`` and ``created_at``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runbooks.engine import Plan, findings_verdict
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.models import Event, Execution, State, StepStatus

TIER_STYLE = {
    "production": "bold white on red",
    "staging": "bold black on yellow",
    "sandbox": "bold black on green",
}
STATE_STYLE = {
    State.SUCCEEDED: "bold green",
    State.FAILED: "bold red",
    State.COMPENSATED: "bold yellow",
    State.COMPENSATION_FAILED: "bold red",
    State.CANCELLED: "yellow",
    State.DENIED: "red",
    State.EXPIRED: "red",
    State.AWAITING_APPROVAL: "cyan",
    State.RUNNING: "blue",
}


def execution_summary(execution: Execution) -> dict[str, Any]:
    """The JSON object for one execution in listings and runbook task results."""
    return {
        "id": execution.id,
        "runbook": execution.runbook,
        "environment": execution.environment,
        "region": execution.plan.region,
        "state": str(execution.state),
        "requester": execution.requester.id,
        "origin": execution.requester.origin,
        "created_at": iso(execution.created_at),
        "updated_at": iso(execution.updated_at),
        "started_at": iso(execution.started_at) if execution.started_at else None,
        "ended_at": iso(execution.ended_at) if execution.ended_at else None,
        "reason": execution.reason,
        "incident": execution.incident,
        "trigger": None if execution.trigger is None else execution.trigger.to_doc(),
        "stop_reason": None if execution.stop_reason is None else str(execution.stop_reason),
        "lock_key": execution.lock_key,
        "plan_hash": execution.plan.hash,
        "required_approvals": execution.required_approvals,
        "approvals": [a.actor.id for a in execution.valid_approvals()],
        "expires_at": iso(execution.expires_at) if execution.expires_at else None,
        "error": execution.error,
    }


def execution_detail(execution: Execution) -> dict[str, Any]:
    """``runs.show --json``: the summary plus parameters, steps and approvals."""
    return {
        **execution_summary(execution),
        "params": execution.plan.params,
        "summary": execution.plan.summary,
        "notes": execution.plan.notes,
        "steps": [
            {
                "step": record.index + 1,
                "description": record.description,
                "status": str(record.status),
                "reversible": record.reversible,
                "attempts": record.attempts,
                "started_at": iso(record.started_at) if record.started_at else None,
                "ended_at": iso(record.ended_at) if record.ended_at else None,
                "output": record.output,
                "error": record.error,
            }
            for record in execution.steps
        ],
        "decisions": [
            {
                "by": a.actor.id,
                "via": a.actor.origin,
                "decision": a.decision,
                "at": iso(a.at),
                "reason": a.reason,
                "void": a.void,
            }
            for a in execution.approvals
        ],
    }


def plan_json(plan: Plan, banner: str) -> dict[str, Any]:
    return {
        "runbook": plan.runbook,
        "environment": plan.environment,
        "region": plan.region,
        "banner": banner,
        "lock_key": plan.lock_key,
        "plan_hash": plan.hash,
        "summary": plan.summary,
        "notes": plan.notes,
        "warnings": plan.warnings,
        "params": plan.params,
        "steps": [
            {
                "step": i + 1,
                "description": s["description"],
                "reversible": s["reversible"],
                "irreversible_reason": s.get("irreversible_reason"),
            }
            for i, s in enumerate(plan.steps)
        ],
    }


def print_plan(
    console: Console,
    plan: Plan,
    *,
    banner: str,
    reason: str | None = None,
    approvals: int | None = None,
    execution_id: str | None = None,
) -> None:
    """The banner, then every step exactly as it will run."""
    console.print(Text(f" {banner} ", style=TIER_STYLE.get(plan.tier, "bold")))
    header = Table.grid(padding=(0, 2))
    header.add_row("runbook", plan.runbook + (f"  ({execution_id})" if execution_id else ""))
    header.add_row("plan", f"{plan.summary}  [dim]hash {plan.short_hash}[/dim]")
    if plan.region:
        header.add_row("region", plan.region)
    if not plan.read_only:  # a report takes no lock and needs no approval: no lines for them
        header.add_row("lock", plan.lock_key or "none")
        if approvals is not None:
            header.add_row(
                "approvals", "none needed" if approvals == 0 else f"{approvals} required"
            )
    if reason:
        header.add_row("reason", reason)
    console.print(header)
    if plan.steps and not plan.read_only:  # a report's only step is its verdict
        table = Table(show_header=True, header_style="bold", expand=False)
        table.add_column("#", justify="right")
        table.add_column("what will change")
        table.add_column("undo")
        for index, step in enumerate(plan.steps, start=1):
            undo = (
                "yes"
                if step["reversible"]
                else Text(step.get("irreversible_reason") or "no", style="yellow")
            )
            table.add_row(str(index), step["description"], undo)
        console.print(table)
    elif not plan.read_only:
        console.print("[bold]nothing to do[/bold]: the live state already matches")
    for note in plan.notes:
        console.print(f"[dim]note:[/dim] {note}")
    for warning in plan.warnings:
        console.print(Text.assemble(("warning: ", "bold yellow"), warning))


class ProgressPrinter:
    """Print one line per step transition as events arrive."""

    SYMBOL: ClassVar[dict[str, str]] = {
        "step.started": "▶",
        "step.succeeded": "✔",
        "step.failed": "✘",
        "step.cancelled": "■",
        "step.undoing": "↶",
        "step.undone": "↶",
        "step.undo_failed": "✘",
    }

    def __init__(self, console: Console) -> None:
        self.console = console
        self._live: Any = None  # a rich Status: one live line per wait, in a terminal
        self._shown: set[str] = set()  # the running step's notes already printed live

    def _end_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def __call__(self, event: Event) -> None:
        payload = event.payload
        if event.type == "step.progress":
            text = str(payload.get("text", ""))
            if payload.get("note"):
                self._end_live()
                self._shown.add(text)
                self.console.print(f"    [dim]{text}[/dim]", highlight=False)
            elif self.console.is_terminal:
                if self._live is None:
                    self._live = self.console.status(text)
                    self._live.start()
                else:
                    self._live.update(text)
            return
        self._end_live()
        if event.type in self.SYMBOL:
            step = payload.get("step")
            line = f"{self.SYMBOL[event.type]} step {step}: {payload.get('description')}"
            # Notes printed live are not repeated; the step's own result line is.
            unseen = [o for o in payload.get("output") or [] if o not in self._shown]
            if event.type == "step.succeeded" and unseen:
                line += f"  [dim]({'; '.join(unseen)})[/dim]"
            if event.type != "step.progress":
                self._shown = set()
            if payload.get("error"):
                line += f"\n    [red]{payload['error']}[/red]"
            if event.type in {"step.undoing", "step.undone"}:
                verb = "undoing" if event.type == "step.undoing" else "undone"
                line = f"{self.SYMBOL[event.type]} {verb} step {step}"
            self.console.print(line)
        elif event.type == "plan.changed":
            self.console.print("[yellow]the plan changed since it was confirmed:[/yellow]")
            for change in payload.get("changes", []):
                self.console.print(f"  {change}")
        elif event.type == "approval.granted":
            self.console.print(f"✔ approved by {payload.get('approver')}")
        elif event.type == "execution.question":
            choices = "|".join(str(c) for c in payload.get("choices") or [])
            self.console.print(
                f"[bold yellow]? step {payload.get('step')} asks:[/bold yellow] "
                f"{payload.get('question')}\n    answer until {iso(float(payload['until']))} "
                f"with `runs.answer {payload['execution_id']} {choices}` (or the Slack card)",
                highlight=False,
            )
        elif event.type == "execution.answered":
            self.console.print(f"✔ answered {payload.get('choice')} by {payload.get('by')}")
        elif event.type == "execution.question_expired":
            self.console.print(f"[red]✘ nobody answered step {payload.get('step')}[/red]")
        elif event.type == "execution.state" and payload.get("why") == "no approvals required":
            # Approved by policy, not by a person: say so, and which rule.
            self.console.print(
                f"{payload['execution_id']}: no approval needed: policy.yaml {payload.get('rule')}",
                style="dim",
                markup=False,
            )
        elif event.type == "execution.state" and payload.get("state") in {
            "compensating",
            "approved",
        }:
            self.console.print(f"[dim]{payload['execution_id']}: {payload['state']}[/dim]")


def outcome_line(execution: Execution) -> Text:
    took = ""
    if execution.started_at and execution.ended_at:
        took = f" in {format_duration(execution.ended_at - execution.started_at)}"
    symbol = {State.SUCCEEDED: "✔"}.get(execution.state, "✘")
    if execution.state in {State.AWAITING_APPROVAL, State.APPROVED, State.RUNNING}:
        symbol = "…"
    text = (
        f"{symbol} {execution.id} {execution.runbook} {execution.environment}: "
        f"{execution.state}{took}"
    )
    findings = findings_verdict(execution)
    if findings:
        text += f" ({findings})"
    if execution.error:
        text += f" — {execution.error}"
    return Text(text, style=STATE_STYLE.get(execution.state, "bold"))


def print_execution(console: Console, execution: Execution, *, banner: str) -> None:
    print_plan(
        console,
        execution.plan,
        banner=banner,
        reason=execution.reason,
        approvals=execution.required_approvals,
        execution_id=execution.id,
    )
    table = Table(show_header=True, header_style="bold")
    for column in ("#", "step", "status", "output / error"):
        table.add_column(column)
    for record in execution.steps:
        detail = "; ".join(record.output)
        if record.status == StepStatus.RUNNING and record.progress:
            detail = (detail + "; " if detail else "") + f"[dim]now: {record.progress}[/dim]"
        if record.error:
            detail = (detail + "; " if detail else "") + f"[red]{record.error}[/red]"
        table.add_row(str(record.index + 1), record.description, str(record.status), detail)
    if execution.steps:
        console.print(table)
    console.print(
        f"requested by {execution.requester.name} via {execution.requester.origin} "
        f"at {iso(execution.created_at)}"
        + (f"; triggered by {execution.trigger.words()}" if execution.trigger else "")
    )
    for decision in execution.approvals:
        void = " (void: plan changed)" if decision.void else ""
        console.print(
            f"{decision.decision} by {decision.actor.name} via {decision.actor.origin} "
            f"at {iso(decision.at)}{void}"
        )
    console.print(outcome_line(execution))


def listing_table(executions: list[Execution]) -> Panel | Table:
    table = Table(show_header=True, header_style="bold")
    for column in ("id", "runbook", "environment", "state", "requester", "created"):
        # Ids are what people copy into the next command: never cut, whatever the width.
        table.add_column(column, no_wrap=column == "id", min_width=9 if column == "id" else None)
    for execution in executions:
        table.add_row(
            execution.id,
            execution.runbook,
            execution.environment,
            Text(str(execution.state), style=STATE_STYLE.get(execution.state, "")),
            execution.requester.name,
            iso(execution.created_at),
        )
    return table
