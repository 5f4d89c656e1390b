"""Read-only runbooks' reports in Slack: the same lines the CLI prints, within Slack's limits.

Before, a read-only runbook's Slack answer was its card, which reads "_no steps_": the
revisions, weights, capacity and database state never reached Slack.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.slack.render import MAX_BLOCKS, SECTION_CHARS, report_blocks
from runbooks.catalog import load_catalog
from runbooks.engine.engine import Engine
from runbooks.engine.lifecycle.requests import Outcome, Request
from runbooks.engine.models import Execution, State
from tests.conftest import AwsWorld
from tests.support.people import ALICE
from tests.support.reports import texts

REPORTS = {"rollback.history": {"environment": "production"}, "dr.status": {}}


def test_every_read_only_runbook_has_a_report_test() -> None:
    assert {spec.name for spec in load_catalog() if spec.read_only} == set(REPORTS)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_slack_shows_every_line_of_a_read_only_report(
    kube_engine: Engine, aws: AwsWorld, cluster: Any, health: Any, name: str
) -> None:
    result = kube_engine.request(Request(name, REPORTS[name], ALICE))
    assert result.outcome == Outcome.REPORTED and result.execution is not None
    assert result.execution.state == State.SUCCEEDED, result.execution.error
    blocks = report_blocks(result.execution, banner="PRODUCTION", now=kube_engine.clock.now())
    shown = "\n".join(texts(blocks))
    assert result.plan.notes, "a report with nothing to show proves nothing"
    for line in result.plan.notes:
        assert line in shown, line
    assert "no steps" not in shown
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(t) <= 3000 for t in texts(blocks))


def test_a_report_longer_than_a_message_says_what_was_left_out(kube_engine: Engine) -> None:
    result = kube_engine.request(
        Request("rollback.history", {"environment": "production"}, ALICE, dry_run=True)
    )
    plan = result.plan
    long = Execution.from_doc(
        {
            "id": "rb-long01",
            "plan": {**plan.to_doc(), "notes": [f"line {i}: " + "x" * 300 for i in range(2000)]},
            "state": "succeeded",
            "requester": ALICE.to_doc(),
            "created_at": 0.0,
            "updated_at": 0.0,
        }
    )
    blocks = report_blocks(long, banner="PRODUCTION", now=0.0)
    assert len(blocks) == MAX_BLOCKS
    assert all(len(t) <= SECTION_CHARS for t in texts(blocks))
    assert (
        "left out (Slack's message limit): `runs.show rb-long01` shows all of it"
        in (texts(blocks)[-2])
    )
