"""Nothing secret reaches the structured log or the audit store."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runbooks.engine.logs import redact_processor
from runbooks.engine.redact import MASK, redact, redact_text
from tests.conftest import run_cli

SLACK_TOKEN = "xoxb-123456789012-abcdefABCDEF123"
MONGO_URL = "mongodb+srv://admin:hunter2secret@cluster0.example.net/prod"


def test_redact_masks_secret_keys_and_secret_looking_values() -> None:
    cleaned = redact(
        {
            "slack_bot_token": "anything",
            "password": "p4ss",
            "nested": {"uri": MONGO_URL, "note": f"token is {SLACK_TOKEN}"},
            "list": ["AKIAABCDEFGHIJKLMNOP", "Bearer abcdefghijklmnop"],
            "replicas": 3,
        }
    )
    text = json.dumps(cleaned)
    for secret in (
        "anything",
        "p4ss",
        "hunter2secret",
        SLACK_TOKEN,
        "AKIAABCDEFGHIJKLMNOP",
        "abcdefghijklmnop",
    ):
        assert secret not in text
    assert cleaned["replicas"] == 3
    assert cleaned["nested"]["uri"] == f"mongodb+srv://admin:{MASK}@cluster0.example.net/prod"


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
    st.from_regex(r"[A-Za-z0-9]{8,24}", fullmatch=True),
)
def test_credentials_in_urls_never_survive(prefix: str, password: str) -> None:
    url = f"{prefix} mongodb://svc:{password}@db.internal:27017/app"
    assert f":{password}@" not in redact_text(url)


def test_structlog_processor_redacts() -> None:
    event = redact_processor(None, "info", {"event": "x", "token": SLACK_TOKEN, "url": MONGO_URL})
    assert SLACK_TOKEN not in json.dumps(event) and "hunter2secret" not in json.dumps(event)


def test_a_token_in_a_request_reaches_neither_the_log_nor_the_audit_store(
    tmp_path: Path, cli_env: dict[str, str], log_stream: io.StringIO
) -> None:
    reason = f"rotating {SLACK_TOKEN} after leak; db {MONGO_URL}"
    result = run_cli(
        [
            "selftest",
            "development",
            "--yes",
            "--reason",
            reason,
            "--workdir",
            str(tmp_path / "home" / "w"),
        ],
        cli_env,
    )
    assert result.returncode == 0, result.stderr
    log_text = Path(cli_env["RUNBOOK_BOT_LOG"]).read_text()
    assert '"action": "request"' in log_text  # the audit record was logged...
    db = sqlite3.connect(cli_env["RUNBOOK_BOT_STATE"])
    bodies = b"".join(row[0] for row in db.execute("SELECT body FROM audit"))
    docs = "".join(row[0] for row in db.execute("SELECT doc FROM executions"))
    events = "".join(row[0] for row in db.execute("SELECT payload FROM events"))
    db.close()
    assert b"rotating" in bodies  # ...and the reason is there, masked
    for secret in (SLACK_TOKEN, "hunter2secret"):
        assert secret not in log_text
        assert secret.encode() not in bodies
    for secret in (SLACK_TOKEN, "hunter2secret"):
        assert secret not in result.stdout + result.stderr
        assert secret not in docs + events
