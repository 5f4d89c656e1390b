"""Configuration: precise errors (file, key path, what is allowed); unknown keys refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runbooks.engine.clock import parse_duration
from runbooks.engine.config.loader import load_config
from runbooks.engine.errors import ConfigError
from tests.conftest import ROOT, run_cli


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target, ignore=shutil.ignore_patterns("example"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_shipped_configurations_are_valid() -> None:
    sandbox = load_config(ROOT / "config")
    assert sandbox.is_sandbox and sandbox.environment_names() == [
        "development",
        "staging",
        "production",
        "rehearsal",
    ]
    rehearsal = sandbox.environment("rehearsal")
    assert rehearsal.tier != "production" and rehearsal.regions == ["us-east-1", "us-west-2"]
    production = sandbox.environment("production")
    assert production.regions == ["us-east-1", "us-west-2"]
    assert production.targets["api"].rto == 15 * 60 and production.targets["database"].rpo == 300
    assert production.scaling.min_replicas == 2 and production.scaling.max_replicas == 20
    assert production.rollback_triggers.error_rate == 0.05
    example = load_config(ROOT / "config" / "example")
    assert not example.is_sandbox and not example.policy.allow_user_override


def test_policy_defaults_follow_the_spec() -> None:
    policy = load_config(ROOT / "config").policy
    assert policy.rule_for("rollback", "development")[1].approvals == 0
    assert policy.rule_for("rollback", "staging")[1].approvals == 1
    assert policy.rule_for("rollback", "production")[1].approvals == 1
    assert policy.rule_for("scale.pods", "production")[1].approvals == 1
    assert policy.rule_for("dr.failover", "production")[1].approvals == 2
    assert policy.rule_for("dr.failback", "production")[1].approvals == 2
    assert policy.rule_for("maintenance.resize", "production")[1].approvals == 2
    assert policy.rule_for("restore.test", "production")[1].approvals == 0
    assert policy.rule_for("rollback", "production")[1].expiry == 30 * 60


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "environments.yaml",
            "    tier: production",
            "    tier: prod",
            "environments.yaml: environments.production.tier: must be 'sandbox', 'staging' or "
            "'production'",
        ),
        (
            "environments.yaml",
            "    primary_region: us-east-1\n    kube_contexts: {us-east-1: us-east-1, us-west-2",
            "    primary_region: eu-west-9\n    kube_contexts: {us-east-1: us-east-1, us-west-2",
            "environments.production: primary_region 'eu-west-9' is not one of "
            "regions (us-east-1, us-west-2)",
        ),
        (
            "environments.yaml",
            "installation: sandbox",
            "installation: sandbox\nsandbx: true",
            "environments.yaml: sandbx: unknown key",
        ),
        (
            "environments.yaml",
            "max_replicas: 10}  #",
            "max_replicas: 0}  #",
            "environments.development.scaling.max_replicas: Input should be greater than or "
            "equal to 1",
        ),
        (
            "policy.yaml",
            "approvals: 2, break_glass: true, channels: [C0OPS]}",
            "approvals: 2, break_glass: true, channels: [C0OPS], approver: [sre]}",
            "rules[7].approver: unknown key",
        ),
        (
            "policy.yaml",
            "approvers: [sre], approvals: 1}",
            "approvers: [sres], approvals: 1}",
            "policy.yaml: rules[1]: unknown group or person 'sres'; known groups: alerts, "
            "developers, drills, sre",
        ),
        ("policy.yaml", "expiry: 30m", "expiry: 30 minutes", "invalid duration '30 minutes'"),
        (
            "policy.yaml",
            "terminal_users: [bob]",
            "terminal_users: [alice]",
            "people.bob.terminal_users: 'alice' already belongs to alice",
        ),
    ],
    ids=[
        "tier",
        "primary-region",
        "unknown-top-key",
        "bounds",
        "unknown-rule-key",
        "unknown-group",
        "duration",
        "duplicate-login",
    ],
)
def test_errors_name_file_key_and_what_is_allowed(
    config_dir: Path, file: str, old: str, new: str, expected: str
) -> None:
    edit(config_dir / file, old, new)
    with pytest.raises(ConfigError) as error:
        load_config(config_dir)
    assert expected in error.value.message


_PR = "repositories: {'file:///srv/api.git': acme/api}, token_env: GITHUB_TOKEN"
_PR_KEY = "environments.yaml: environments.production.gitops.pull_request"


@pytest.mark.parametrize(
    ("pull_request", "expected"),
    [
        (
            "{repositories: {'file:///srv/api.git': acme}, token_env: GITHUB_TOKEN}",
            f"{_PR_KEY}.repositories: file:///srv/api.git: 'acme' is not owner/name",
        ),
        ("{repositories: {}, token_env: GITHUB_TOKEN}", f"{_PR_KEY}.repositories: "),
        (
            "{repositories: {'file:///srv/api.git': acme/api}}",
            f"{_PR_KEY}.token_env: required key is missing",
        ),
        (
            f"{{{_PR.replace('GITHUB_TOKEN', 'ghp_R2d2C3poBb8Lk4q9ZxW1mN7vT5yU0sA3eD6f')}}}",
            f"{_PR_KEY}.token_env: this looks like a token itself",
        ),
        (
            f"{{{_PR.replace('GITHUB_TOKEN', 'my token')}}}",
            f"{_PR_KEY}.token_env: neither the name of an environment variable",
        ),
        (f"{{{_PR}, api: gitlab}}", f"{_PR_KEY}.api: must be 'github'"),
        (
            f"{{{_PR}, api_url: api.github.com}}",
            f"{_PR_KEY}.api_url: 'api.github.com' is not an http(s) URL",
        ),
        (
            f"{{{_PR}, run_link: 'https://logs.example.com/runs'}}",
            f"{_PR_KEY}.run_link: 'https://logs.example.com/runs' has no {{run}}",
        ),
        (f"{{{_PR}, timeout: 10 parsecs}}", "invalid duration '10 parsecs'"),
        (f"{{{_PR}, draft: true}}", f"{_PR_KEY}.draft: unknown key"),
    ],
    ids=[
        "owner-name",
        "no-repositories",
        "no-token",
        "token-pasted",
        "token-not-a-name",
        "api-kind",
        "api-url",
        "run-link",
        "timeout",
        "unknown-key",
    ],
)
def test_a_bad_pull_request_configuration_names_its_key(
    config_dir: Path, pull_request: str, expected: str
) -> None:
    anchor = "    kube_contexts: {us-east-1: us-east-1, us-west-2: us-west-2}\n"
    edit(
        config_dir / "environments.yaml",
        anchor,
        f"{anchor}    gitops: {{pull_request: {pull_request}}}\n",
    )
    with pytest.raises(ConfigError) as error:
        load_config(config_dir)
    assert expected in error.value.message
    assert "R2d2C3po" not in error.value.message and "my token" not in error.value.message


def test_a_pull_request_configuration_loads_and_is_off_elsewhere(config_dir: Path) -> None:
    anchor = "    kube_contexts: {us-east-1: us-east-1, us-west-2: us-west-2}\n"
    secret = "aws-secretsmanager:prod/github#token"
    edit(
        config_dir / "environments.yaml",
        anchor,
        f"{anchor}    gitops: {{pull_request: {{{_PR.replace('GITHUB_TOKEN', secret)}}}}}\n",
    )
    config = load_config(config_dir)
    wanted = config.environment("production").gitops.pull_request
    assert wanted is not None and wanted.token_env == secret
    assert (wanted.api, wanted.api_url, wanted.timeout) == ("github", "https://api.github.com", 10)
    assert wanted.repositories == {"file:///srv/api.git": "acme/api"}
    assert config.environment("staging").gitops.pull_request is None


def test_malformed_yaml_gives_line_and_column(config_dir: Path) -> None:
    (config_dir / "policy.yaml").write_text("people: [alice\nrules: {")
    with pytest.raises(ConfigError, match=r"policy.yaml: line \d+, column \d+: malformed YAML"):
        load_config(config_dir)


@pytest.mark.slow  # the CLI as a process
def test_config_check_exit_codes(config_dir: Path, cli_env: dict[str, str]) -> None:
    ok = run_cli(["config.check"], {**cli_env, "RUNBOOK_BOT_CONFIG": str(config_dir)})
    assert ok.returncode == 0 and ok.stdout.startswith("configuration OK")
    assert "production   production regions us-east-1, us-west-2" in ok.stdout
    edit(config_dir / "environments.yaml", "    tier: staging", "    tier: stage")
    edit(config_dir / "policy.yaml", "allow_user_override: true", "allow_user_override: maybe")
    bad = run_cli(["config.check"], {**cli_env, "RUNBOOK_BOT_CONFIG": str(config_dir)})
    assert bad.returncode == 2
    assert "environments.staging.tier" in bad.stderr and "allow_user_override" in bad.stderr


def test_durations() -> None:
    assert parse_duration("90") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800 and parse_duration(15) == 15
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


def test_a_key_given_twice_is_refused_with_both_lines(config_dir: Path) -> None:
    environments = config_dir / "environments.yaml"
    text = environments.read_text()
    staging = text[text.index("  staging:") : text.index("  production:")]
    environments.write_text(text + staging.replace("api-deployment", "other-deployment"))
    first = text[: text.index("  staging:")].count("\n") + 1
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    message = caught.value.message
    assert f"environments.yaml: line {text.count(chr(10)) + 1}" in message
    assert f"duplicate key 'staging' (first given on line {first})" in message


@pytest.mark.slow  # the CLI as a process
def test_a_person_given_twice_or_sharing_an_identity_is_refused(
    config_dir: Path, cli_env: dict[str, str]
) -> None:
    policy = config_dir / "policy.yaml"
    original = policy.read_text()
    edit(policy, "  carol:", "  bob:   {name: Bob Two, groups: [sre]}\n  carol:")
    with pytest.raises(ConfigError, match=r"policy.yaml: line \d+.*duplicate key 'bob'"):
        load_config(config_dir)
    policy.write_text(original)
    edit(policy, "slack_id: U0CAROL", "slack_id: U0BOB")
    with pytest.raises(ConfigError) as caught:
        load_config(config_dir)
    assert "people.carol.slack_id: 'U0BOB' already belongs to bob" in caught.value.message
    checked = run_cli(["config.check"], {**cli_env, "RUNBOOK_BOT_CONFIG": str(config_dir)})
    assert checked.returncode == 2 and "U0BOB" in checked.stderr


def test_schedules_refuse_duplicate_keys_too(tmp_path: Path) -> None:
    from runbooks.engine.config.schedules import load_schedules

    path = tmp_path / "schedules.yaml"
    path.write_text("maintenance_windows: []\nmaintenance_windows: []\n")
    with pytest.raises(ConfigError, match=r"line 2.*duplicate key 'maintenance_windows'"):
        load_schedules(path)
