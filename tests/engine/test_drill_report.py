"""Drill evidence (``drills.report``): a year of a measuring drill on an injected clock, with a
failed run, a run over its RTO target, missed fires and a run by hand; the Markdown and HTML
reports say each, and the HTML page's chart renders in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from reports import drills as drill_report
from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.models import State
from runbooks.engine.requesters import drill_evidence as evidence
from runbooks.engine.requesters.drills import HISTORY_KEY
from tests.conftest import EngineFactory
from tests.engine import world
from tests.support.drill_world import END, START, World, config
from tests.support.people import ALICE

MONTHLY_RESTORE = {
    "name": "monthly-measure",
    "runbook": "test.measure",
    "params": {"environment": "development"},
    "cron": "0 3 1 * *",
    "channel": "C0OPS",
}
#: RTO each month (seconds the run takes), RPO (seconds lost); -1: the run fails.
YEAR = [
    (120, 60),
    (180, 90),
    (-1, 0),
    (240, 30),
    (900, 60),  # May: RTO 15 min, over the 10 min target
    (150, 400),  # June: RPO over the 5 min target
    (200, 20),
    (210, 20),
    (220, 20),
    (230, 20),
    (240, 20),
    (250, 20),
]


@pytest.fixture(autouse=True)
def _fresh_world() -> None:
    world.reset()


def scope(w: World) -> evidence.ReportScope:
    chain = w.engine.audit.verify()
    return evidence.ReportScope(
        installation="sandbox",
        since=START,
        until=w.clock.now(),
        audit_head=chain.head,
        audit_records=chain.count,
    )


@pytest.fixture
def year(make_engine: EngineFactory) -> World:
    """Twelve monthly fires, the bot down across 1 August (missed: past the catch-up window),
    and one run by hand in September."""
    world.MEASURED.extend(YEAR)
    clock = FakeClock(START - 3600)
    w = World(make_engine, config(MONTHLY_RESTORE), clock)
    w.step()
    august = datetime(2027, 8, 1, 3, tzinfo=UTC).timestamp()
    w.run_until(august - 3600)
    clock.advance(august + 2 * 86400 - clock.now())  # down for two days: past the catch-up
    w.step()
    w.run_until(datetime(2027, 9, 10, tzinfo=UTC).timestamp())
    world.MEASURED.insert(0, (100, 10))
    result = w.scheduler.run_now("monthly-measure", actor=ALICE)
    assert result.execution is not None
    w.supervisor.sweep()
    w.run_until(END)
    return w


def test_the_evidence_has_every_fire_its_verdict_and_what_it_measured(year: World) -> None:
    (drill,) = evidence.collect(year.scheduler, since=START)
    assert [r.started_by for r in drill.runs].count("schedule") == 12
    by_month = {iso(r.at)[:7]: r for r in drill.runs if r.started_by == "schedule"}
    assert by_month["2027-01"].verdict == "passed"
    assert by_month["2027-01"].rto is not None and by_month["2027-01"].rto.seconds == 120
    assert by_month["2027-01"].rpo is not None and by_month["2027-01"].rpo.seconds == 60
    assert by_month["2027-03"].verdict.startswith("FAILED")
    assert "the restore failed" in by_month["2027-03"].note
    assert by_month["2027-03"].rto is None
    assert by_month["2027-05"].verdict == "passed with findings: RTO missed"
    assert by_month["2027-06"].verdict == "passed with findings: RPO missed"
    assert by_month["2027-08"].verdict == "missed" and by_month["2027-08"].execution_id is None
    (by_hand,) = [r for r in drill.runs if r.started_by != "schedule"]
    assert by_hand.started_by == ALICE.name and by_hand.verdict == "passed"
    assert by_hand.rto is not None and by_hand.rto.seconds == 100
    # The later months took the values left after the hand run, in order.
    assert [by_month[f"2027-{m:02}"].rto.seconds for m in (9, 10, 11, 12)] == [
        210,
        220,
        230,
        240,
    ]
    for run in drill.executed:
        execution = year.engine.get(run.execution_id or "")
        assert run.state == str(execution.state)
        assert run.required_approvals == execution.required_approvals
    assert drill.summary() == (
        "11 of 12 passed, 2 with a missed objective; 1 failed; 1 fire(s) not run (missed)"
    )
    # Newest first; a window leaves out what is older.
    assert [r.at for r in drill.runs] == sorted((r.at for r in drill.runs), reverse=True)
    (recent,) = evidence.collect(
        year.scheduler, since=datetime(2027, 11, 15, tzinfo=UTC).timestamp()
    )
    assert [iso(r.at)[:7] for r in recent.runs] == ["2027-12"]


def test_markdown_is_one_table_row_per_run(year: World) -> None:
    found = evidence.collect(year.scheduler, since=START)
    text = drill_report.markdown(found, generated_at=year.clock.now(), scope=scope(year))
    rows = [line for line in text.splitlines() if line.startswith("| 2027-")]
    assert len(rows) == 13
    may = next(r for r in rows if r.startswith("| 2027-05-01"))
    assert "passed with findings: RTO missed" in may and "15m / 10m MISSED" in may
    aug = next(r for r in rows if r.startswith("| 2027-08-01"))
    assert "| missed |" in aug
    for run in found[0].executed:
        assert run.execution_id in text


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]


def test_html_is_self_contained_with_the_chart_inline(year: World) -> None:
    page = drill_report.html(
        evidence.collect(year.scheduler), generated_at=year.clock.now(), scope=scope(year)
    )
    parser = _Page()
    parser.feed(page)
    assert parser.tags.count("svg") == 1 and parser.tags.count("tr") == 14
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    # No reference leaves the page (matplotlib's SVG links only its own #ids).
    assert all(ref.startswith("#") for ref in parser.refs), parser.refs
    assert SERIES.lower() in page.lower() and TARGET.lower() in page.lower()


SERIES = drill_report.SERIES_COLOUR
TARGET = drill_report.TARGET_COLOUR
FAILED = drill_report.FAILED_COLOUR


def chromium() -> str | None:
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(browser: str, page: Path, out: Path) -> dict[str, int]:
    """Open the page in headless Chromium, screenshot it and count the chart's colours."""
    from matplotlib.image import imread

    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,1400",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = (imread(out)[:, :, :3] * 255).round().astype(int)
    counts = {}
    for colour in (SERIES, TARGET, FAILED):
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        counts[colour] = int(((abs(pixels - rgb) <= 8).all(axis=2)).sum())
    return counts


