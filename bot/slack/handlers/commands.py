"""Slash commands: parsed and identity-checked inside the ack, the rest on the work pool
(runbooks, ``/runbook`` admin verbs, ``/drills``, ``/incident``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from slack_bolt import Ack, Respond

from bot.slack.buttons import (
    ConfirmValue,
)
from bot.slack.commands import (
    Parsed,
    UsageError,
    command_names,
    namespace_usage,
    parse,
    usage,
)
from bot.slack.guard import redacting
from bot.slack.handlers.base import (
    REPORT_DAYS,
    REPORT_ROWS,
    Listening,
    short_banner,
    trigger_of,
)
from bot.slack.render import (
    card_blocks,
    card_text,
    escape,
    execution_line,
    plan_blocks,
    plan_text,
    readiness_text,
    report_blocks,
)
from runbooks.engine import Outcome, Request
from runbooks.engine.models import Actor

if TYPE_CHECKING:  # the face loads it lazily; the handler imports it when a drill verb runs
    from runbooks.engine import DrillScheduler

log = structlog.get_logger("runbook_bot.slack")


class Commands:
    """The slash-command listeners."""

    def __init__(self, kit: Listening) -> None:
        self.kit = kit
        self.runtime = kit.runtime
        self.engine = kit.engine
        self.notifier = kit.notifier

    def on_command(self, ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        """Parse and check identity inside the ack; bad input is answered in the ack,
        privately (by the error mapper). Planning and the rest happen after the ack, on the
        work pool; what they raise is answered by the same mapper."""
        ack, respond = redacting(ack), redacting(respond)
        user_id = command.get("user_id", "")
        if self.kit.actor(user_id) is None:
            text = self.kit.refuse_stranger(
                user_id, command.get("user_name", ""), command["command"]
            )
            ack(text=text, response_type="ephemeral")
            return
        try:
            self._parse(command)
        except UsageError as exc:
            # Caught for what only a command does: the audit record, written before the
            # answer so that whoever sees the refusal can find it in the log. The answer (the
            # usage text, in the ack) is the error mapper's: Bolt hands it what is re-raised.
            actor = self.kit.actor(user_id)
            assert actor is not None
            self.engine.audit.record(
                "request.rejected",
                actor=actor,
                outcome="usage_error",
                target={"slack": command["command"]},
                params={"text": command.get("text", "")},
                detail={"error": exc.message, "channel": command.get("channel_id")},
            )
            raise
        ack()
        self.kit.later(command, respond, self.run_command, command, respond)

    def _parse(self, command: dict[str, Any]) -> Parsed:
        return parse(
            self.engine.registry,
            command["command"],
            command.get("text", ""),
            environments=self.engine.config.environment_names(),
        )

    def run_command(self, command: dict[str, Any], respond: Respond) -> None:
        user_id = command.get("user_id", "")
        actor = self.kit.actor(user_id)
        if actor is None:
            return
        try:
            parsed = self._parse(command)
        except UsageError:
            return  # already answered in the ack: not a second answer from the mapper
        if parsed.runbook is None and parsed.verb == "help" and parsed.command != "/runbook":
            respond(
                namespace_usage(
                    self.engine.registry,
                    parsed.command,
                    environments=self.engine.config.environment_names(),
                )
            )
        elif parsed.command == "/drills":
            self._drills(parsed, actor, respond, user_id, command.get("channel_id"))
        elif parsed.command == "/incident":
            self._incident(parsed, actor, respond)
        elif parsed.runbook is None:
            self._admin(parsed, actor, respond, user_id, command.get("channel_id"))
        elif parsed.verb == "help":
            respond(
                usage(
                    self.engine.registry.get(parsed.runbook),
                    parsed.command,
                    environments=self.engine.config.environment_names(),
                )
            )
        else:
            self.request(parsed, actor, respond, user_id, command.get("channel_id"))

    def request(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        assert parsed.runbook is not None
        flags = parsed.flags
        result = self.engine.request(
            Request(
                runbook=parsed.runbook,
                params=parsed.params,
                actor=actor,
                channel=channel,
                reason=flags.get("reason"),
                incident=flags.get("incident"),
                break_glass=bool(flags.get("break_glass")),
                dry_run=parsed.dry_run,
                drill=flags.get("drill"),
                trigger=trigger_of(flags.get("trigger"), actor, flags.get("incident")),
            )
        )
        plan = result.plan
        banner = short_banner(self.runtime, plan.environment)
        if result.outcome == Outcome.REPORTED:
            assert result.execution is not None
            respond(
                text=card_text(result.execution),
                blocks=report_blocks(result.execution, banner=banner, now=self.engine.clock.now()),
            )
            return
        request = None
        if result.outcome == Outcome.CONFIRM:
            request = ConfirmValue(
                runbook=plan.runbook,
                params=parsed.params,
                plan_hash=plan.hash,
                requester=user_id,
                channel=channel,
                reason=flags.get("reason"),
                incident=flags.get("incident"),
                break_glass=bool(flags.get("break_glass")),
                drill=flags.get("drill"),
                trigger=flags.get("trigger"),
            )
        respond(
            text=plan_text(plan, banner),
            blocks=plan_blocks(
                plan,
                banner=banner,
                approvals=result.approvals,
                reason=flags.get("reason"),
                request=request,
                heading=(
                    f":warning: {result.dry_run_verdict}"
                    if result.would_refuse
                    else result.dry_run_verdict
                    if parsed.dry_run
                    else None
                ),
            ),
        )

    def _drills(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        from runbooks.engine import DrillScheduler
        from runbooks.engine.clock import iso

        scheduler = DrillScheduler(self.engine, self.runtime.config.schedules)
        if parsed.verb == "list":
            now = self.engine.clock.now()
            lines = []
            for drill in self.runtime.config.schedules.drills:
                fire = drill.next_fire(now)
                history = scheduler.history(drill.name)
                last = f"{iso(history[0]['at'])} {history[0]['state']}" if history else "none"
                paused = scheduler.paused(drill.name)
                state = f" · :double_vertical_bar: PAUSED: {paused['reason']}" if paused else ""
                lines.append(
                    f"*{drill.name}* `{drill.runbook}` · next {iso(fire)} "
                    f"({drill.local(fire)}) · last {last}{state}"
                )
            respond("\n".join(lines) or "no drills in schedules.yaml")
            return
        if parsed.verb == "report":
            self._drill_report(scheduler, parsed.args[0] if parsed.args else None, respond, channel)
            return
        name = parsed.args[0]
        if parsed.verb == "pause":
            said = scheduler.pause(name, actor=actor, reason=parsed.flags.get("reason") or "")
            respond(f":double_vertical_bar: {name} paused: {said}")
            return
        if parsed.verb == "resume":
            scheduler.resume(name, actor=actor)
            respond(f":arrow_forward: {name} resumed")
            return
        # Who may run a drill by hand is the engine's decision (policy drills.operators).
        drill = scheduler.authorise("run", name, actor=actor)
        request = Parsed(
            command=f"/{drill.runbook.split('.')[0]}",
            runbook=drill.runbook,
            params=dict(drill.params),
            flags={"reason": f"drill {drill.name} (run by hand)", "drill": drill.name},
        )
        self.request(request, actor, respond, user_id, channel)

    def _incident(self, parsed: Parsed, actor: Actor, respond: Respond) -> None:
        """``/incident list|show|ack|resolve|note``: the engine's incident verbs (authorised,
        redacted, audited there, as for the terminal) over the PagerDuty adapter."""
        from runbooks.adapters.pagerduty import PagerDuty, PagerDutySettings
        from runbooks.engine import Incidents, pagerduty_services
        from runbooks.engine.errors import InvalidInput

        if parsed.verb == "list" and not pagerduty_services(
            self.runtime.config, parsed.args[0] if parsed.args else None
        ):
            respond("no PagerDuty services mapped (environments.yaml: <env>.pagerduty)")
            return
        settings = PagerDutySettings.from_env()
        if not settings.api_token:
            raise InvalidInput("PagerDuty is not configured on the bot (PAGERDUTY_API_TOKEN)")
        pagerduty = PagerDuty(settings)
        incidents = Incidents(self.engine, pagerduty)
        try:
            if parsed.verb == "list":
                found = incidents.list_open(parsed.args[0] if parsed.args else None)
                lines = [
                    f"*{escape(i.incident['id'])}* "
                    f"#{escape(i.incident.get('incident_number', '?'))} "
                    f"`{escape(i.incident['status'])}` {escape(i.incident.get('title', ''))} · "
                    f"{i.environment or ''}"
                    for i in found
                ]
                respond("\n".join(lines) or "no open incidents")
                return
            incident_id = parsed.args[0]
            if parsed.verb == "show":
                incident, notes = incidents.show(incident_id)
                lines = [
                    f"*{escape(incident['id'])}* `{escape(incident['status'])}` "
                    f"{escape(incident.get('title', ''))}"
                ]
                lines += [
                    f"• {escape(n.get('created_at', ''))}: {escape(n.get('content', ''))}"
                    for n in notes[-5:]
                ]
                respond("\n".join(lines))
                return
            if parsed.verb == "note":
                incidents.note(incident_id, " ".join(parsed.args[1:]), actor=actor)
                respond(f":memo: noted on {incident_id}")
                return
            status = "acknowledged" if parsed.verb == "ack" else "resolved"
            incidents.set_status(incident_id, status, actor=actor)
            respond(f"{incident_id} {status}")
        finally:
            pagerduty.close()

    def _drill_report(
        self, scheduler: DrillScheduler, name: str | None, respond: Respond, channel: str | None
    ) -> None:
        """The recent runs per drill as text, and each drill's trend chart as an image in the
        channel (the CLI's ``drills.report --format html`` is the full evidence)."""
        from reports import drills as report
        from runbooks.engine import drill_evidence as evidence

        now = self.engine.clock.now()
        found = evidence.collect(scheduler, name=name, since=now - REPORT_DAYS * 86400.0)
        lines = [f"*Drill evidence*, last {REPORT_DAYS} days:"]
        for drill in found:
            lines.append(f"*{drill.name}* `{drill.runbook}` · {drill.summary()}")
            for run in drill.runs[:REPORT_ROWS]:
                row = report.slack_row(run)
                lines.append(f"• {row}")
            if len(drill.runs) > REPORT_ROWS:
                lines.append(f"• … {len(drill.runs) - REPORT_ROWS} older run(s)")
        lines.append("Full report: `invoke drills.report --format html --out drills.html`")
        respond("\n".join(lines))
        if channel is None:
            return
        client = self.notifier.courier.client
        for drill in found:
            if not drill.executed or not report.measured(drill):
                continue
            client.files_upload_v2(
                channel=channel,
                file=report.chart_png(drill),
                filename=f"{drill.name}-trend.png",
                title=f"{drill.name}: RTO and RPO per run against the target",
                alt_txt=f"{drill.name}: {drill.summary()}",
                initial_comment=f"{drill.name}: {drill.summary()}",
            )

    def _admin(
        self, parsed: Parsed, actor: Actor, respond: Respond, user_id: str, channel: str | None
    ) -> None:
        engine = self.engine
        if parsed.verb == "help":
            commands = ", ".join(command_names(engine.registry))
            respond(
                f"*Commands*: {commands}. Type `/<command> help` for one.\n"
                + namespace_usage(engine.registry, "/runbook")
            )
            return
        if parsed.verb == "list":
            rows = engine.list(limit=15)
            respond("\n".join(execution_line(e) for e in rows) or "no executions yet")
            return
        if parsed.verb == "readiness":
            environment = parsed.args[0] if parsed.args else None
            respond(readiness_text(engine.readiness(actor=actor, environment=environment)))
            return
        execution = engine.get(parsed.args[0])
        banner = short_banner(self.runtime, execution.environment)
        if parsed.verb in {"show", "approve"}:
            # Approving means pressing Approve on the card you are shown: bound to that plan.
            respond(
                text=card_text(execution),
                blocks=card_blocks(execution, banner=banner, now=engine.clock.now()),
            )
            return
        if parsed.verb == "deny":
            engine.deny(execution.id, actor=actor, reason=parsed.flags["reason"])
            respond(f"You denied `{execution.id}`.")
            self.kit.done()
            return
        if parsed.verb == "cancel":
            self.kit.cancel(execution.id, actor, parsed.flags.get("reason") or "")
            respond(f"Cancellation of `{execution.id}` requested.")
        if parsed.verb == "answer":
            choice = parsed.args[1].lower()
            question = engine.answer(
                execution.id, choice, actor=actor, reason=parsed.flags.get("reason") or ""
            )
            respond(f"You answered {choice} to step {question['step']} of `{execution.id}`.")
            self.kit.done()
