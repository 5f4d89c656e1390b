"""``drills.report`` from a terminal: the monthly restore drill run by hand (the real restore
test over the sandbox's MongoDB and moto), then its evidence as JSON, HTML and Markdown."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses


def test_a_drill_run_by_hand_is_in_the_report_with_what_it_measured(
    cli_env: dict[str, str], production_backup: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, **production_backup}
    bad = run_cli(["drills.report", "--format", "pdf"], env)
    assert bad.returncode == 2 and "--format must be md or html, not 'pdf'" in bad.stderr
    empty = run_cli(["drills.report", "--name", "monthly-restore-test"], env)
    assert empty.returncode == 0, empty.stderr
    assert "0 of 0 passed, 0 with a missed objective" in empty.stdout
    assert "No runs recorded yet." in empty.stdout

    ran = run_cli(["drills.run", "monthly-restore-test", "--yes", "--json"], env, timeout=180)
    assert ran.returncode == 0, ran.stderr[-2000:]
    execution_id = json.loads(ran.stdout)["id"]

    # A run by hand is a fire by a person: in the history with who, and announced.
    history = run_cli(["drills.history", "--name", "monthly-restore-test", "--json"], env)
    assert history.returncode == 0, history.stderr
    (fire,) = json.loads(history.stdout)
    assert fire["execution_id"] == execution_id and fire["by"] == "Alice"
    listed = run_cli(["drills.history", "--name", "monthly-restore-test"], env)
    assert f"{execution_id} (run by hand by Alice)" in listed.stdout, listed.stdout
    store = SqliteStore(env["RUNBOOK_BOT_STATE"])
    try:
        announced = [
            e.payload["text"]
            for e in store.events_after(0, limit=1000)
            if e.type == "drill.announce"
        ]
    finally:
        store.close()
    (started,) = announced
    assert started.startswith("started: monthly-restore-test (run by hand by Alice, "), started
    assert started.endswith(f"restore.test {execution_id}")

    data = run_cli(["drills.report", "--json"], env)
    assert data.returncode == 0, data.stderr
    by_name = {d["drill"]: d for d in json.loads(data.stdout)}
    assert set(by_name) == {
        "monthly-restore-test",
        "quarterly-partial-failover",
        "annual-dr-simulation",
        "annual-region-failure",
    }
    (run,) = by_name["monthly-restore-test"]["runs"]
    assert run["execution_id"] == execution_id and run["verdict"] == "passed"
    assert run["started_by"] == "Alice" and run["approvals"] == []
    assert run["rto"]["name"] == "RTO" and run["rto"]["target"] == 3600
    assert 0 < run["rto"]["seconds"] < 3600
    # The RPO target of a restore test is the backup policy's (nightly dumps: 24 h), not the
    # database failover's 5 minutes.
    assert run["rpo"]["target"] == 86400 and run["rpo"]["seconds"] >= 0
    assert by_name["annual-dr-simulation"]["runs"] == []

    page = tmp_path / "drills.html"
    wrote = run_cli(["drills.report", "--format", "html", "--out", str(page)], env)
    assert wrote.returncode == 0, wrote.stderr
    assert f"wrote {page} (4 drill(s), 1 run(s))" in wrote.stdout
    html = page.read_text()
    assert html.count("<svg") == 1 and execution_id in html and "<script" not in html
    # What the page covers: the installation, the period, and the audit chain's head, which
    # audit.verify accepts as the head it checks against.
    assert "<li>Installation: sandbox</li>" in html and "<li>Period: " in html
    found = re.search(r"audit\.verify --head (\d+:[0-9a-f]{64})", html)
    assert found, html
    checked = run_cli(["audit.verify", "--head", found.group(1), "--json"], env)
    assert checked.returncode == 0, checked.stderr
    result = json.loads(checked.stdout)
    assert result["ok"] is True
    assert int(result["head"].split(":")[0]) >= int(found.group(1).split(":")[0])
    forged = found.group(1)[:-1] + ("0" if found.group(1)[-1] != "0" else "1")
    assert run_cli(["audit.verify", "--head", forged], env).returncode == 1

    markdown = tmp_path / "drills.md"
    assert run_cli(["drills.report", "--out", str(markdown)], env).returncode == 0
    chart = tmp_path / "drills-monthly-restore-test.svg"
    assert chart.read_text().startswith("<svg")
    text = markdown.read_text()
    assert "![monthly-restore-test: RTO and RPO per run](drills-monthly-restore-test.svg)" in text
    (row,) = [line for line in text.splitlines() if execution_id in line]
    assert "| passed |" in row and "/ 1h00m met" in row


def _config_with_backup_interval(tmp_path: Path, interval: str) -> Path:
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory, ignore=shutil.ignore_patterns("example"))
    path = directory / "environments.yaml"
    text = path.read_text(encoding="utf-8")
    anchor = "      atlas_cluster: production\n"
    assert anchor in text
    path.write_text(
        text.replace(anchor, anchor + f"      backup_interval: {interval}\n", 1), encoding="utf-8"
    )
    return directory


def test_a_missed_objective_is_a_finding_of_a_passed_run_everywhere(
    cli_env: dict[str, str], production_backup: dict[str, str], tmp_path: Path
) -> None:
    """One rule: the checks decide passed or FAILED; an RPO beyond the backup policy's
    interval is a finding of a passed run, said the same way by the run and the report."""
    config = _config_with_backup_interval(tmp_path, "1m")
    env = {**cli_env, **production_backup, "RUNBOOK_BOT_CONFIG": str(config)}
    ran = run_cli(["restore.test", "production", "--yes"], env, timeout=180)
    assert ran.returncode == 0, ran.stderr[-2000:]
    out = " ".join(ran.stdout.split())  # the table wraps long lines
    assert "backup policy: every 1m; target 1m): MISSED" in out, out
    assert "verdict: passed with findings: RPO missed; checked 3 of 3 collections" in out
    assert "PASSED" not in out
    assert "succeeded" in out and "(passed with findings: RPO missed)" in out

    drill = run_cli(["drills.run", "monthly-restore-test", "--yes", "--json"], env, timeout=180)
    assert drill.returncode == 0, drill.stderr[-2000:]
    data = run_cli(["drills.report", "--name", "monthly-restore-test", "--json"], env)
    assert data.returncode == 0, data.stderr
    (evidence,) = json.loads(data.stdout)
    (run,) = evidence["runs"]
    assert run["verdict"] == "passed with findings: RPO missed"
    assert run["rpo"]["target"] == 60 and run["rpo"]["seconds"] > 60
    assert evidence["summary"] == "1 of 1 passed, 1 with a missed objective"
    markdown = run_cli(["drills.report", "--name", "monthly-restore-test"], env)
    assert "1 of 1 passed, 1 with a missed objective" in markdown.stdout
    (row,) = [line for line in markdown.stdout.splitlines() if run["execution_id"] in line]
    assert "| passed with findings: RPO missed |" in row


def test_drills_preview_prints_each_announcement_where_and_when(
    cli_env: dict[str, str],
) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    shown = run_cli(["drills.preview", "quarterly-partial-failover", "--json"], cli_env)
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    # The oracle for the fire time: APScheduler's own calendar over schedules.yaml's cron.
    trigger = CronTrigger.from_crontab(
        "0 10 15 jan,apr,jul,oct *", timezone=ZoneInfo("America/New_York")
    )
    fire = trigger.get_next_fire_time(None, datetime.now(tz=UTC)).astimezone(UTC)
    assert doc["next_fire"] == fire.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    phases = [(a["phase"], a["channel"]) for a in doc["announcements"]]
    # Two approvals in production: the approvers' channel hears the lead-time notices too.
    assert phases == [
        ("before", "C0APPROVALS"),
        ("before", "C0OPS"),
        ("before", "C0APPROVALS"),
        ("before", "C0OPS"),
        ("at", "C0OPS"),
        ("after", "C0OPS"),
    ]
    before, at, after = (doc["announcements"][i]["text"] for i in (1, 4, 5))
    assert before.startswith("upcoming: quarterly-partial-failover runs dr.failover at ")
    assert before.split(", in ")[1].startswith("24h00m; it needs 2 approval(s) from sre")
    assert at.endswith(
        "dr.failover [execution id]; awaiting 2 approval(s) (the card is in the approvals channel)"
    )
    assert after.startswith("result: quarterly-partial-failover (")
    plain = run_cli(["drills.preview", "quarterly-partial-failover"], cli_env)
    assert plain.returncode == 0, plain.stderr
    assert f"next fire: {doc['next_fire']} (" in plain.stdout
    assert f"at, posted {doc['next_fire']} in C0OPS:\n  {at}\n" in plain.stdout
    assert "after, posted when the run ends in C0OPS:" in plain.stdout

    unknown = run_cli(["drills.preview", "weekly-chaos"], cli_env)
    assert unknown.returncode == 2
    assert "no drill 'weekly-chaos' in schedules.yaml; known: monthly-restore-test" in (
        unknown.stderr + unknown.stdout
    )
