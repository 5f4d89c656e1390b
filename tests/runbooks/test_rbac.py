"""RBAC of least privilege, from what the runbooks do: every Kubernetes runbook runs against
the emulators (rolling and blue-green rollbacks, an explicit revision, the history, scaling
pods and the HPA, the rollout watch included); every API call they made is mapped to the
(group, resource, verb) RBAC checks, and the operator role in deploy/kubernetes must grant
exactly those: nothing a runbook uses is missing, nothing granted goes unused."""

from __future__ import annotations

from typing import Any

from runbooks.engine.engine import Engine
from runbooks.engine.models import State
from tests.conftest import AwsWorld, KubeSandbox
from tests.support.deploy import by_kind, render
from tests.support.kube_runs import run

METHOD_VERBS = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}


def rbac_of(method: str, path: str, watching: bool) -> tuple[str, str, str] | None:
    """``GET /apis/apps/v1/namespaces/ns/deployments`` → ("apps", "deployments", "list")."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None  # discovery (/api, /apis, /version): allowed to every authenticated user
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    elif rest[:1] == ["namespaces"]:
        return None
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:3]
    if sub:
        resource = f"{resource}/{sub[0]}"
    if method == "GET":
        verb = "watch" if watching else ("get" if name else "list")
    else:
        verb = METHOD_VERBS[method]
    return group, resource, verb


def granted() -> set[tuple[str, str, str]]:
    (role,) = by_kind(render("production"), "ClusterRole")
    found = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found |= {(group, resource, verb) for verb in rule["verbs"]}
    return found


def test_the_role_grants_exactly_what_the_runbooks_call(
    kube: KubeSandbox, kube_engine: Engine, aws: AwsWorld
) -> None:
    scenarios: list[tuple[str, dict[str, Any]]] = [
        ("rollback.history", {"environment": "production"}),
        ("rollback", {"environment": "production"}),
        ("rollback", {"environment": "production", "to_revision": 1, "region": "us-east-1"}),
        ("rollback", {"environment": "staging", "service": "web"}),
        ("scale.hpa", {"environment": "production", "service": "api", "min": 4, "max": 16}),
        ("scale.pods", {"environment": "production", "service": "api", "replicas": 6}),
    ]
    for name, params in scenarios:
        done = run(kube_engine, name, **params)
        assert done.state == State.SUCCEEDED, f"{name} {params}: {done.error}"
    calls = [c for region in ("us-east-1", "us-west-2") for c in kube.cluster(region).calls]
    used = {found for call in calls if (found := rbac_of(*call)) is not None}
    assert ("apps", "deployments", "watch") in used  # the rollout watch is among them
    role = granted()
    assert used - role == set(), f"the runbooks call what the role does not grant: {used - role}"
    assert role - used == set(), f"the role grants what no runbook used: {role - used}"
