"""Load and validate the configuration directory: ``environments.yaml`` (schema in
``environments.py``), ``policy.yaml`` (``policy_file.py``), ``alerts.yaml`` and
``schedules.yaml``, checked against each other.

Errors name the file, the key path and what is allowed. Unknown keys are errors. Secrets are
never read from these files: they name environment variables instead (``*_env`` keys).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from runbooks.engine.config import yaml_files as yamlfile
from runbooks.engine.config.alerts import AlertsFile, load_alerts
from runbooks.engine.config.environments import EnvironmentConfig, EnvironmentsFile
from runbooks.engine.config.policy_file import PolicyFile
from runbooks.engine.config.schedules import SchedulesFile, load_schedules
from runbooks.engine.config.yaml_files import format_validation_error
from runbooks.engine.errors import ConfigError


class Config:
    """The validated configuration directory."""

    def __init__(
        self,
        directory: Path,
        environments: EnvironmentsFile,
        policy: PolicyFile,
        schedules: SchedulesFile | None = None,
        alerts: AlertsFile | None = None,
    ):
        self.directory = directory
        self.environments = environments
        self.policy = policy
        self.schedules = schedules if schedules is not None else SchedulesFile()
        #: ``alerts.yaml`` of the directory: Alertmanager alerts mapped to runbooks.
        self.alerts = alerts if alerts is not None else AlertsFile()

    @property
    def is_sandbox(self) -> bool:
        return self.environments.sandbox

    def environment_names(self) -> list[str]:
        return list(self.environments.environments)

    def environment_hash(self, name: str) -> str:
        """SHA-256 of an environment's configuration (environments.yaml, as validated): what
        a material change changes."""
        doc = self.environment(name).model_dump(mode="json")
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments.environments[name]
        except KeyError:
            raise ConfigError(
                f"unknown environment {name!r}; known: {', '.join(self.environment_names())}"
            ) from None

    def describe(self) -> str:
        kind = "sandbox" if self.is_sandbox else "installation"
        return f"{self.directory} ({kind} {self.environments.installation!r})"


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise ConfigError(
            f"{path}: file not found",
            hint="set RUNBOOK_BOT_CONFIG to a directory holding environments.yaml and policy.yaml",
        )
    try:
        data = yamlfile.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, found {type(data).__name__}")
    return data


def load_config(directory: Path, *, schedules: Path | None = None) -> Config:
    """Read and validate the files; raise ConfigError listing every problem found.

    ``schedules`` is the path of ``schedules.yaml`` (maintenance windows, drills), if any.
    """
    problems: list[str] = []
    env_path, policy_path = directory / "environments.yaml", directory / "policy.yaml"
    environments = policy = None
    try:
        environments = EnvironmentsFile.model_validate(_read_yaml(env_path))
    except ValidationError as exc:
        problems.append(format_validation_error(str(env_path), exc))
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        policy = PolicyFile.model_validate(_read_yaml(policy_path))
    except ValidationError as exc:
        problems.append(format_validation_error(str(policy_path), exc))
    except ConfigError as exc:
        problems.append(str(exc))
    schedule_file = SchedulesFile()
    if schedules is not None:
        try:
            schedule_file = load_schedules(schedules)
        except ConfigError as exc:
            problems.append(exc.message)
    if environments is not None and policy is not None:
        problems.extend(_cross_check(policy_path, environments, policy))
        for index, window in enumerate(schedule_file.maintenance_windows):
            for name in window.environments:
                if name not in environments.environments:
                    problems.append(
                        f"{schedules}: maintenance_windows[{index}].environments: unknown "
                        f"environment {name!r}; known: {', '.join(environments.environments)}"
                    )
    alerts_file = AlertsFile()
    try:
        alerts_file = load_alerts(directory / "alerts.yaml")
    except ConfigError as exc:
        problems.append(exc.message)
    if problems or environments is None or policy is None:
        raise ConfigError("\n".join(problems))
    return Config(directory, environments, policy, schedule_file, alerts_file)


def _cross_check(path: Path, envs: EnvironmentsFile, policy: PolicyFile) -> list[str]:
    problems = []
    groups = {g for p in policy.people.values() for g in p.groups} | {"*"}
    named: list[tuple[str, list[str]]] = [
        (f"rules[{index}]", [*rule.requesters, *rule.approvers, *(rule.operators or [])])
        for index, rule in enumerate(policy.rules)
    ]
    named.append(("drills.operators", policy.drills.operators or []))
    named.append(("incidents.responders", policy.incidents.responders))
    for where, names in named:
        for name in names:
            if name.startswith("slack:") and len(name) > len("slack:"):
                continue  # a Slack user group, resolved by the Slack front end
            if name not in groups and name not in policy.people:
                problems.append(
                    f"{path}: {where}: unknown group or person {name!r}; known groups: "
                    f"{', '.join(sorted(groups - {'*'}))} (or slack:<user group id>)"
                )
    for index, rule in enumerate(policy.rules):
        for pattern in rule.environments:
            if not any(fnmatch.fnmatchcase(e, pattern) for e in envs.environments):
                problems.append(
                    f"{path}: rules[{index}].environments: {pattern!r} matches no environment; "
                    f"known: {', '.join(envs.environments)}"
                )
    for index, freeze in enumerate(policy.freezes):
        for name in freeze.environments:
            if name not in envs.environments:
                problems.append(f"{path}: freezes[{index}]: unknown environment {name!r}")
    seen: dict[str, str] = {}
    for key, person in policy.people.items():
        for login in person.terminal_users:
            if login in seen:
                problems.append(
                    f"{path}: people.{key}.terminal_users: {login!r} already belongs to "
                    f"{seen[login]}"
                )
            seen[login] = key
    # Identity in Slack is the user id: two people sharing one would let one act (and
    # approve) as the other.
    slack_owner: dict[str, str] = {}
    for key, person in policy.people.items():
        if person.slack_id is None:
            continue
        if person.slack_id in slack_owner:
            problems.append(
                f"{path}: people.{key}.slack_id: {person.slack_id!r} already belongs to "
                f"{slack_owner[person.slack_id]}; each Slack id belongs to one person"
            )
        slack_owner[person.slack_id] = key
    return problems