@pytest.mark.slow  # headless Chromium
def test_the_html_report_renders_its_chart_in_headless_chromium(
    year: World, tmp_path: Path
) -> None:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: .ci/run installs chromium-headless-shell")
        pytest.skip("no Chromium here: `apt-get install chromium-headless-shell` (.ci/run does)")
    page = drill_report.html(
        evidence.collect(year.scheduler), generated_at=year.clock.now(), scope=scope(year)
    )
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    drawn = screenshot(browser, report, tmp_path / "report.png")
    # The same page without its chart: the colours come from the chart, nothing else.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<svg.*?</svg>", "", page, flags=re.DOTALL), encoding="utf-8")
    blank = screenshot(browser, bare, tmp_path / "bare.png")
    assert blank == {SERIES: 0, TARGET: 0, FAILED: 0}
    assert drawn[SERIES] > 500, drawn  # the RTO and RPO lines and their markers
    assert drawn[TARGET] > 200, drawn  # the dashed target lines
    assert drawn[FAILED] > 2000, drawn  # March's failed run: a shaded column on both charts


def test_drill_history_keeps_the_failed_state_for_the_report(year: World) -> None:
    history = year.engine.store.kv_get(HISTORY_KEY.format("monthly-measure"))
    states = {iso(e["at"])[:7]: e["state"] for e in history}
    assert states["2027-03"] == str(State.FAILED)
    assert states["2027-08"] == "missed"


# --- #29 item 11: labels, legend, failed runs, charts of nothing, what the page covers -----

SAME_DAY = datetime(2027, 3, 10, 9, tzinfo=UTC).timestamp()


def runs_by_hand(make_engine: EngineFactory, drill: dict[str, Any], count: int) -> World:
    """``count`` runs of ``drill`` by hand, an hour apart on one day."""
    clock = FakeClock(SAME_DAY)
    w = World(make_engine, config(drill), clock)
    for _ in range(count):
        result = w.scheduler.run_now(str(drill["name"]), actor=ALICE)
        assert result.execution is not None
        w.supervisor.sweep()
        clock.advance(3600)
    return w


