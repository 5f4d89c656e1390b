"""The typed values our Slack buttons carry (bot/slack/buttons.py): what a card writes reads
back the same, a card posted by an earlier release still reads, and anything else is refused."""

from __future__ import annotations

import pytest

from bot.slack.buttons import (
    ButtonNotUnderstood,
    ConfirmValue,
    IncidentRunValue,
    execution_value,
)

#: A Confirm button's value exactly as releases before the dataclass wrote it.
EARLIER_RELEASE = (
    '{"r":"rollback","p":{"environment":"production","service":"api"},"h":"ab12cd34",'
    '"u":"U0ALICE","c":"C0OPS","reason":"bad deploy","incident":"P1ABC","bg":false,'
    '"d":null,"t":"incident_button"}'
)


def test_a_confirm_value_reads_back_what_was_written_and_stays_under_slacks_limit() -> None:
    value = ConfirmValue(
        runbook="dr.failover",
        params={"environment": "production", "region": "us-west-2"},
        plan_hash="0123abcd",
        requester="U0BOB",
        channel="C0OPS",
        reason="region down",
        break_glass=True,
        drill="annual-dr",
    )
    wire = value.to_json()
    assert ConfirmValue.read({"value": wire}) == value
    assert len(wire) <= 2000  # Slack's cap on a button's value
    assert ConfirmValue.read({"value": wire}).with_hash("ffff0000").plan_hash == "ffff0000"


def test_a_card_posted_by_an_earlier_release_still_confirms_the_same_request() -> None:
    assert ConfirmValue.read({"value": EARLIER_RELEASE}) == ConfirmValue(
        runbook="rollback",
        params={"environment": "production", "service": "api"},
        plan_hash="ab12cd34",
        requester="U0ALICE",
        channel="C0OPS",
        reason="bad deploy",
        incident="P1ABC",
        break_glass=False,
        drill=None,
        trigger="incident_button",
    )


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not json {", "value is not JSON"),
        ("[1, 2]", "value is not a JSON object"),
        ('{"r": "selftest", "p": {}, "h": "x"}', "value lacks u"),
        ('{"r": "selftest", "p": "development", "h": "x", "u": "U0A"}', "parameters"),
        ('{"r": 7, "p": {}, "h": "x", "u": "U0A"}', "runbook is not text"),
        ('{"r": "selftest", "p": {}, "h": "x", "u": "U0A", "c": ["C0OPS"]}', "channel"),
    ],
)
def test_a_confirm_value_that_is_not_ours_is_not_understood(value: str, why: str) -> None:
    with pytest.raises(ButtonNotUnderstood, match=why):
        ConfirmValue.read({"value": value})


def test_an_incident_run_value_round_trips_and_refuses_what_is_not_ours() -> None:
    value = IncidentRunValue("rollback", "production", "P1ABC", service="api")
    assert IncidentRunValue.read({"value": value.to_json()}) == value
    with pytest.raises(ButtonNotUnderstood, match="lacks environment, incident"):
        IncidentRunValue.read({"value": '{"runbook": "rollback"}'})
    with pytest.raises(ButtonNotUnderstood, match="incident is not text"):
        IncidentRunValue.read(
            {"value": '{"runbook": "rollback", "environment": "production", "incident": 5}'}
        )


def test_an_execution_value_names_an_execution_first() -> None:
    assert execution_value({"value": "rb-0a1b2c:deadbeef"}) == ("rb-0a1b2c", "deadbeef")
    for bad in ("../../etc:passwd", "", None, "rb-zzz:key:healthy"):
        with pytest.raises(ButtonNotUnderstood):
            execution_value({"value": bad})
