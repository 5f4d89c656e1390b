"""Fixed task namespaces: runs, audit, config, bot. Docstrings are the --help text."""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import TYPE_CHECKING, Any, cast

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import Task, task

from runbook_cli.exit_codes import EXIT_FAILED, EXIT_PENDING, EXIT_REFUSED

if TYPE_CHECKING:
    from runbooks.engine.wiring import Runtime

# Task bodies import their helpers (rich, structlog, the store) when they run, so that
# `--list` and `--help` import none of them.

# ---------------------------------------------------------------------------------- runs


@task(
    help={
        "limit": "how many (newest first; default 20)",
        "state": "only this state",
        "json": "one JSON array on stdout",
    }
)
def list_(c: Any, limit: int = 20, state: str = "", json: bool = False) -> None:
    """List executions, newest first."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbook_cli.render import execution_summary, listing_table

    def go(rt: Runtime) -> None:
        executions = rt.engine.list(limit=limit, states=[state] if state else None)
        if json:
            emit_json([execution_summary(e) for e in executions])
        else:
            consoles(False)[0].print(listing_table(executions))

    with_runtime(go, as_json=json)


@task(help={"id": "execution id (rb-xxxxxx)", "json": "one JSON object on stdout"})
def show(c: Any, id: str, json: bool = False) -> None:
    """Show one execution: plan, steps, decisions, outcome."""
    from runbook_cli.commands import consoles, emit_json, with_runtime
    from runbook_cli.render import execution_detail, print_execution

    def go(rt: Runtime) -> None:
        execution = rt.engine.get(id)
        if json:
            emit_json(execution_detail(execution))
        else:
            print_execution(consoles(False)[0], execution, banner=rt.banner(execution.environment))

    with_runtime(go, as_json=json)


def _follow(rt: Runtime, json: bool, action: Any) -> int:
    from runbook_cli.commands import EXIT_FOR_STATE, consoles, emit_json
    from runbook_cli.render import ProgressPrinter, execution_detail, outcome_line

    out, _ = consoles(json)
    unsubscribe = rt.engine.events.subscribe(ProgressPrinter(out))
    try:
        execution = action()
    finally:
        unsubscribe()
    if json:
        emit_json(execution_detail(execution))
    else:
        out.print(outcome_line(execution))
    return EXIT_FOR_STATE.get(execution.state, EXIT_PENDING)


@task(help={"id": "execution id", "json": "one JSON object on stdout"})
def resume(c: Any, id: str, json: bool = False) -> None:
    """Resume an execution whose process died, at the first step not verified."""
    from runbook_cli.commands import cli_actor, with_runtime

    with_runtime(
        lambda rt: _follow(rt, json, lambda: rt.engine.resume(id, actor=cli_actor(rt))),
        as_json=json,
    )


@task(help={"json": "one JSON object on stdout"})
def cleanup(c: Any, json: bool = False) -> None:
    """Run deferred steps that are due (a kept scratch database's drop); the bot does this
    itself, so run it (or cron it) only where no bot runs."""
    from runbook_cli.commands import cli_actor, consoles, emit_json, with_runtime
    from runbooks.engine.clock import iso

    def go(rt: Runtime) -> None:
        done = rt.engine.run_due_deferred(actor=cli_actor(rt))
        later = rt.engine.deferred()
        if json:
            emit_json({"done": done, "pending": later})
            return
        out = consoles(False)[0]
        for line in done:
            out.print(line, markup=False, highlight=False)
        for entry in later:
            out.print(
                f"pending: step {int(entry['step']) + 1} of {entry['execution_id']} "
                f"at {iso(float(entry['due']))}",
                markup=False,
                highlight=False,
            )
        if not done and not later:
            out.print("nothing deferred")

    with_runtime(go, as_json=json)


@task(
    help={
        "id": "execution id",
        "reason": "why (shown to the requester and in the audit log)",
        "json": "one JSON object on stdout",
    }
)
def cancel(c: Any, id: str, reason: str = "", json: bool = False) -> None:
    """Cancel an execution: pending ones at once, running ones between steps, then compensate."""
    from runbook_cli.commands import cli_actor, with_runtime

    def go(rt: Runtime) -> int:
        code = _follow(rt, json, lambda: rt.engine.cancel(id, actor=cli_actor(rt), reason=reason))
        return 0 if code in {EXIT_FAILED, EXIT_PENDING} else code

    with_runtime(go, as_json=json)


@task(
    help={
        "id": "execution id",
        "choice": "one of the choices the question names (the rollback gate: healthy or failed)",
        "reason": "why (kept with the step's output and in the audit log)",
        "json": "one JSON object on stdout",
    }
)
def answer(c: Any, id: str, choice: str, reason: str = "", json: bool = False) -> None:
    """Answer the question a running step waits on (the first answer counts).

    Example: invoke runs.answer rb-1a2b3c healthy --reason "dashboards fine; exporter down"
    """
    from runbook_cli.commands import cli_actor, emit_json, with_runtime

    def go(rt: Runtime) -> None:
        question = rt.engine.answer(id, choice, actor=cli_actor(rt), reason=reason)
        if json:
            emit_json({"execution_id": id, "step": question["step"], "answer": choice.lower()})
        else:
            print(f"answered {choice.lower()} to step {question['step']} of {id}: the run goes on")

    with_runtime(go, as_json=json)


# --------------------------------------------------------------------------------- audit


@task(
    help={
        "head": "SEQ:MAC of a head seen earlier (log stream or an earlier verify): "
        "catches deletion of the newest records",
        "json": "one JSON object on stdout",
    }
)
def verify(c: Any, head: str = "", json: bool = False) -> None:
    """Verify the audit chain; exit 0 if intact, 1 naming the first bad seq."""
    from runbook_cli.commands import emit_json, with_runtime
    from runbooks.engine import parse_head

    def go(rt: Runtime) -> int:
        result = rt.engine.audit.verify(head=parse_head(head) if head else None)
        if json:
            emit_json(
                {
                    "ok": result.ok,
                    "records": result.count,
                    "head": result.head,
                    "bad_seq": result.bad_seq,
                    "problem": result.problem,
                }
            )
        elif result.ok:
            print(f"audit chain intact: {result.count} records, head {result.head}")
        else:
            print(f"audit chain BROKEN at seq {result.bad_seq}: {result.problem}")
            print(f"last good head: {result.head}")
        return 0 if result.ok else EXIT_FAILED

    with_runtime(go, as_json=json)


@task(help={"n": "how many records (default 20)", "json": "one JSON array on stdout"})
def tail(c: Any, n: int = 20, json: bool = False) -> None:
    """Show the newest audit records."""
    from runbook_cli.commands import emit_json, with_runtime

    def go(rt: Runtime) -> None:
        records = rt.engine.audit.tail(n)
        if json:
            emit_json(records)
            return
        for r in records:
            target = r.get("target") or {}
            where = " ".join(
                str(v) for v in (target.get("runbook"), target.get("environment")) if v
            )
            print(
                f"{r['seq']:>6} {r['time']} {r['actor']['id']}@{r['actor']['origin']} "
                f"{r['action']} {where} {r.get('execution_id') or ''} → {r['outcome']}"
            )

    with_runtime(go, as_json=json)


@task(
    help={
        "since": "only records at or after this ISO time (e.g. 2026-11-01T00:00Z)",
        "format": "jsonl (default) or csv",
    }
)
def export(c: Any, since: str = "", format: str = "jsonl") -> None:
    """Export audit records as JSON lines or CSV on stdout."""
    import json as jsonlib

    from runbook_cli.commands import with_runtime
    from runbooks.engine.clock import parse_iso
    from runbooks.engine.errors import InvalidInput

    def go(rt: Runtime) -> None:
        if format not in {"jsonl", "csv"}:
            raise InvalidInput(f"--format {format!r} is not supported; use jsonl or csv")
        try:
            start = parse_iso(since) if since else None
        except ValueError:
            raise InvalidInput(
                f"--since {since!r} is not an ISO time; e.g. 2026-11-01T00:00Z"
            ) from None
        records = rt.engine.audit.export(since=start)
        if format == "jsonl":
            for record in records:
                sys.stdout.write(jsonlib.dumps(record, sort_keys=True) + "\n")
            return
        columns = [
            "seq",
            "time",
            "actor_id",
            "actor_origin",
            "action",
            "runbook",
            "environment",
            "execution_id",
            "incident",
            "outcome",
            "reason",
            "params",
            "mac",
        ]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for r in records:
            target = r.get("target") or {}
            writer.writerow(
                {
                    "seq": r["seq"],
                    "time": r["time"],
                    "actor_id": r["actor"]["id"],
                    "actor_origin": r["actor"]["origin"],
                    "action": r["action"],
                    "runbook": target.get("runbook"),
                    "environment": target.get("environment"),
                    "execution_id": r.get("execution_id"),
                    "incident": r.get("incident"),
                    "outcome": r["outcome"],
                    "reason": r.get("reason"),
                    "params": jsonlib.dumps(r.get("params") or {}, sort_keys=True),
                    "mac": r["mac"],
                }
            )
        sys.stdout.write(buffer.getvalue())

    with_runtime(go)


# -------------------------------------------------------------------------------- config


@task
def check(c: Any) -> None:
    """Validate config/ and schedules.yaml (drills against the catalog); print a summary, exit
    2 listing every problem."""
    from runbook_cli.commands import cli_errors
    from runbooks.engine import load_config, load_settings
    from runbooks.engine.clock import format_duration
    from runbooks.engine.errors import ConfigError

    with cli_errors():
        settings = load_settings()
        try:
            config = load_config(settings.config_dir, schedules=settings.schedules_path)
            from runbooks.catalog import load_catalog
            from runbooks.engine import require_valid_drills, require_valid_routes

            require_valid_drills(config, load_catalog())
            require_valid_routes(config, load_catalog())
        except ConfigError as exc:
            print(f"configuration INVALID ({settings.config_dir}):", file=sys.stderr)
            print(exc.message, file=sys.stderr)
            raise Exit(code=EXIT_REFUSED) from None
        from runbooks.adapters import kube_context_problems
        from runbooks.adapters.kube_contexts import CONTEXT_HINT

        if config.is_sandbox:  # the sandbox's emulators announce their kubeconfig, as for runs
            from runbooks.engine import read_sandbox_env

            env_file = settings.state_dir / "sandbox" / "env"
            kubeconfig = read_sandbox_env(env_file).get("KUBECONFIG") if env_file.exists() else None
            unresolved = kube_context_problems(
                config, kubeconfig=os.environ.get("KUBECONFIG") or kubeconfig
            )
        else:
            unresolved = kube_context_problems(config)
        if unresolved:
            print(
                f"configuration INVALID ({settings.config_dir}): Kubernetes contexts that "
                "cannot be resolved:",
                file=sys.stderr,
            )
            for problem in unresolved:
                print(f"  {problem}", file=sys.stderr)
            print(CONTEXT_HINT, file=sys.stderr)
            raise Exit(code=EXIT_REFUSED) from None
    print(f"configuration OK: {config.describe()}")
    for name, env in config.environments.environments.items():
        services = ", ".join(env.services) or "none"
        print(
            f"  {name:<12} {env.tier:<10} regions {', '.join(env.regions)} "
            f"(primary {env.primary_region}); services: {services}"
        )
    schedules = config.schedules
    print(
        f"  schedules ({settings.schedules_path or 'none'}): "
        f"{len(schedules.maintenance_windows)} maintenance window(s); drills: "
        f"{', '.join(d.name for d in schedules.drills) or 'none'}"
    )
    routes = config.alerts.routes
    print(
        f"  alerts (alerts.yaml): {sum(len(r.alerts) for r in routes)} alert(s) mapped to "
        f"{', '.join(sorted({r.runbook for r in routes})) or 'nothing'}; cooldown "
        f"{format_duration(config.alerts.cooldown)}"
    )
    print(
        f"  people: {', '.join(config.policy.people) or 'none'}; "
        f"rules: {len(config.policy.rules)}; "
        f"terminal identity override: {'allowed' if config.policy.allow_user_override else 'off'}"
    )


# ----------------------------------------------------------------------------------- bot


@task(help={"port": "port (default: $PORT, else 3000)"})
def serve(c: Any, port: int = 0) -> None:
    """Start the bot's HTTP server (/health, /ready, /metrics, Slack, the Alertmanager webhook)."""
    import os

    # exec rather than import: the terminal front end never imports the bot (Slack SDK).
    argv = [sys.executable, "-m", "bot", "serve", *(["--port", str(port)] if port else [])]
    os.execv(sys.executable, argv)  # noqa: S606


# ------------------------------------------------------------------------------- sandbox


@task(
    help={
        "bot": "also run the bot against it",
        "port": "the bot's port (default: $PORT, else 3000)",
    }
)
def up(c: Any, bot: bool = False, port: int = 0) -> None:
    """Run the whole sandbox (Kubernetes emulators per region, Slack) until Ctrl-C; writes
    .runbook-bot/sandbox/env for the bot, terminals and `kubectl` (source it)."""
    import os

    argv = [sys.executable, "-m", "sandbox", "up"]
    argv += ["--bot"] if bot else []
    argv += ["--port", str(port)] if port else []
    os.execv(sys.executable, argv)  # noqa: S606


@task(help={"yes": "do not ask"})
def reset(c: Any, yes: bool = False) -> None:
    """Set the default state store aside (kept beside it as a copy) and remove the sandbox
    files; refused while the sandbox or a bot runs on it."""
    import os

    argv = [sys.executable, "-m", "sandbox", "reset", *(["--yes"] if yes else [])]
    os.execv(sys.executable, argv)  # noqa: S606


@task(
    help={
        "as_": "person from policy.yaml (alice, bob, dave, carol)",
        "channel": "channel id (default C0OPS)",
    }
)
def slack(c: Any, text: str, as_: str = "alice", channel: str = "C0OPS") -> None:
    """Type a slash command in the sandbox workspace and print what the bot answered.

    Example: invoke sandbox.slack --as alice "/rollback production"
    """
    os.execv(  # noqa: S606 - replaces this process
        sys.executable,
        [sys.executable, "-m", "sandbox", "slack", "--as", as_, "--channel", channel, text],
    )


@task(
    help={
        "as_": "person from policy.yaml",
        "reason": "reason for a Deny dialog",
        "execution": "press it on this execution's card (rb-…) when several cards have it",
        "card": "press it on the N-th card that has it (1: the newest), as the error lists them",
    }
)
def click(  # noqa: PLR0917 - invoke makes each parameter a flag
    c: Any,
    label: str,
    as_: str = "bob",
    reason: str | None = None,
    execution: str | None = None,
    card: int = 0,
) -> None:
    """Press a button (Confirm, Cancel, Approve, Deny) as someone; when several cards have it,
    say which with --execution or --card (the error lists them).

    Example: invoke sandbox.click --as bob Approve --execution rb-7f3a2c
    """
    extra = ["--reason", reason] if reason else []
    extra += ["--execution", execution] if execution else []
    extra += ["--card", str(card)] if card else []
    os.execv(  # noqa: S606 - replaces this process
        sys.executable,
        [sys.executable, "-m", "sandbox", "click", "--as", as_, *extra, label],
    )


@task(help={"as_": "person from policy.yaml (alice, bob, dave, carol)"})
def dms(c: Any, as_: str = "alice") -> None:
    """Print the direct messages the bot sent this person (outcomes, changed plans).

    Example: invoke sandbox.dms --as alice
    """
    os.execv(  # noqa: S606 - replaces this process
        sys.executable, [sys.executable, "-m", "sandbox", "dms", "--as", as_]
    )


@task(help={"channel": "channel id (C0OPS: drills and ops; C0APPROVALS: approval cards)"})
def channel(c: Any, channel: str) -> None:
    """Print what the bot posted in a sandbox Slack channel, oldest first, newest last.

    Example: invoke sandbox.channel C0OPS
    """
    os.execv(  # noqa: S606 - replaces this process
        sys.executable, [sys.executable, "-m", "sandbox", "channel", channel]
    )


@task(
    help={
        "title": "the incident's title",
        "service": "PagerDuty service id: PSVCPROD (production, default) or PSVCSTAG (staging)",
        "urgency": "high (default) or low",
    }
)
def incident(c: Any, title: str, service: str = "PSVCPROD", urgency: str = "high") -> None:
    """Open an incident in the sandbox PagerDuty and print its id (for /incident, incident.*).

    Example: invoke sandbox.incident "api 5xx in us-east-1" --service PSVCSTAG --urgency low
    """
    argv = ["incident", title, "--service", service, "--urgency", urgency]
    os.execv(  # noqa: S606 - replaces this process
        sys.executable, [sys.executable, "-m", "sandbox", *argv]
    )


@task(
    help={
        "kind": "oom, broken-image, conflicts, health, error-rate, latency, probe-failures, "
        "prometheus-down, replication-lag, pagerduty-429, slack-429",
        "region": "one region (default: every region)",
        "value": "the fault's value: a memory limit (oom), an image, a rate, seconds, a count",
        "off": "turn it off",
    }
)
def fault(c: Any, kind: str, region: str = "", value: str = "", off: bool = False) -> None:
    """Turn one of the sandbox's fault hooks on (or off with --off); README lists them.

    Example: invoke sandbox.fault oom --value 3Gi
    """
    argv = ["fault", kind, "--region", region, "--value", value, *(["--off"] if off else [])]
    os.execv(  # noqa: S606 - replaces this process
        sys.executable, [sys.executable, "-m", "sandbox", *argv]
    )


def collections() -> list[Collection]:
    runs = Collection("runs")
    runs.add_task(cast("Task[Any]", list_), name="list")
    for item in (show, resume, cancel, answer, cleanup):
        runs.add_task(item)
    audit = Collection("audit")
    for item in (verify, tail, export):
        audit.add_task(item)
    config = Collection("config")
    config.add_task(cast("Task[Any]", check))
    bot = Collection("bot")
    bot.add_task(serve)
    sandbox = Collection("sandbox")
    sandbox.add_task(cast("Task[Any]", slack))
    sandbox.add_task(cast("Task[Any]", click))
    sandbox.add_task(cast("Task[Any]", dms))
    sandbox.add_task(cast("Task[Any]", channel))
    sandbox.add_task(cast("Task[Any]", incident))
    sandbox.add_task(cast("Task[Any]", fault))
    sandbox.add_task(cast("Task[Any]", up))
    sandbox.add_task(cast("Task[Any]", reset))
    return [runs, audit, config, bot, sandbox]
