"""Task namespaces ``approvals`` and ``policy``. Docstrings are the --help text."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from invoke.collection import Collection
from invoke.tasks import Task, task

from runbook_cli.exit_codes import EXIT_REFUSED

if TYPE_CHECKING:
    from runbooks.engine.wiring import Runtime


@task(help={"json": "one JSON array on stdout"})
def list_(c: Any, json: bool = False) -> None:
    """List requests waiting for approval: plan, requester, age, expiry, approvals so far."""
    from rich.table import Table

    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbook_cli.render import execution_summary
    from runbooks.engine.clock import format_duration
    from runbooks.engine.models import State

    def go(rt: Runtime) -> None:
        rt.engine.expire_due()
        pending = rt.engine.list(limit=200, states=[State.AWAITING_APPROVAL])
        now = rt.engine.clock.now()
        if json:
            emit_json(
                [
                    {
                        **execution_summary(e),
                        "summary": e.plan.summary,
                        "age_seconds": round(now - e.created_at, 1),
                        "expires_in_seconds": round(e.expires_at - now, 1)
                        if e.expires_at
                        else None,
                    }
                    for e in pending
                ]
            )
            return
        out = consoles(False)[0]
        if not pending:
            out.print("no request is waiting for approval")
            return
        table = Table(show_header=True, header_style="bold")
        for column in (
            "id",
            "runbook",
            "environment",
            "plan",
            "requester",
            "age",
            "expires in",
            "approvals",
        ):
            # Ids are what people copy into the next command: never cut, whatever the width.
            table.add_column(
                column, no_wrap=column == "id", min_width=9 if column == "id" else None
            )
        for e in pending:
            table.add_row(
                e.id,
                e.runbook,
                e.environment,
                e.plan.summary,
                e.requester.name,
                format_duration(now - e.created_at),
                format_duration(e.expires_at - now) if e.expires_at else "-",
                f"{len(e.valid_approvals())}/{e.required_approvals}"
                + ("" if e.confirmed_hash == e.plan.hash else " (plan changed)"),
            )
        out.print(table)

    with_runtime(go, as_json=json)


def _decide(
    c: Any, execution_id: str, *, yes: bool, json: bool, approve: bool, reason: str
) -> None:
    from runbook_cli.commands import cli_actor, consoles, emit_json, with_runtime
    from runbook_cli.render import execution_summary, print_plan
    from runbooks.engine import clean_reason
    from runbooks.engine.errors import Refused
    from runbooks.engine.models import State

    def go(rt: Runtime) -> int:
        out, _ = consoles(json)
        actor = cli_actor(rt)
        rt.engine.expire_due()
        execution = rt.engine.get(execution_id)
        if execution.state != State.AWAITING_APPROVAL:
            raise Refused(f"{execution.id} is {execution.state}; it is not waiting for a decision")
        shown = execution.plan.hash
        print_plan(
            out,
            execution.plan,
            banner=rt.banner(execution.environment),
            reason=execution.reason,
            approvals=execution.required_approvals,
            execution_id=execution.id,
        )
        out.print(
            f"requested by {execution.requester.name} via {execution.requester.origin}; "
            f"approvals so far: {len(execution.valid_approvals())}/"
            f"{execution.required_approvals}"
        )
        verb = "Approve" if approve else "Deny"
        if not yes:
            from runbook_cli.commands import _confirm

            if not sys.stdin.isatty():
                raise Refused(
                    f"no terminal to confirm on; pass --yes to {verb.lower()} the plan shown above"
                )
            if not _confirm(out, f"{verb} this exact plan?"):
                out.print("nothing done")
                return EXIT_REFUSED
        if approve:
            execution = rt.engine.approve(execution.id, actor=actor, plan_hash=shown)
        else:
            execution = rt.engine.deny(execution.id, actor=actor, reason=reason)
        if json:
            emit_json(execution_summary(execution))
        elif execution.state == State.APPROVED:
            out.print(
                f"✔ {execution.id} approved; it starts in the requester's terminal, or in "
                f"the bot, or with `runs.resume {execution.id}`"
            )
        elif approve:
            out.print(
                f"✔ approval recorded: {len(execution.valid_approvals())}/"
                f"{execution.required_approvals}"
            )
        else:
            out.print(f"✘ {execution.id} denied: {clean_reason(reason)}")
        return 0

    with_runtime(go, as_json=json)


@task(
    help={
        "id": "execution id",
        "yes": "do not ask (you have seen the plan)",
        "json": "one JSON object on stdout",
    }
)
def approve(c: Any, id: str, yes: bool = False, json: bool = False) -> None:
    """Show a pending request's plan and approve exactly that plan."""
    _decide(c, id, yes=yes, json=json, approve=True, reason="")


