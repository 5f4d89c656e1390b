"""Nothing secret reaches the structured log or the audit store."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbooks.engine.logs import redact_processor
from runbooks.engine.redact import MASK, redact, redact_text
from tests.conftest import run_cli
from tests.support.secrets_corpus import CORPUS, corpus_text, leaks, missing_facts

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


@pytest.mark.slow  # the CLI as a process
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


def test_every_planted_secret_is_masked_and_its_sentence_kept() -> None:
    for planted in CORPUS:
        cleaned = redact_text(planted.text)
        assert leaks(cleaned) == [], (planted.name, cleaned)
        assert planted.fact in cleaned, (planted.name, cleaned)
    together = redact_text(corpus_text("\n"))
    assert leaks(together) == [] and missing_facts(together) == []


BENIGN_KEYS = (
    "bypassed_approvals",
    "passed",
    "compass",
    "passive_region",
    "tokenizer",
    "keyboard_layout",
    "author",
    "secretary",
    "passengers",
    "key",
    "question_key",
    "dedup_key",
    "BypassedApprovals",
)
SECRET_KEYS = (
    "password",
    "db_password",
    "DB_PASSWORD",
    "apiKey",
    "api_key",
    "X-API-KEY",
    "secret_access_key",
    "aws_secret_access_key",
    "SecretAccessKey",
    "slack_token",
    "slackBotToken",
    "accessToken",
    "authtoken",
    "private_key",
    "privateKey",
    "client_secret",
    "signing.secret",
    "Authorization",
    "Set-Cookie",
    "passwd",
    "pwd",
    "db_pass",
    "session-key",
    "routing_key",
    "credentials",
)


def test_keys_are_judged_by_their_whole_words() -> None:
    doc = {key: "plain-value-1" for key in (*BENIGN_KEYS, *SECRET_KEYS)}
    cleaned = redact(doc)
    assert [k for k in BENIGN_KEYS if cleaned[k] != "plain-value-1"] == []
    assert [k for k in SECRET_KEYS if cleaned[k] != MASK] == []
    # The same rule inside text: key=value and "key": "value".
    text = redact_text('bypassed_approvals=2 passive_region: us-west-2 "api_key": "k-123456"')
    assert text == f'bypassed_approvals=2 passive_region: us-west-2 "api_key": "{MASK}"'


def test_prose_around_the_word_token_is_not_masked() -> None:
    text = "token rotation is planned; basic configuration only"
    assert redact_text(text) == text


def test_a_secret_registered_after_a_text_was_masked_is_masked_in_it_from_then_on() -> None:
    """redact_text remembers short texts; a secret learnt later still reaches them."""
    from runbooks.engine.redact import register_secret

    value = "plain-value-learnt-late-7f3a"  # nothing about it looks like a credential
    text = f"connected with {value} to the primary"
    assert redact_text(text) == text  # remembered as it is
    register_secret(value)
    assert redact_text(text) == f"connected with {MASK} to the primary"
    long_text = text + " " + "x" * 2000  # past the memo's length: masked directly
    assert MASK in redact_text(long_text) and value not in redact_text(long_text)


@pytest.mark.parametrize("letter", ["İ", "ı", "I", "i"])
def test_a_credential_after_basic_spelled_with_any_i_is_masked(letter: str) -> None:
    """The pre-check folds what the masking patterns' IGNORECASE matches: ``İ`` and ``ı`` are i
    there, and ``casefold`` alone does not make them i."""
    text = f"curl -H 'BAS{letter}C dXNlcjpwYXNzd29yZDE='"
    assert "dXNlcjpwYXNzd29yZDE=" not in redact_text(text)
