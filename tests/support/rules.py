"""Policy rules shared by the approval tests (two approvals in production)."""

from __future__ import annotations

from typing import Any

from runbooks.engine.config.loader import Config, load_config
from runbooks.engine.config.policy_file import PolicyFile
from tests.conftest import ROOT


def config_with(**policy_changes: Any) -> Config:
    """The sandbox configuration with policy.yaml keys replaced."""
    base = load_config(ROOT / "config")
    doc = base.policy.model_dump()
    doc.update(policy_changes)
    return Config(base.directory, base.environments, PolicyFile.model_validate(doc))


RULES_2_IN_PRODUCTION = [
    {
        "runbooks": "test.*",
        "environments": ["production"],
        "requesters": ["sre"],
        "approvers": ["sre"],
        "approvals": 2,
        "break_glass": True,
    },
    {"runbooks": "*", "environments": ["*"], "requesters": ["sre", "developers"], "approvals": 0},
]
