"""The drill report (``drills.report``): Markdown, HTML and trend charts of the evidence the
engine collects (``runbooks.engine.drill_evidence``), for the CLI and Slack.

``markdown`` and ``html`` render it; the HTML page is self-contained (inline CSS, the trend
charts inline as SVG, no script, no external reference). ``chart_svg`` / ``chart_png`` draw
the trend (RTO and RPO per run against the target line) with matplotlib, imported only here
and only when a chart is drawn: the engine imports no renderer (.importlinter).
"""

from __future__ import annotations

import html as html_lib
import io
import re
from typing import TYPE_CHECKING, Any

from runbooks.engine import FAILED_VERDICT
from runbooks.engine.clock import format_duration, iso

if TYPE_CHECKING:
    from runbooks.engine import DrillEvidence, DrillRun, Measure, ReportScope


def _measure_text(measure: Measure | None) -> str:
    if measure is None:
        return "not measured"
    text = format_duration(measure.seconds)
    if measure.target is not None:
        text += f" / {format_duration(measure.target)} " + ("met" if measure.met else "MISSED")
    return text


COLUMNS = ("date (UTC)", "started by", "verdict", "RTO / target", "RPO / target", "approvals")


def _row(run: DrillRun) -> list[str]:
    verdict = run.verdict + (f": {run.note}" if run.note and not run.passed else "")
    execution = f" {run.execution_id}" if run.execution_id else ""
    return [
        iso(run.at),
        run.started_by + execution,
        verdict,
        _measure_text(run.rto) if run.execution_id else "",
        _measure_text(run.rpo) if run.execution_id else "",
        run.approvals_text(),
    ]


def slack_row(run: DrillRun) -> str:
    """One run as a line of Slack mrkdwn."""
    date, by, verdict, rto, rpo, approvals = _row(run)
    parts = [f"{date[:16].replace('T', ' ')} UTC", f"*{verdict}*", by]
    if run.execution_id:
        parts += [f"RTO {rto}", f"RPO {rpo}", f"approvals: {approvals}"]
    return " · ".join(parts)


def _heading(drill: DrillEvidence) -> str:
    params = " ".join(f"{k}={v}" for k, v in drill.params.items())
    return f"{drill.runbook} {params}".strip() + f", {drill.cron} ({drill.timezone})"


def markdown(
    evidence: list[DrillEvidence],
    *,
    generated_at: float,
    scope: ReportScope,
    charts: dict[str, str] | None = None,
) -> str:
    """The report as Markdown tables; ``charts`` maps a drill to an image path to link."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["# Drill evidence", "", f"Generated {iso(generated_at)} by runbook-bot.", ""]
    lines += [f"- {line}" for line in scope.lines()] + [""]
    for drill in evidence:
        lines += [f"## {drill.name}", "", f"{_heading(drill)}. {drill.summary()}.", ""]
        if charts and drill.name in charts:
            lines += [
                f"![{drill.name}: {' and '.join(measured(drill))} per run]({charts[drill.name]})",
                "",
            ]
        if drill.executed and not measured(drill):
            lines += [no_chart_text(drill), ""]
        if not drill.runs:
            lines += ["No runs recorded yet.", ""]
            continue
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for run in drill.runs:
            lines.append("| " + " | ".join(cell(c) for c in _row(run)) + " |")
        lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem;
       color: #1d1c1d; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.passed { color: #1a7f37; } td.failed { color: #b42318; font-weight: 600; }
td.other { color: #8a6100; }
figure { margin: 0.5rem 0; } figure svg { max-width: 100%; height: auto; }
"""


