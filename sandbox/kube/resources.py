"""The resource catalog the emulator serves (groups, versions, kinds, verbs) and the small
helpers every part shares (Status errors, timestamps, template hashes)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "sandbox",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
    "emulationMajor": "1",
    "emulationMinor": "32",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "31",
}
REVISION = "deployment.kubernetes.io/revision"
REVIEWS_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
HISTORY_LIMIT = 1000


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    subresources: tuple[str, ...] = ()
    short: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


RESOURCES = [
    Resource(
        "",
        "v1",
        "namespaces",
        "Namespace",
        namespaced=False,
        subresources=("status",),
        short=("ns",),
    ),
    Resource("", "v1", "pods", "Pod", subresources=("status",), short=("po",)),
    Resource("", "v1", "services", "Service", subresources=("status",), short=("svc",)),
    Resource("", "v1", "endpoints", "Endpoints", short=("ep",)),
    Resource("", "v1", "events", "Event", short=("ev",)),
    Resource("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    Resource(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        subresources=("scale", "status"),
        short=("deploy",),
    ),
    Resource(
        "apps", "v1", "replicasets", "ReplicaSet", subresources=("scale", "status"), short=("rs",)
    ),
    Resource(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        subresources=("status",),
        short=("hpa",),
    ),
    Resource("coordination.k8s.io", "v1", "leases", "Lease"),
    # GitOps custom resources (sandbox/gitops.py reconciles them): Argo CD and Flux.
    Resource(
        "argoproj.io",
        "v1alpha1",
        "applications",
        "Application",
        subresources=("status",),
        short=("app", "apps"),
    ),
    Resource(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "kustomizations",
        "Kustomization",
        subresources=("status",),
        short=("ks",),
    ),
    # Stored only (the sandbox's reconciler does not play helm-controller).
    Resource(
        "helm.toolkit.fluxcd.io",
        "v2",
        "helmreleases",
        "HelmRelease",
        subresources=("status",),
        short=("hr",),
    ),
    Resource(
        "source.toolkit.fluxcd.io",
        "v1",
        "gitrepositories",
        "GitRepository",
        subresources=("status",),
        short=("gitrepo",),
    ),
    # Only ``create`` (kubectl auth can-i): answered from the forbidden rules, never stored.
    Resource(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        namespaced=False,
    ),
]
BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
#: Who the sandbox says the caller is, in a Forbidden answer.
SANDBOX_USER = "system:serviceaccount:runbook-bot:runbook-bot"


class ApiError(Exception):
    """An error the API server answers with a Status object."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), tz=UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def prune_nulls(value: Any, key: str = "") -> Any:
    """Normalise as the API server does when it decodes into typed objects: drop null fields
    and write whole-core CPU quantities canonically (``2000m`` is stored as ``2``)."""
    if isinstance(value, dict):
        return {k: prune_nulls(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    if key == "cpu" and isinstance(value, str) and value.endswith("m") and value[:-1].isdigit():
        millis = int(value[:-1])
        return str(millis // 1000) if millis % 1000 == 0 else value
    return value


def template_hash(template: dict[str, Any]) -> str:
    """A stable pod-template-hash (the label kube adds to replica sets and pods)."""
    clean = template
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict) and "pod-template-hash" in labels:  # copied where it differs
        kept = {k: v for k, v in labels.items() if k != "pod-template-hash"}
        clean = {**template, "metadata": {**template["metadata"], "labels": kept}}
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        number, rest = divmod(number, len(alphabet))
        out += alphabet[rest]
    return out
