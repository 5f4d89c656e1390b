"""Secrets Manager references (``aws-secretsmanager:<id>[#key]``) against the moto server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runbooks.adapters import resolve_secret
from runbooks.engine.errors import RunbookError
from runbooks.engine.redact import redact_text
from runbooks.engine.secrets import resolve_environment
from tests.conftest import AwsWorld, run_cli

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses

AUDIT_SECRET = "sandbox-audit-key-0123456789"  # seeded as runbook-bot/audit-key


def test_the_cli_signs_the_audit_log_with_the_key_from_secrets_manager(
    aws: AwsWorld, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        **aws.env,
        "RUNBOOK_BOT_AUDIT_KEY": "aws-secretsmanager:runbook-bot/audit-key",
    }
    done = run_cli(
        ["selftest", "development", "--yes", "--json", "--workdir", str(tmp_path / "home" / "w")],
        env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "succeeded"
    # The chain verifies with the secret's value given directly: it was the signing key.
    direct = {**cli_env, "RUNBOOK_BOT_AUDIT_KEY": AUDIT_SECRET}
    assert run_cli(["audit.verify"], direct).returncode == 0
    wrong = {**cli_env, "RUNBOOK_BOT_AUDIT_KEY": "some-other-key-0123456789"}
    assert run_cli(["audit.verify"], wrong).returncode != 0
    log = Path(cli_env["RUNBOOK_BOT_LOG"]).read_text()
    assert log and AUDIT_SECRET not in log
    # A reference to a secret that does not exist: a clear error, nothing runs.
    missing = {**env, "RUNBOOK_BOT_AUDIT_KEY": "aws-secretsmanager:runbook-bot/nope"}
    refused = run_cli(["selftest", "development", "--yes", "--json"], missing)
    assert refused.returncode != 0
    assert "secret runbook-bot/nope: ResourceNotFoundException" in refused.stdout
    runs = json.loads(run_cli(["runs.list", "--json"], direct).stdout)
    assert [r["runbook"] for r in runs] == ["selftest"]


def test_references_in_the_environment_resolve_json_fields_and_are_redacted(
    aws: AwsWorld,
) -> None:
    environ = {
        "SLACK_BOT_TOKEN": "aws-secretsmanager:runbook-bot/slack#bot_token",
        "SLACK_SIGNING_SECRET": "aws-secretsmanager:runbook-bot/slack#signing_secret",
        "PLAIN": "left alone",
    }
    resolved = resolve_environment(environ, resolve_secret)
    assert resolved == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert environ == {
        "SLACK_BOT_TOKEN": "xoxb-sandbox-bot-token",
        "SLACK_SIGNING_SECRET": "sandbox-signing-secret",
        "PLAIN": "left alone",
    }
    # Registered with the redactor: masked even where nothing says "secret".
    assert redact_text("note: sandbox-signing-secret seen") == "note: *** seen"
    with pytest.raises(RunbookError) as caught:
        resolve_environment({"X": "aws-secretsmanager:runbook-bot/slack#app_token"}, resolve_secret)
    assert caught.value.message == (
        "secret runbook-bot/slack has no field 'app_token'; fields: bot_token, signing_secret"
    )
    with pytest.raises(RunbookError) as caught:
        resolve_environment({"X": "aws-secretsmanager:runbook-bot/audit-key#k"}, resolve_secret)
    assert "is not JSON, so it has no field 'k'" in caught.value.message
    with pytest.raises(RunbookError) as caught:
        resolve_environment({"X": "aws-secretsmanager:"}, resolve_secret)
    assert "names no secret" in caught.value.message
    with pytest.raises(RunbookError) as caught:
        resolve_environment({"X": "aws-secretsmanager:runbook-bot/slack"}, None)
    assert caught.value.message == "X refers to AWS Secrets Manager, but no resolver is available"
    assert "AWS_ENDPOINT_URL" in os.environ  # (the aws fixture points boto3 at moto)