def html(evidence: list[DrillEvidence], *, generated_at: float, scope: ReportScope) -> str:
    """The report as one self-contained HTML page with the trend charts inline as SVG."""
    esc = html_lib.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Drill evidence</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Drill evidence</h1>",
        f"<p>Generated {esc(iso(generated_at))} by runbook-bot.</p>",
        '<ul class="scope">',
        *(f"<li>{esc(line)}</li>" for line in scope.lines()),
        "</ul>",
    ]
    for drill in evidence:
        parts.append(f'<section id="{esc(drill.name)}"><h2>{esc(drill.name)}</h2>')
        parts.append(f"<p>{esc(_heading(drill))}. {esc(drill.summary())}.</p>")
        if drill.executed and measured(drill):
            what = " and ".join(measured(drill))
            parts.append(
                f'<figure class="trend">{chart_svg(drill)}'
                f"<figcaption>{what} per run against the target; a shaded column is a failed "
                "run</figcaption></figure>"
            )
        elif drill.executed:
            parts.append(f'<p class="no-chart">{esc(no_chart_text(drill))}</p>')
        if not drill.runs:
            parts.append("<p>No runs recorded yet.</p></section>")
            continue
        parts.append("<table><thead><tr>")
        parts += [f"<th>{esc(c)}</th>" for c in COLUMNS]
        parts.append("</tr></thead><tbody>")
        for run in drill.runs:
            cells = _row(run)
            kind = (
                "passed"
                if run.passed
                else "failed"
                if run.verdict.startswith((FAILED_VERDICT, "missed"))
                else "other"
            )
            parts.append("<tr>")
            for index, text in enumerate(cells):
                css = f' class="{kind}"' if index == 2 else ""
                parts.append(f"<td{css}>{esc(text)}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


SERIES_COLOUR = "#1f77b4"
TARGET_COLOUR = "#d62728"


FAILED_COLOUR = "#fbd3cf"
MEASURES = ("RTO", "RPO")


def measured(drill: DrillEvidence) -> list[str]:
    """Which of RTO and RPO some run of the drill measured (a chart each; none: no chart)."""
    return [name for name in MEASURES if any(getattr(r, name.lower()) for r in drill.executed)]


def no_chart_text(drill: DrillEvidence) -> str:
    """Why a drill that ran has no chart, in words."""
    failed = sum(1 for r in drill.executed if r.verdict.startswith("FAILED"))
    text = (
        f"No chart: none of its {len(drill.executed)} run(s) measured RTO or RPO "
        "(this runbook does not report them)"
    )
    return text + (f"; {failed} failed (see the table)." if failed else ".")


def _tick_label(run: DrillRun) -> str:
    # Date and time, and the execution: two runs on one day never share a label.
    when = iso(run.at)
    return f"{when[:10]} {when[11:16]}\n{run.execution_id or ''}".rstrip()


def _figure(drill: DrillEvidence) -> Any:
    from matplotlib.figure import Figure

    runs = sorted(drill.executed, key=lambda r: r.at)
    names = measured(drill)
    labels = [_tick_label(run) for run in runs]
    failed = [i for i, run in enumerate(runs) if run.verdict.startswith(FAILED_VERDICT)]
    figure = Figure(figsize=(4.8 * len(names) + 0.6, 4.0), dpi=100)
    handles: dict[str, Any] = {}
    for column, name in enumerate(names):
        axes = figure.add_subplot(1, len(names), column + 1)
        axes.patch.set_gid(f"plot-area-{name}")
        points = [
            (index, getattr(run, name.lower()))
            for index, run in enumerate(runs)
            if getattr(run, name.lower()) is not None
        ]
        scale, unit = _unit([m.seconds for _, m in points] + [m.target or 0 for _, m in points])
        for index in failed:
            # A failed run is a shaded column across the plot, whether it measured or not.
            band = axes.axvspan(index - 0.4, index + 0.4, color=FAILED_COLOUR, zorder=0)
            band.set_gid(f"failed-run-{name}-{index}")
            handles["failed run"] = band
        xs = [i for i, _ in points]
        (line,) = axes.plot(
            xs,
            [m.seconds / scale for _, m in points],
            marker="o",
            color=SERIES_COLOUR,
            linewidth=2,
        )
        handles["achieved"] = line
        targets = [(i, m.target) for i, m in points if m.target is not None]
        if len(targets) == 1:
            handles["target"] = axes.axhline(
                targets[0][1] / scale, color=TARGET_COLOUR, linestyle="--", linewidth=2
            )
        elif targets:
            (handles["target"],) = axes.step(
                [i for i, _ in targets],
                [t / scale for _, t in targets],
                where="mid",
                color=TARGET_COLOUR,
                linestyle="--",
                linewidth=2,
            )
        axes.set_title(f"{drill.name}: {name}", fontsize=10)
        axes.set_ylabel(unit)
        axes.set_ylim(bottom=0)
        axes.set_xlim(-0.6, len(runs) - 0.4)
        axes.set_xticks(range(len(runs)), labels, rotation=40, fontsize=6.5, ha="right")
    # Below the plots, never over them: a legend inside hides the target line.
    legend = figure.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
    )
    legend.set_gid("legend")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    return figure


def _unit(values: list[float]) -> tuple[float, str]:
    top = max(values, default=0.0)
    if top >= 2 * 3600:
        return 3600.0, "hours"
    if top >= 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def chart_svg(drill: DrillEvidence) -> str:
    """The drill's trend chart as an inline ``<svg>`` element (glyphs as paths: no fonts)."""
    import matplotlib

    figure = _figure(drill)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": drill.name}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return re.sub(r"^.*?(?=<svg)", "", text, count=1, flags=re.DOTALL)


def chart_png(drill: DrillEvidence) -> bytes:
    """The drill's trend chart as PNG (for Slack)."""
    buffer = io.BytesIO()
    _figure(drill).savefig(buffer, format="png")
    return buffer.getvalue()