@task(
    help={
        "id": "execution id",
        "reason": "why (required; the requester sees it)",
        "yes": "do not ask",
        "json": "one JSON object on stdout",
    }
)
def deny(
    c: Any,
    id: str,
    reason: str = "",
    yes: bool = False,
    json: bool = False,
) -> None:
    """Deny a pending request, with a reason; it ends at once."""
    from runbook_cli.commands import cli_errors
    from runbooks.engine.errors import InvalidInput

    if not reason.strip():
        with cli_errors(json):
            raise InvalidInput("a denial needs --reason TEXT so the requester knows why")
    _decide(c, id, yes=yes, json=json, approve=False, reason=reason)


@task(help={"all": "include acknowledged reviews", "json": "one JSON array on stdout"})
def reviews(c: Any, all: bool = False, json: bool = False) -> None:
    """List break-glass executions waiting for someone else's review."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbooks.engine.clock import iso

    def go(rt: Runtime) -> None:
        items = rt.engine.reviews(open_only=not all)
        rows = [
            {
                "id": r["execution_id"],
                "runbook": r["doc"]["runbook"],
                "environment": r["doc"]["environment"],
                "requester": r["doc"]["requester"]["id"],
                "reason": r["doc"].get("reason"),
                "incident": r["doc"].get("incident"),
                "created_at": iso(r["created_at"]),
                "state": "acknowledged" if r["acknowledged_by"] else "open",
                "acknowledged_by": (r["acknowledged_by"] or {}).get("id"),
            }
            for r in items
        ]
        if json:
            emit_json(rows)
            return
        out = consoles(False)[0]
        if not rows:
            out.print("no break-glass review is open")
        for row in rows:
            out.print(
                f"[bold red]BREAK-GLASS[/bold red] {row['id']} {row['runbook']} "
                f"{row['environment']} by {row['requester']} at {row['created_at']} "
                f"(incident {row['incident']}): {row['reason']} [{row['state']}]"
            )

    with_runtime(go, as_json=json)


@task(
    name="ack-review",
    help={"id": "execution id of the break-glass run", "note": "what you checked"},
)
def ack_review(c: Any, id: str, note: str = "") -> None:
    """Acknowledge a break-glass review (not your own)."""
    from runbook_cli.commands import cli_actor, consoles, with_runtime

    def go(rt: Runtime) -> None:
        rt.engine.ack_review(id, actor=cli_actor(rt), note=note)
        consoles(False)[0].print(f"✔ review of {id} acknowledged")

    with_runtime(go)


@task(
    help={
        "runbook": "dotted runbook name (e.g. rollback, dr.failover)",
        "environment": "environment",
        "as_": "person key from policy.yaml (default: you)",
    }
)
def explain(c: Any, runbook: str, environment: str, as_: str = "") -> None:
    """Explain in words whether a person may request a runbook here, and who must approve."""
    from runbook_cli.commands import cli_actor, with_runtime

    def go(rt: Runtime) -> None:
        spec = rt.engine.registry.get(runbook) if runbook in rt.engine.registry.names() else None
        rt.config.environment(environment)
        person = as_ or cli_actor(rt).id
        for line in rt.engine.policy.explain(
            runbook,
            environment,
            person,
            read_only=bool(spec and spec.read_only),
            now=rt.engine.clock.now(),
        ):
            print(line)
        if spec is None:
            print(
                f"(note: no runbook named {runbook!r} is installed yet; the policy above "
                "would apply to it)"
            )

    with_runtime(go)


def collections() -> list[Collection]:
    approvals = Collection("approvals")
    approvals.add_task(cast("Task[Any]", list_), name="list")
    for item in (approve, deny, reviews, ack_review):
        approvals.add_task(cast("Task[Any]", item))
    policy = Collection("policy")
    policy.add_task(cast("Task[Any]", explain))
    return [approvals, policy]
