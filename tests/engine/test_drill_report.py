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

import pytest

from runbooks.engine import evidence
from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.drills import HISTORY_KEY
from runbooks.engine.models import State
from tests.conftest import EngineFactory
from tests.engine import world
from tests.engine.test_drill_scheduler import END, START, World, config
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
    text = evidence.markdown(found, generated_at=year.clock.now())
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
    page = evidence.html(evidence.collect(year.scheduler), generated_at=year.clock.now())
    parser = _Page()
    parser.feed(page)
    assert parser.tags.count("svg") == 1 and parser.tags.count("tr") == 14
    assert "script" not in parser.tags and "link" not in parser.tags and "img" not in parser.tags
    # No reference leaves the page (matplotlib's SVG links only its own #ids).
    assert all(ref.startswith("#") for ref in parser.refs), parser.refs
    assert SERIES.lower() in page.lower() and TARGET.lower() in page.lower()


SERIES = evidence.SERIES_COLOUR
TARGET = evidence.TARGET_COLOUR


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
    for colour in (SERIES, TARGET):
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        counts[colour] = int(((abs(pixels - rgb) <= 8).all(axis=2)).sum())
    return counts


def test_the_html_report_renders_its_chart_in_headless_chromium(
    year: World, tmp_path: Path
) -> None:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: .ci/run installs chromium-headless-shell")
        pytest.skip("no Chromium here: `apt-get install chromium-headless-shell` (.ci/run does)")
    page = evidence.html(evidence.collect(year.scheduler), generated_at=year.clock.now())
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    drawn = screenshot(browser, report, tmp_path / "report.png")
    # The same page without its chart: the colours come from the chart, nothing else.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<svg.*?</svg>", "", page, flags=re.DOTALL), encoding="utf-8")
    blank = screenshot(browser, bare, tmp_path / "bare.png")
    assert blank == {SERIES: 0, TARGET: 0}
    assert drawn[SERIES] > 500, drawn  # the RTO and RPO lines and their markers
    assert drawn[TARGET] > 200, drawn  # the dashed target lines


def test_drill_history_keeps_the_failed_state_for_the_report(year: World) -> None:
    history = year.engine.store.kv_get(HISTORY_KEY.format("monthly-measure"))
    states = {iso(e["at"])[:7]: e["state"] for e in history}
    assert states["2027-03"] == str(State.FAILED)
    assert states["2027-08"] == "missed"
