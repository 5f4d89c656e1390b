"""What the invoke tasks do: open the engine, call it, render, map errors to exit codes."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from invoke.exceptions import Exit
from rich.console import Console
from rich.text import Text

from runbook_cli.exit_codes import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_REFUSED,
    reader_left,
)
from runbook_cli.render import (
    ProgressPrinter,
    outcome_line,
    plan_json,
    print_plan,
)
from runbooks.engine import clean_reason
from runbooks.engine.clock import format_duration
from runbooks.engine.errors import Refused, RunbookError
from runbooks.engine.models import Actor, Execution, State
from runbooks.engine.wiring import Runtime, open_runtime

APPROVAL_POLL_S = 1.0
EXIT_FOR_STATE = {
    State.SUCCEEDED: EXIT_OK,
    State.FAILED: EXIT_FAILED,
    State.COMPENSATED: EXIT_FAILED,
    State.COMPENSATION_FAILED: EXIT_FAILED,
    State.CANCELLED: EXIT_FAILED,
    State.DENIED: EXIT_REFUSED,
    State.EXPIRED: EXIT_REFUSED,
}


#: Columns for output that is not a terminal (a pipe, a file): wide enough that rich never
#: cuts a table cell (``dr.fai…``) or wraps a line a script reads.
SCRIPT_WIDTH = 100_000


def _console(*, stderr: bool) -> Console:
    """A console as wide as the terminal, or unlimited when the stream is not a terminal
    (COLUMNS is ignored then: a script reads whole lines)."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    return Console(
        stderr=stderr, highlight=False, width=None if tty else SCRIPT_WIDTH, soft_wrap=not tty
    )


def consoles(as_json: bool) -> tuple[Console, Console]:
    """(human, errors): with --json, human output goes to stderr so stdout stays one document."""
    err = _console(stderr=True)
    return (err if as_json else _console(stderr=False)), err


def open_cli_runtime() -> Runtime:
    from runbooks.adapters import build_adapters, resolve_secret
    from runbooks.engine import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings.log_target or str(settings.state_dir / "logs" / "runbook-bot.jsonl"))
    from runbooks.catalog import load_catalog

    return open_runtime(
        settings, registry=load_catalog(), adapters=build_adapters, secrets=resolve_secret
    )


def cli_actor(runtime: Runtime) -> Actor:
    from runbooks.engine import terminal_actor

    return terminal_actor(runtime.config, override=runtime.settings.user_override)


def emit_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def cli_errors(as_json: bool = False) -> Iterator[None]:
    """Turn project errors into a message and the contract's exit code."""
    try:
        yield
    except BrokenPipeError:
        raise Exit(code=reader_left()) from None
    except RunbookError as exc:
        if as_json:
            emit_json({"error": exc.code, "message": exc.message, "hint": exc.hint})
        else:
            _, err = consoles(False)
            err.print(f"[bold red]error:[/bold red] {exc.message}", highlight=False)
            if exc.hint:
                err.print(f"[dim]{exc.hint}[/dim]", highlight=False)
        raise Exit(code=exc.exit_code) from None


def _confirm(console: Console, question: str) -> bool:
    console.print(f"{question} [bold]\\[y/N][/bold] ", end="")
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}


def run_runbook(name: str, raw: dict[str, Any]) -> None:
    """Body of every runbook task."""
    flags = {
        key: raw.pop(key)
        for key in ("dry_run", "yes", "json", "no_wait", "reason", "break_glass", "incident")
    }
    flags["drill"] = raw.pop("drill", None)  # drills.run: the drill this request runs
    as_json = bool(flags["json"])
    with cli_errors(as_json):
        runtime = open_cli_runtime()
        try:
            code = _run(runtime, name, raw, flags, as_json)
        finally:
            runtime.close()
    if code:
        raise Exit(code=code)


def _run(
    runtime: Runtime, name: str, raw: dict[str, Any], flags: dict[str, Any], as_json: bool
) -> int:
    from runbooks.engine import Outcome, Request

    engine = runtime.engine
    out, _ = consoles(as_json)
    actor = cli_actor(runtime)
    request = Request(
        runbook=name,
        params=raw,
        actor=actor,
        reason=flags["reason"],
        incident=flags["incident"],
        break_glass=bool(flags["break_glass"]),
        dry_run=bool(flags["dry_run"]),
        drill=flags["drill"],
    )
    registry = engine.registry
    report = name in registry.names() and registry.get(name).read_only
    # A report's one step is its verdict: no step lines, the report says it all.
    unsubscribe: Callable[[], None] = (
        _nothing if report else engine.events.subscribe(ProgressPrinter(out))
    )
    try:
        result = engine.request(request)
        plan = result.plan
        banner = runtime.banner(plan.environment)
        print_plan(
            out,
            plan,
            banner=banner,
            reason=clean_reason(flags["reason"]),
            approvals=result.approvals,
        )
        if result.outcome == Outcome.DRY_RUN:
            if as_json:
                emit_json(
                    {
                        **plan_json(plan, banner),
                        "dry_run": True,
                        "would_refuse": result.would_refuse,
                        "verdict": result.dry_run_verdict,
                        "approvals": result.approvals,
                    }
                )
            else:
                style = "yellow" if result.would_refuse else "green"
                out.print(Text(result.dry_run_verdict, style=style))
                out.print("[dim]dry run: nothing was changed[/dim]")
            return EXIT_OK
        if result.outcome == Outcome.CONFIRM:
            if not flags["yes"]:
                if not sys.stdin.isatty():
                    raise Refused(
                        "no terminal to confirm this plan on; pass --yes to confirm it "
                        "non-interactively (or --dry-run to only look)"
                    )
                if not _confirm(out, "Submit this plan?"):
                    out.print("nothing done")
                    return EXIT_REFUSED
            # Submitted exactly as shown; the engine re-plans before the first step anyway.
            confirmed = dataclasses.replace(request, confirmed_hash=plan.hash)
            result = engine.request(confirmed, prepared=result.prepared)
        assert result.execution is not None
        execution = _drive_to_end(runtime, result.execution, actor, flags, out)
    finally:
        unsubscribe()
    if as_json:
        from runbook_cli.render import execution_detail

        emit_json(execution_detail(execution))
    elif not execution.plan.read_only or execution.state != State.SUCCEEDED:
        # A report that stood is the report itself: stored and audited, no outcome line.
        out.print(outcome_line(execution))
    if execution.state in EXIT_FOR_STATE:
        return EXIT_FOR_STATE[execution.state]
    return EXIT_PENDING