def svg_group(svg: str, gid: str) -> str:
    """The text of ``<g id="gid">`` up to its closing tag (groups nest; count them)."""
    start = svg.index(f'<g id="{gid}">')
    depth, at = 0, start
    for tag in re.finditer(r"<g\b|</g>", svg[start:]):
        depth += 1 if tag.group() == "<g" else -1
        if depth == 0:
            at = start + tag.end()
            break
    return svg[start:at]


def path_ys(group: str) -> list[float]:
    """The y coordinates of the drawn paths in a group (glyph definitions, with an id, aside)."""
    ys = []
    for d in re.findall(r'<path d="([^"]+)"', group):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
        ys += numbers[1::2]
    return ys


def test_runs_on_one_day_get_their_own_labels_and_the_legend_stays_off_the_plots(
    make_engine: EngineFactory,
) -> None:
    world.MEASURED.extend([(120, 60), (-1, 0), (180, 90)])
    w = runs_by_hand(make_engine, MONTHLY_RESTORE, 3)
    (drill,) = evidence.collect(w.scheduler)
    assert [r.verdict for r in sorted(drill.runs, key=lambda r: r.at)] == [
        "passed",
        "FAILED",
        "passed",
    ]
    svg = drill_report.chart_svg(drill)
    # matplotlib writes each text it draws as a comment before its glyphs.
    ticks = [
        tuple(re.findall(r"<!-- (.*?) -->", chunk)[:2]) for chunk in svg.split('<g id="xtick_')[1:]
    ]
    assert len(ticks) == 6  # three runs on each of the two charts (RTO, RPO)
    assert len(set(ticks)) == 3, ticks
    for run in drill.runs:
        when = iso(run.at)
        assert (f"{when[:10]} {when[11:16]}", run.execution_id) in ticks
    # The legend lies wholly below both plotting areas (SVG's y grows downwards).
    legend = path_ys(svg_group(svg, "legend"))
    assert legend, "the legend draws its keys"
    for name in ("RTO", "RPO"):
        area = path_ys(svg_group(svg, f"plot-area-{name}"))
        assert min(legend) > max(area), (name, min(legend), max(area))
        # The failed run (the second) is a shaded column on each chart.
        assert f'<g id="failed-run-{name}-1">' in svg
        assert f'<g id="failed-run-{name}-0">' not in svg


def test_a_drill_that_measures_nothing_has_no_empty_chart_and_says_why(
    make_engine: EngineFactory,
) -> None:
    unmeasured = {
        "name": "partial-like",
        "runbook": "test.set",
        "params": {"environment": "development", "keys": "a", "value": 1},
        "cron": "0 10 15 1,4,7,10 *",
        "channel": "C0OPS",
    }
    world.FAILING_VERIFY.add("a")
    w = runs_by_hand(make_engine, unmeasured, 2)
    found = evidence.collect(w.scheduler)
    (drill,) = found
    assert [r.verdict for r in drill.runs] == ["FAILED (compensated)"] * 2
    page = drill_report.html(found, generated_at=w.clock.now(), scope=scope(w))
    assert "<svg" not in page and "not measured" not in page.split("<table>")[0]
    assert "No chart: none of its 2 run(s) measured RTO or RPO" in page
    assert "2 failed (see the table)" in page
    text = drill_report.markdown(found, generated_at=w.clock.now(), scope=scope(w))
    assert "No chart: none of its 2 run(s) measured RTO or RPO" in text and "![" not in text


def test_the_page_says_which_installation_period_and_audit_head_it_covers(year: World) -> None:
    chain = year.engine.audit.verify()
    covered = scope(year)
    page = drill_report.html(
        evidence.collect(year.scheduler), generated_at=year.clock.now(), scope=covered
    )
    assert "<li>Installation: sandbox</li>" in page
    assert f"<li>Period: {iso(START)} to {iso(year.clock.now())} (UTC)</li>" in page
    assert f"head {chain.head} ({chain.count} records, verified intact" in page
    assert f"invoke audit.verify --head {chain.head}" in page
    broken = evidence.ReportScope(
        installation="sandbox",
        since=START,
        until=year.clock.now(),
        audit_head="3:" + "0" * 64,
        audit_records=3,
        audit_intact=False,
        audit_problem="record seq 4 has been altered",
    )
    text = drill_report.markdown(evidence.collect(year.scheduler), generated_at=0, scope=broken)
    assert "Audit chain: NOT intact: record seq 4 has been altered" in text
