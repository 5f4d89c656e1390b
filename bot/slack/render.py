"""Block Kit for plans, approval/progress cards and results.

Every message carries a plain ``text`` too (notifications, screen readers). Button values are
bound to what was shown: the plan card's Confirm carries the plan hash, the approval card's
Approve carries ``execution id:plan hash``.
"""

from __future__ import annotations

import json
from typing import Any

from bot.slack.buttons import ConfirmValue, IncidentRunValue
from runbooks.engine import Plan, ReadinessReport, findings_verdict, with_run_id
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.models import TERMINAL_STATES, Execution, State, StepStatus

Blocks = list[dict[str, Any]]

STATE_EMOJI = {
    State.AWAITING_APPROVAL: ":hourglass_flowing_sand:",
    State.APPROVED: ":white_check_mark:",
    State.DENIED: ":no_entry:",
    State.EXPIRED: ":alarm_clock:",
    State.RUNNING: ":arrows_counterclockwise:",
    State.SUCCEEDED: ":large_green_circle:",
    State.FAILED: ":red_circle:",
    State.COMPENSATING: ":leftwards_arrow_with_hook:",
    State.COMPENSATED: ":large_yellow_circle:",
    State.COMPENSATION_FAILED: ":rotating_light:",
    State.CANCELLED: ":black_square_for_stop:",
}
STEP_EMOJI = {
    StepStatus.PENDING: ":white_circle:",
    StepStatus.RUNNING: ":arrows_counterclockwise:",
    StepStatus.SUCCEEDED: ":white_check_mark:",
    StepStatus.FAILED: ":x:",
    StepStatus.CANCELLED: ":black_square_for_stop:",
    StepStatus.UNDOING: ":leftwards_arrow_with_hook:",
    StepStatus.UNDONE: ":leftwards_arrow_with_hook:",
    StepStatus.UNDO_FAILED: ":rotating_light:",
}