def _nothing() -> None:
    return None


def _drive_to_end(
    runtime: Runtime, execution: Execution, actor: Actor, flags: dict[str, Any], out: Console
) -> Execution:
    engine = runtime.engine
    while True:
        if execution.state == State.APPROVED:
            execution = engine.start(execution.id, actor=actor)
            continue
        if execution.state != State.AWAITING_APPROVAL:
            return execution
        if execution.confirmed_hash != execution.plan.hash and actor.id == execution.requester.id:
            # The plan changed under us: show it again and ask again.
            print_plan(
                out,
                execution.plan,
                banner=runtime.banner(execution.environment),
                reason=execution.reason,
                approvals=execution.required_approvals,
                execution_id=execution.id,
            )
            if (
                flags["yes"]
                or not sys.stdin.isatty()
                or not _confirm(out, "The plan changed. Submit the new plan?")
            ):
                out.print(f"the plan changed; {execution.id} waits for you to confirm it")
                return execution
            execution = engine.confirm(execution.id, actor=actor, plan_hash=execution.plan.hash)
            continue
        if flags["no_wait"]:
            out.print(f"{execution.id} is waiting for approval")
            if not flags["json"]:
                sys.stdout.write(execution.id + "\n")
            return execution
        try:
            with engine.hold(execution.id):
                execution = _wait_for_decision(runtime, execution, out)
                if execution.state == State.APPROVED:
                    # Still holding the lease: nobody else (the bot) can start it meanwhile.
                    execution = engine.start(execution.id, actor=actor)
        except KeyboardInterrupt:
            out.print(
                f"\nstopped waiting; {execution.id} is still pending. Follow it with "
                f"`runs.show {execution.id}`; once approved the bot starts it, or "
                f"`runs.resume {execution.id}` where no bot runs. Withdraw it with "
                f"`runs.cancel {execution.id}`."
            )
            return engine.get(execution.id)


def waiting_text(runtime: Runtime, execution: Execution) -> str:
    """Said at once when the terminal starts waiting: for how many approvals, who may give
    them and how, and how to stop waiting (Ctrl-C) or not wait at all (--no-wait)."""
    groups = execution.approver_groups
    people = runtime.engine.policy.approvers(groups, requester=execution.requester.id)
    who = f"{', '.join(groups) or 'anyone'}" + (f": {', '.join(people)}" if people else "")
    return (
        f"{execution.id} needs {execution.required_approvals} approval(s) before it runs; "
        f"this terminal waits for them. Who may approve: {who} (never the requester). They "
        f"approve with `invoke approvals.approve {execution.id}` or on the card in Slack. "
        f"Ctrl-C stops waiting (the request stays pending; once approved the bot starts it); "
        f"with --no-wait the command prints the id and returns at once (exit 3)."
    )


def _wait_for_decision(runtime: Runtime, execution: Execution, out: Console) -> Execution:
    """Poll until the request is no longer awaiting approval, with a live status line."""
    engine = runtime.engine
    out.print(waiting_text(runtime, execution), markup=False, highlight=False)
    with out.status("waiting for approval") as status:
        while execution.state == State.AWAITING_APPROVAL:
            engine.clock.sleep(APPROVAL_POLL_S)
            engine.expire_due()
            execution = engine.get(execution.id)
            left = (execution.expires_at or 0) - engine.clock.now()
            status.update(
                f"waiting for approval: {len(execution.valid_approvals())}/"
                f"{execution.required_approvals} · expires in {format_duration(max(0, left))}"
            )
    if execution.state in {State.DENIED, State.EXPIRED, State.CANCELLED}:
        out.print(f"[red]{execution.id} {execution.state}[/red]: {execution.error or ''}")
    return execution


def with_runtime(fn: Callable[[Runtime], int | None], *, as_json: bool = False) -> None:
    """Run a listing or admin command with error mapping."""
    with cli_errors(as_json):
        runtime = open_cli_runtime()
        try:
            code = fn(runtime) or 0
        finally:
            runtime.close()
    if code:
        raise Exit(code=code)
