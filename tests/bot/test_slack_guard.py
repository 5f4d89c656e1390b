"""Malformed and hostile requests to /slack/events: 400, 401 or 413, never 500; nothing runs;
anonymous refusals audited once a minute per reason (against a bot process: the gate in front
of Bolt); nothing secret posted to Slack, and a usage error audited (its Slack app in this
process)."""

from __future__ import annotations

import http.client
import time
import urllib.parse

from sandbox.slack import sign, text_of
from tests.bot.conftest import SlackWorld, ephemeral_to
from tests.support.waiting import wait_for

FORM = "application/x-www-form-urlencoded"


def raw_post(world: SlackWorld, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST exactly these bytes and headers (no client-side fixing up)."""
    assert world.bot is not None, "the gate is in front of Bolt in the bot process"
    host, port = world.bot.base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/slack/events", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def signed(world: SlackWorld, body: bytes, content_type: str = FORM) -> dict[str, str]:
    ts = str(int(time.time()))
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sign(world.user("alice").signing_secret, ts, body),
    }


def test_malformed_requests_get_400_or_401_and_change_nothing(world: SlackWorld) -> None:
    alice = world.user("alice")
    good = alice.command_body("/rollback production", channel="C0OPS")
    binary = b"\xff\xfe\x00payload=\x80"
    cases = {
        "non-numeric timestamp": (
            good,
            {
                "Content-Type": FORM,
                "X-Slack-Request-Timestamp": "soon",
                "X-Slack-Signature": "v0=1",
            },
            401,
        ),
        "no signature headers": (good, {"Content-Type": FORM}, 401),
        "binary body, unsigned": (binary, {"Content-Type": FORM}, 401),
        "binary body, signed": (binary, signed(world, binary), 400),
        "payload not JSON, unsigned": (b"payload={not-json", {"Content-Type": FORM}, 401),
        "payload not JSON, signed": (
            b"payload={not-json",
            signed(world, b"payload={not-json"),
            400,
        ),
        "payload a list, signed": (b"payload=[1,2]", signed(world, b"payload=[1,2]"), 400),
        "JSON body a string, signed": (
            b'"hello"',
            signed(world, b'"hello"', "application/json"),
            400,
        ),
    }
    seen = {}
    for name, (body, headers, _) in cases.items():
        seen[name] = raw_post(world, body, headers)[0]
    assert seen == {name: status for name, (_, _, status) in cases.items()}
    assert world.executions() == [] and world.messages() == []
    # Anonymous refusals: audited as security events, at most one per reason per minute.
    refusals = [r for r in world.audit_actions() if r["action"] == "security.slack_request_refused"]
    assert {r["outcome"] for r in refusals} == {"unsigned", "not_utf8", "bad_payload"}
    assert len(refusals) == 3
    # The bot still answers a real command.
    assert alice.command("/rollback production --dry-run").status == 200


def test_a_huge_body_is_refused_with_413_before_it_is_read(world: SlackWorld) -> None:
    body = urllib.parse.urlencode({"text": "x" * 1_000_000}).encode()
    status, text = raw_post(world, body, signed(world, body))
    assert status == 413 and "at most 65536" in text
    assert world.executions() == []
    sizes = [len(str(r)) for r in world.audit_actions()]
    assert max(sizes, default=0) < 10_000


def test_a_flood_of_forgeries_writes_one_audit_record_a_minute(world: SlackWorld) -> None:
    body = world.user("alice").command_body("/rollback production", channel="C0OPS")
    for _ in range(25):
        forged = {
            "Content-Type": FORM,
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=" + "0" * 64,
        }
        assert raw_post(world, body, forged)[0] == 401
    records = [r for r in world.audit_actions() if r["action"] == "security.slack_request_refused"]
    assert [r["outcome"] for r in records] == ["bad_signature"]


def test_a_secret_typed_into_a_reason_never_reaches_slack(app_world: SlackWorld) -> None:
    token = "xoxb-1234567890-abcdefghijkl"
    alice = app_world.user("alice")
    reply = alice.command(f'/rollback production --reason "rotated {token} after a leak"')
    assert reply.status == 200
    wait_for(lambda: bool(ephemeral_to(app_world, "alice")), what="the private plan")
    everything = " ".join(text_of(m) + str(m) for m in app_world.messages())
    assert "after a leak" in everything  # the reason is shown...
    assert token not in everything  # ...with the token masked
    assert "xox?-***" in everything


def test_a_usage_error_answered_in_the_ack_is_audited(app_world: SlackWorld) -> None:
    answer = app_world.user("alice").command("/rollback production --colour red")
    assert answer.status == 200 and "colour" in answer.body
    [record] = [r for r in app_world.audit_actions() if r["outcome"] == "usage_error"]
    assert record["actor"]["id"] == "alice" and record["action"] == "request.rejected"
    assert "--colour red" in record["params"]["text"]
