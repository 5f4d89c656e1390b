"""A stricter policy for approval tests, and running the CLI as a given person."""

from __future__ import annotations

STRICT_RULES = """rules:
  - runbooks: selftest
    environments: [production]
    requesters: [sre]
    approvers: [sre]
    approvals: 2
    break_glass: true
  - {runbooks: selftest, environments: [staging], requesters: [sre], approvers: [sre], approvals: 1}
"""


def as_user(env: dict[str, str], user: str) -> dict[str, str]:
    return {**env, "RUNBOOK_USER": user}