def escape(text: object) -> str:
    """Text we did not write, made inert for mrkdwn: ``&``, ``<`` and ``>`` as Slack documents
    (``&amp;``, ``&lt;``, ``&gt;``), so ``<!channel>`` or ``<https://evil.example|click>`` in an
    incident title, an alert's summary or a person's reason show as typed and do nothing."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: object, label: str) -> str:
    """``<url|label>`` for an https URL that cannot break out of the link; else the label."""
    text = str(url or "")
    if not text.startswith("https://") or any(c in text for c in "<>| \n"):
        return label
    return f"<{text.replace('&', '&amp;')}|{label}>"


#: How the bot starts a refusal it answers privately (a decision or request it may not make
#: happen): ``:no_entry: <why>``. The sandbox's ``click`` and ``slack`` read it for their exit
#: code, as a terminal's refusal exits 2.
REFUSAL_MARK = ":no_entry:"


def shorten_banner(banner: str) -> str:
    """``PRODUCTION`` or ``REHEARSAL (staging tier)`` (config and state paths are for
    terminals)."""
    return banner.split(" · config ", maxsplit=1)[0]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2900]}]}


def button(
    label: str,
    action_id: str,
    value: str,
    *,
    style: str | None = None,
    confirm: tuple[str, str] | None = None,
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if style:
        element["style"] = style
    if confirm:
        title, text = confirm
        element["confirm"] = {
            "title": {"type": "plain_text", "text": title[:100]},
            "text": {"type": "mrkdwn", "text": text[:300]},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Back"},
        }
    return element


def _params_line(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if v is not None and k != "environment"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "defaults"


def _regions(plan: Plan) -> str:
    """The region asked for, else the regions the steps act in (staging's one region is
    named, not "see the steps")."""
    if plan.region:
        return plan.region
    seen = sorted({str(s["args"]["region"]) for s in plan.steps if s["args"].get("region")})
    if seen:
        return ", ".join(seen)
    return "see the steps" if plan.steps else "none (nothing to do)"


def _plan_fields(plan: Plan, banner: str) -> list[dict[str, Any]]:
    fields = [
        f"*Environment*\n{banner}",
        f"*Region*\n{_regions(plan)}",
        f"*Lock*\n`{plan.lock_key or 'none (read-only)'}`",
        f"*Parameters*\n{_params_line(plan.params)}",
    ]
    return [{"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]}]


def _steps_text(plan: Plan) -> str:
    lines = []
    for i, step in enumerate(plan.steps, start=1):
        why = str(step.get("irreversible_reason") or "")
        if step["reversible"]:
            mark = ""
        elif why.startswith("a check"):  # a read-only step: nothing to undo
            mark = f" _({escape(why)})_"
        else:
            mark = " _(cannot be undone)_"
        lines.append(f"{i}. {step['description']}{mark}")
    return "\n".join(lines) or "_no steps: nothing to change_"


def plan_blocks(
    plan: Plan,
    *,
    banner: str,
    approvals: int,
    reason: str | None,
    request: ConfirmValue | None,
    heading: str | None = None,
) -> Blocks:
    """The private plan: what will change; Confirm / Cancel unless ``request`` is None."""
    blocks: Blocks = []
    if heading:
        blocks.append(_section(heading))
    blocks.append(_section(f"*{plan.runbook}* — {plan.summary}"))
    blocks += _plan_fields(plan, banner)
    blocks.append(_section("*Plan*\n" + _steps_text(plan)))
    for note in plan.notes:
        blocks.append(_context(f":information_source: {note}"))
    for warning in plan.warnings[:WARNING_BLOCKS]:
        blocks.append(_context(f":warning: {escape(warning)}"[:SECTION_CHARS]))
    needs = (
        "read-only: runs at once"
        if plan.read_only
        else f"needs {approvals} approval(s)"
        if approvals
        else "no approval needed"
    )
    blocks.append(
        _context(
            f"{needs} · plan `{plan.short_hash}`"
            + (f" · reason: {escape(reason)}" if reason else "")
        )
    )
    if request is not None:
        value = request.to_json()
        blocks.append(
            {
                "type": "actions",
                "block_id": "plan",
                "elements": [
                    button("Confirm", "rb_confirm", value, style="primary"),
                    button("Cancel", "rb_dismiss", value),
                ],
            }
        )
    else:
        blocks.append(_context("dry run: nothing was changed"))
    return blocks


def plan_text(plan: Plan, banner: str) -> str:
    return f"Plan for {plan.runbook} in {banner}: {len(plan.steps)} step(s)"


def card_blocks(execution: Execution, *, banner: str, now: float) -> Blocks:
    """The one message per execution: approvals while pending, steps while running, result."""
    plan = execution.plan
    state = execution.state
    title = f"{STATE_EMOJI.get(state, '')} *{plan.runbook}* `{execution.id}` — {state}"
    findings = findings_verdict(execution)
    if findings:
        title += f" · {findings}"
    blocks: Blocks = [_section(title)]
    blocks += _plan_fields(plan, banner)
    who = f"*Requested by* {execution.requester.name} (via {execution.requester.origin})"
    if execution.reason:
        who += f"\n*Reason* {escape(execution.reason)}"
    if execution.incident:
        incident = escape(execution.incident)
        who += f"\n*Incident* {_link(f'https://pagerduty.com/incidents/{incident}', incident)}"
    if execution.break_glass:
        who += "\n:rotating_light: *BREAK-GLASS*: approvals bypassed; a review is open"
    blocks.append(_section(who))
    blocks.append(_section("*Steps*\n" + _step_lines(execution)))
    approvals = execution.valid_approvals()
    if execution.required_approvals:
        names = ", ".join(a.actor.name for a in approvals) or "nobody yet"
        line = f"*Approvals* {len(approvals)}/{execution.required_approvals}: {names}"
        if state == State.AWAITING_APPROVAL and execution.expires_at:
            line += f" · expires in {format_duration(max(0.0, execution.expires_at - now))}"
            line += f" ({iso(execution.expires_at)})"
        blocks.append(_section(line))
    if execution.error:
        blocks.append(_section(f"*Why* {escape(execution.error)[:SECTION_CHARS]}"))
    if state in TERMINAL_STATES:
        # What the steps reported (a restore test's checks, a failover's RTO), as the CLI
        # prints it, within Slack's limits.
        output = [line for record in execution.steps for line in record.output]
        if output:
            room = MAX_BLOCKS - len(blocks) - 4
            blocks += _packed(["*Report*", *output], room, execution.id)
    blocks.append(_context(f"plan `{plan.short_hash}` · lock `{plan.lock_key or '-'}`"))
    buttons = card_buttons(execution)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"card:{execution.id}", "elements": buttons})
    return blocks


#: Slack's limits: 50 blocks per message, 3,000 characters per section text.
MAX_BLOCKS = 50
SECTION_CHARS = 2900


def report_blocks(execution: Execution, *, banner: str, now: float) -> Blocks:
    """A read-only runbook's report: what the CLI prints as notes, as sections in Slack.

    Lines are packed into sections of at most ``SECTION_CHARS`` characters; when the report
    would pass Slack's block limit, the last block says how much was left out and where to
    see all of it.
    """
    plan = execution.plan
    title = f"{STATE_EMOJI.get(execution.state, '')} *{plan.runbook}* `{execution.id}` — "
    blocks: Blocks = [_section(title + str(execution.state)), *_plan_fields(plan, banner)]
    lines = [*plan.notes, *(line for record in execution.steps for line in record.output)]
    if execution.error:
        lines.append(f"*Why* {escape(execution.error)}")
    blocks += _packed(
        lines or ["(the report is empty)"], MAX_BLOCKS - len(blocks) - 2, execution.id
    )
    blocks.append(_context(f"plan `{plan.short_hash}` · read-only: nothing was changed"))
    return blocks


def _packed(lines: list[str], room: int, execution_id: str) -> Blocks:
    """Lines packed into sections of at most ``SECTION_CHARS``, at most ``room`` of them;
    past that, a last block says how much was left out and where to see all of it."""
    chunks: list[str] = []
    for full in lines:
        line = full[:SECTION_CHARS]
        if chunks and len(chunks[-1]) + 1 + len(line) <= SECTION_CHARS:
            chunks[-1] += "\n" + line
        else:
            chunks.append(line)
    room = max(1, room)
    blocks = [_section(chunk) for chunk in chunks[:room]]
    if len(chunks) > room:
        blocks.append(
            _context(
                f"{len(chunks) - room} more part(s) left out (Slack's message limit): "
                f"`runs.show {execution_id}` shows all of it"
            )
        )
    return blocks


def card_buttons(execution: Execution) -> list[dict[str, Any]]:
    value = f"{execution.id}:{execution.plan.hash}"
    what = f"{execution.runbook} in {execution.environment} ({execution.id})"
    if execution.state == State.AWAITING_APPROVAL:
        return [
            button(
                "Approve",
                "rb_approve",
                value,
                style="primary",
                confirm=("Approve?", f"Approve {what} as shown on this card?"),
            ),
            button(
                "Deny",
                "rb_deny",
                value,
                style="danger",
                confirm=("Deny?", f"Deny {what}? You will be asked for a reason."),
            ),
        ]
    if execution.state in {State.APPROVED, State.RUNNING}:
        asked = [
            button(
                str(choice).capitalize(),
                f"rb_answer_{index}",  # action ids are unique within a block
                f"{execution.id}:{record.question['answer_key']}:{choice}",
                style="primary" if index == 0 else None,
                confirm=(
                    f"Answer {choice}?",
                    f"Answer {choice} to step {record.index + 1} of {what}: "
                    f"{record.question['text']}",
                ),
            )
            for record in execution.steps
            if record.status == StepStatus.RUNNING and record.question
            for index, choice in enumerate(record.question["choices"])
        ]
        return [
            *asked,
            button(
                "Cancel",
                "rb_cancel_run",
                value,
                style="danger",
                confirm=("Cancel?", f"Stop {what}? Completed steps are compensated."),
            ),
        ]
    return []


def _step_lines(execution: Execution) -> str:
    lines = []
    for record in execution.steps:
        took = ""
        if record.started_at and record.ended_at:
            took = f" ({format_duration(record.ended_at - record.started_at)})"
        described = with_run_id(record.description, execution.id)
        line = f"{STEP_EMOJI.get(record.status, '')} {record.index + 1}. {described}{took}"
        if record.status == StepStatus.RUNNING and record.progress:
            line += f"\n      _{record.progress}_"
        if record.error:
            line += f"\n      _{escape(record.error)}_"
        lines.append(line)
    return "\n".join(lines) or "_no steps_"


def card_text(execution: Execution) -> str:
    return f"{execution.runbook} {execution.id} in {execution.environment}: {execution.state}"


def outcome_text(execution: Execution) -> str:
    """The final word to the requester."""
    base = f"`{execution.id}` {execution.runbook} in {execution.environment}"
    state = execution.state
    if state == State.SUCCEEDED:
        took = (
            f" in {format_duration(execution.ended_at - execution.started_at)}"
            if execution.ended_at and execution.started_at
            else ""
        )
        findings = findings_verdict(execution)
        verdict = f" ({findings})" if findings else ""
        return f":large_green_circle: {base} succeeded{took}{verdict}."
    why = f": {escape(execution.error)}" if execution.error else ""
    return f"{STATE_EMOJI.get(state, '')} {base} {state}{why}"


def execution_line(execution: Execution) -> str:
    return (
        f"{STATE_EMOJI.get(execution.state, '')} `{execution.id}` {execution.runbook} "
        f"{execution.environment} — {execution.state} · {execution.requester.name} · "
        f"{iso(execution.created_at)}"
    )


def deny_modal(execution_id: str, channel: str | None) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "rb_deny_modal",
        "private_metadata": json.dumps({"id": execution_id, "channel": channel}),
        "title": {"type": "plain_text", "text": "Deny request"},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Back"},
        "blocks": [
            _section(f"Deny `{execution_id}`? The requester sees your reason."),
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {"type": "plain_text_input", "action_id": "value", "multiline": True},
            },
        ],
    }


def incident_card(suggestion: dict[str, Any]) -> tuple[str, Blocks]:
    """A PagerDuty incident on a mapped service, with a Run button per suggested runbook. A
    click is the clicker's request (the plan first, privately), linked to the incident."""

    incident = suggestion["incident"]
    link = _link(suggestion.get("url"), escape(incident))
    service = f" · service `{escape(suggestion['service'])}`" if suggestion.get("service") else ""
    title = escape(suggestion.get("title", ""))
    text = (
        f":rotating_light: PagerDuty incident {link} triggered: *{title}*"
        f"\nenvironment `{escape(suggestion['environment'])}`{service}"
    )
    buttons = [
        button(
            f"Run {runbook}",
            "rb_incident_run",
            IncidentRunValue(
                runbook=runbook,
                environment=suggestion["environment"],
                service=suggestion.get("service"),
                incident=incident,
            ).to_json(),
        )
        for runbook in suggestion["runbooks"][:5]
    ]
    blocks: Blocks = [_section(text)]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
        blocks.append(_context("Run shows you the plan first; nothing runs without Confirm."))
    return f"PagerDuty incident {escape(incident)} triggered: {title}", blocks


#: A plan's readiness warnings shown as blocks (Slack allows 50 blocks in a message).
WARNING_BLOCKS = 10
#: ``/runbook readiness``: at most this many problems listed (the rest counted).
READINESS_LINES = 25


def readiness_text(report: ReadinessReport) -> str:
    """An evaluation in words: each problem on a line, then the verdict."""
    problems = report.problems
    lines = [
        f":warning: *{escape(f.environment)}* {escape(f.runbook)} · {escape(f.check)} · "
        f"{escape(f.subject)}: {escape(f.detail)}"
        for f in problems[:READINESS_LINES]
    ]
    if len(problems) > READINESS_LINES:
        lines.append(
            f"… and {len(problems) - READINESS_LINES} more (`invoke readiness.check` lists all)"
        )
    verdict = "ready" if report.ready else f"{len(problems)} finding(s)"
    lines.append(f"*readiness*: {len(report.findings)} check(s), {verdict}")
    return "\n".join(lines)
