"""An HTTP server that behaves like the Kubernetes API server for the subset runbook-bot uses.

Good enough for the official ``kubernetes`` client and a real ``kubectl`` (get, scale, rollout
history/undo/status): discovery, resourceVersion and generation, 409 on stale writes, Status
bodies for 404/409/422, JSON merge, strategic merge and JSON patch, label and field selectors,
``?watch=true`` streams, and controllers for deployments, replica sets, pods, endpoints and
HPAs. ``kubectl get`` gets the Table format it asks for, for a list and for one object
(deployments and pods with the API server's columns, ``-o wide`` included; other kinds NAME
and AGE only). One emulator is one cluster (one region); state lives in memory. Gaps: no
authentication or RBAC, no admission, no server-side apply, no table columns beyond
deployments' and pods'.

Test hooks live under ``/_sandbox/`` (never part of the Kubernetes API):
``POST /_sandbox/conflicts {"count": N}`` makes the next N writes answer 409;
``POST /_sandbox/broken {"images": [...]}`` makes pods of those images never become ready
(``ImagePullBackOff``, "Back-off pulling image": a registry that does not answer);
``{"images": [...], "missing": true}`` makes the registry say they do not exist (``ErrImagePull``
with the kubelet's NotFound message; the real kubelet alternates it with ``ImagePullBackOff``,
the emulator keeps the first);
``POST /_sandbox/oom {"memory_limit_below": "1Gi"}`` makes pods whose memory limit is lower
crash (OOMKilled, never ready); ``{}`` clears it;
``POST /_sandbox/deny {"namespace": "production", "group": "apps", "resource":
"deployments/scale", "verb": "patch"}`` makes a ``SelfSubjectAccessReview`` of exactly that
answer "not allowed" (``"allow": true`` lifts it). Access reviews are otherwise always
allowed (there is no RBAC); ``Cluster.writes()`` is the write log (reviews are not writes: the
API server stores nothing).
crash (OOMKilled, never ready); ``{}`` clears it.
``POST /_sandbox/forbid {"rules": [{"group": "argoproj.io", "resource": "applications",
"verb": "patch"}]}`` forbids those calls (403) and makes SelfSubjectAccessReviews say no
(the only RBAC the emulator has); ``{}`` clears it. Argo CD Applications, Flux Kustomizations
and GitRepositories are stored like any object; ``sandbox/gitops.py`` reconciles them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from sandbox.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.selectors import (
    parse_field_selector,
    parse_label_selector,
    selector_from_match_labels,
)
from sandbox.local_http import JsonHandler, LocalServer, QuietServer

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
    clean = copy.deepcopy(template)
    clean.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    digest = hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest[:16], 16)
    out = ""
    for _ in range(10):
        number, rest = divmod(number, len(alphabet))
        out += alphabet[rest]
    return out


class Cluster:
    """The in-memory object store, its watch history and its controllers."""

    def __init__(
        self,
        name: str = "sandbox",
        *,
        pace: float = 0.05,
        ready_after: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.pace = pace
        self.ready_after = ready_after
        self.clock = clock
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.rv = 0
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.conflicts_to_inject = 0
        self.broken_images: set[str] = set()
        #: Broken images the registry does not have (the kubelet's ErrImagePull, NotFound).
        self.missing_images: set[str] = set()
        self.oom_below: float | None = None
        #: (group, resource, verb) this cluster's user may not do: answered 403, and
        #: SelfSubjectAccessReviews (``kubectl auth can-i``) say no.
        self.forbidden: set[tuple[str, str, str]] = set()
        self.requests: list[tuple[str, str]] = []
        #: (namespace, group, resource[/subresource], verb) an access review answers "no" to.
        self.denied: set[tuple[str, str, str, str]] = set()
        #: Every API call with its watch flag (method, path, watch): what RBAC must grant.
        self.calls: list[tuple[str, str, bool]] = []
        self._stop = threading.Event()
        self._names = (f"{n:05x}"[-5:] for n in itertools.count(0x1A2B3))

    def writes(self, since: int = 0) -> list[tuple[str, str]]:
        """The write log: every call from ``requests[since:]`` that may change state (not a
        read, an access review, which the API server never stores, or a sandbox hook)."""
        return [
            (method, path)
            for method, path in self.requests[since:]
            if method != "GET" and path != REVIEWS_PATH and not path.startswith("/_sandbox/")
        ]

    # store ------------------------------------------------------------------------------
    def _key(self, resource: Resource, namespace: str | None, name: str) -> tuple[str, str, str]:
        return (f"{resource.group}/{resource.plural}", namespace or "", name)

    def _record(self, kind: str, resource: Resource, obj: dict[str, Any]) -> None:
        self.history.append(
            (self.rv, kind, f"{resource.group}/{resource.plural}", copy.deepcopy(obj))
        )
        del self.history[:-HISTORY_LIMIT]
        self.changed.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get(self._key(resource, namespace, name))
            if obj is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f"{resource.plural}{'.' + resource.group if resource.group else ''}"
                    f' "{name}" not found',
                    {"name": name, "group": resource.group, "kind": resource.plural},
                )
            return copy.deepcopy(obj)

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        prefix = f"{resource.group}/{resource.plural}"
        with self.lock:
            items = [
                copy.deepcopy(obj)
                for (kind, ns, _), obj in sorted(self.objects.items())
                if kind == prefix
                and (namespace is None or ns == namespace)
                and labels(obj["metadata"].get("labels") or {})
                and fields(obj)
            ]
            return items, self.rv

    def create(
        self,
        resource: Resource,
        namespace: str | None,
        body: dict[str, Any],
        *,
        internal: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            self._maybe_conflict(internal)
            obj = prune_nulls(copy.deepcopy(body))
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + next(self._names)
            name = meta.get("name")
            if not name:
                raise ApiError(
                    422,
                    "Invalid",
                    f"{resource.kind} is invalid: metadata.name: "
                    "Required value: name or generateName is required",
                )
            if resource.namespaced:
                if namespace is None:
                    raise ApiError(400, "BadRequest", "the namespace of the object must be set")
                if meta.get("namespace", namespace) != namespace:
                    raise ApiError(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does "
                        "not match the namespace sent on the request",
                    )
                if not self.objects.get(
                    self._key(BY_PATH["", "v1", "namespaces"], None, namespace)
                ):
                    raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
                meta["namespace"] = namespace
            key = self._key(resource, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{resource.plural} "{name}" already exists')
            self._validate(resource, obj)
            obj["kind"], obj["apiVersion"] = resource.kind, resource.api_version
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now_iso(self.clock()))
            meta["generation"] = 1
            meta.setdefault("labels", {})
            meta.setdefault("annotations", {})
            self._defaults(resource, obj)
            self._bump(obj)
            self.objects[key] = obj
            self._record("ADDED", resource, obj)
            return copy.deepcopy(obj)

    def replace(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
        internal: bool = False,
    ) -> dict[str, Any]:
        with self.lock:
            self._maybe_conflict(internal)
            current = self.objects.get(self._key(resource, namespace, name))
            if current is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {resource.plural}"
                    f'{"." + resource.group if resource.group else ""} "{name}": the '
                    "object has been modified; please apply your changes to the "
                    "latest version and try again",
                    {"name": name, "kind": resource.plural},
                )
            new = prune_nulls(copy.deepcopy(body))
            if subresource == "status":
                merged = copy.deepcopy(current)
                merged["status"] = new.get("status", {})
                new = merged
            elif subresource is None:
                new["status"] = current.get("status", {})
            meta = new.setdefault("metadata", {})
            for field in ("uid", "creationTimestamp", "namespace", "name"):
                meta[field] = (
                    current["metadata"].get(field)
                    if field in current["metadata"]
                    else meta.get(field)
                )
            meta["generation"] = current["metadata"].get("generation", 1)
            if subresource is None and new.get("spec") != current.get("spec"):
                meta["generation"] += 1
            meta.setdefault("labels", {})
            meta.setdefault("annotations", {})
            new["kind"], new["apiVersion"] = resource.kind, resource.api_version
            self._validate(resource, new)
            self._defaults(resource, new)
            unchanged = {
                **new,
                "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            if unchanged == current:
                return copy.deepcopy(current)  # no-op writes keep the resourceVersion
            self._bump(new)
            self.objects[self._key(resource, namespace, name)] = new
            self._record("MODIFIED", resource, new)
            return copy.deepcopy(new)

    def delete(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        with self.lock:
            key = self._key(resource, namespace, name)
            obj = self.objects.pop(key, None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{resource.plural} "{name}" not found')
            self._bump(obj)
            self._record("DELETED", resource, obj)
            return obj

    def _maybe_conflict(self, internal: bool) -> None:
        if not internal and self.conflicts_to_inject > 0:
            self.conflicts_to_inject -= 1
            raise ApiError(
                409,
                "Conflict",
                "the object has been modified; please apply your "
                "changes to the latest version and try again (injected)",
            )

    def _validate(self, resource: Resource, obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        problems = []
        if resource.kind in {"Deployment", "ReplicaSet"}:
            if not spec.get("selector"):
                problems.append("spec.selector: Required value")
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers")
            if not containers:
                problems.append("spec.template.spec.containers: Required value")
            replicas = spec.get("replicas", 1)
            if not isinstance(replicas, int) or replicas < 0:
                problems.append(
                    f"spec.replicas: Invalid value: {replicas!r}: must be greater "
                    "than or equal to 0"
                )
            selector = selector_from_match_labels(spec.get("selector") or {})
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if spec.get("selector") and not selector(labels):
                problems.append(
                    "spec.template.metadata.labels: Invalid value: `selector` does "
                    "not match template `labels`"
                )
        if resource.kind == "HorizontalPodAutoscaler":
            low, high = spec.get("minReplicas", 1), spec.get("maxReplicas")
            if not isinstance(high, int) or high < 1:
                problems.append("spec.maxReplicas: Invalid value: must be greater than 0")
            elif isinstance(low, int) and low > high:
                problems.append(
                    f"spec.minReplicas: Invalid value: {low}: must be less than or "
                    f"equal to maxReplicas ({high})"
                )
        if problems:
            name = obj.get("metadata", {}).get("name", "")
            raise ApiError(
                422, "Invalid", f'{resource.kind} "{name}" is invalid: ' + "; ".join(problems)
            )

    def _defaults(self, resource: Resource, obj: dict[str, Any]) -> None:
        spec = (
            obj.setdefault("spec", {})
            if resource.kind not in {"Endpoints", "Event", "Namespace"}
            else None
        )
        if resource.kind == "Deployment" and spec is not None:
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
                },
            )
            obj.setdefault("status", {})
        if resource.kind == "ReplicaSet" and spec is not None:
            spec.setdefault("replicas", 1)
            obj.setdefault("status", {"replicas": 0})
        if resource.kind in {"Deployment", "ReplicaSet", "Pod"}:
            pod_spec = (
                (spec or {}).get("template", {}).get("spec") if resource.kind != "Pod" else spec
            )
            for container in (pod_spec or {}).get("containers", []):
                container.setdefault("imagePullPolicy", "IfNotPresent")
                container.setdefault("terminationMessagePath", "/dev/termination-log")
                container.setdefault("terminationMessagePolicy", "File")
                container.setdefault("resources", {})
            if pod_spec is not None:
                pod_spec.setdefault("restartPolicy", "Always")
                pod_spec.setdefault("dnsPolicy", "ClusterFirst")
                pod_spec.setdefault("schedulerName", "default-scheduler")
                pod_spec.setdefault("securityContext", {})
                pod_spec.setdefault("terminationGracePeriodSeconds", 30)
        if resource.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        if resource.kind == "Service" and spec is not None:
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            obj.setdefault("status", {"loadBalancer": {}})
        if resource.kind == "HorizontalPodAutoscaler" and spec is not None:
            spec.setdefault("minReplicas", 1)
            obj.setdefault("status", {"currentReplicas": 0, "desiredReplicas": 0})
        if resource.kind == "Lease" and spec is None:
            obj["spec"] = {}

    # scale subresource ------------------------------------------------------------------
    def scale_of(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        selector = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    # controllers ------------------------------------------------------------------------
    def start(self) -> None:
        threading.Thread(target=self._control_loop, name=f"kube-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        with self.lock:
            self.changed.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _control_loop(self) -> None:
        while not self._stop.wait(self.pace):
            with self.lock:
                self.reconcile()

    def reconcile(self) -> None:
        """One controller pass: deployments, replica sets, pods, HPAs, endpoints."""
        deployments = BY_PATH["apps", "v1", "deployments"]
        for obj in [o for k, o in list(self.objects.items()) if k[0] == "apps/deployments"]:
            self._reconcile_deployment(deployments, obj)
        for obj in [o for k, o in list(self.objects.items()) if k[0] == "apps/replicasets"]:
            self._reconcile_replicaset(obj)
        for obj in [
            o
            for k, o in list(self.objects.items())
            if k[0] == "autoscaling/horizontalpodautoscalers"
        ]:
            self._reconcile_hpa(obj)
        for obj in [o for k, o in list(self.objects.items()) if k[0] == "/services"]:
            self._reconcile_endpoints(obj)

    def _owned(self, prefix: str, owner: dict[str, Any]) -> list[dict[str, Any]]:
        uid, ns = owner["metadata"]["uid"], owner["metadata"]["namespace"]
        return [
            o
            for (kind, o_ns, _), o in self.objects.items()
            if kind == prefix
            and o_ns == ns
            and any(ref.get("uid") == uid for ref in o["metadata"].get("ownerReferences", []))
        ]

    def _write(
        self, plural: str, group: str, obj: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        resource = next(r for r in RESOURCES if r.plural == plural and r.group == group)
        return self.replace(
            resource,
            obj["metadata"].get("namespace"),
            obj["metadata"]["name"],
            obj,
            subresource=subresource,
            internal=True,
        )

    def _reconcile_deployment(self, resource: Resource, deploy: dict[str, Any]) -> None:
        spec, meta = deploy["spec"], deploy["metadata"]
        desired = spec.get("replicas", 1)
        owned = self._owned("apps/replicasets", deploy)
        template = spec["template"]
        wanted_hash = template_hash(template)
        new_rs = next(
            (
                rs
                for rs in owned
                if rs["metadata"]["labels"].get("pod-template-hash") == wanted_hash
            ),
            None,
        )
        revisions = [int(rs["metadata"]["annotations"].get(REVISION, "0")) for rs in owned]
        top = max(revisions, default=0)
        status = copy.deepcopy(deploy.get("status") or {})
        if spec.get("paused"):
            status["observedGeneration"] = meta["generation"]
            self._set_status(deploy, status)
            return
        if new_rs is None:
            labels = {
                **(template.get("metadata", {}).get("labels") or {}),
                "pod-template-hash": wanted_hash,
            }
            rs_template = copy.deepcopy(template)
            rs_template.setdefault("metadata", {})["labels"] = labels
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = wanted_hash
            annotations = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if k not in {REVISION, "kubectl.kubernetes.io/last-applied-configuration"}
            }
            annotations.update(
                {
                    REVISION: str(top + 1),
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + 1),
                }
            )
            new_rs = self.create(
                BY_PATH["apps", "v1", "replicasets"],
                meta["namespace"],
                {
                    "metadata": {
                        "name": f"{meta['name']}-{wanted_hash}",
                        "labels": labels,
                        "annotations": annotations,
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "Deployment",
                                "name": meta["name"],
                                "uid": meta["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": {"replicas": 0, "selector": selector, "template": rs_template},
                },
                internal=True,
            )
            status["progressStartedAt"] = self.clock()
            top += 1
        elif int(new_rs["metadata"]["annotations"].get(REVISION, "0")) < top:
            # Rolling back to an old template: that replica set becomes the newest revision.
            rs = copy.deepcopy(new_rs)
            old_revision = rs["metadata"]["annotations"][REVISION]
            history = [
                h
                for h in rs["metadata"]["annotations"]
                .get("deployment.kubernetes.io/revision-history", "")
                .split(",")
                if h
            ]
            rs["metadata"]["annotations"][REVISION] = str(top + 1)
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] = ",".join(
                [*history, old_revision]
            )
            for key in ("kubernetes.io/change-cause",):
                if key in (meta.get("annotations") or {}):
                    rs["metadata"]["annotations"][key] = meta["annotations"][key]
            new_rs = self._write("replicasets", "apps", rs)
            status["progressStartedAt"] = self.clock()
            top += 1
        # A different new replica set is a new rollout: its progress deadline starts now.
        private = self._progress.setdefault(meta["uid"], {})
        if private.get("replicaset") != new_rs["metadata"]["name"]:
            private["replicaset"] = new_rs["metadata"]["name"]
            status["progressStartedAt"] = self.clock()
            status["resetProgress"] = True
        # Keep the deployment's revision annotation equal to the newest replica set's.
        revision = new_rs["metadata"]["annotations"][REVISION]
        if (meta.get("annotations") or {}).get(REVISION) != revision:
            updated = copy.deepcopy(deploy)
            updated["metadata"].setdefault("annotations", {})[REVISION] = revision
            deploy = self._write("deployments", "apps", updated)
            meta = deploy["metadata"]
        olds = [
            rs
            for rs in self._owned("apps/replicasets", deploy)
            if rs["metadata"]["name"] != new_rs["metadata"]["name"]
        ]
        new_rs = self.get(
            BY_PATH["apps", "v1", "replicasets"], meta["namespace"], new_rs["metadata"]["name"]
        )
        # One step per pass: surge the new replica set by one, then drain old ones as the
        # total available allows (maxUnavailable 1).
        new_replicas = new_rs["spec"]["replicas"]
        old_available = sum(rs.get("status", {}).get("availableReplicas", 0) for rs in olds)
        new_available = new_rs.get("status", {}).get("availableReplicas", 0)
        if new_replicas < desired:
            new_rs["spec"]["replicas"] = new_replicas + 1
            self._write("replicasets", "apps", new_rs)
        elif new_replicas > desired:
            new_rs["spec"]["replicas"] = desired
            self._write("replicasets", "apps", new_rs)
        for rs in olds:
            if rs["spec"]["replicas"] > 0 and (
                new_available + old_available > desired - 1 or new_available >= desired
            ):
                shrunk = copy.deepcopy(rs)
                shrunk["spec"]["replicas"] -= 1
                old_available -= 1
                self._write("replicasets", "apps", shrunk)
                break
        self._deployment_status(deploy, new_rs, olds, status)

    def _deployment_status(
        self,
        deploy: dict[str, Any],
        new_rs: dict[str, Any],
        olds: list[dict[str, Any]],
        status: dict[str, Any],
    ) -> None:
        spec, meta = deploy["spec"], deploy["metadata"]
        desired = spec.get("replicas", 1)
        everything = [new_rs, *olds]
        total = sum(rs["status"].get("replicas", 0) for rs in everything)
        ready = sum(rs["status"].get("readyReplicas", 0) for rs in everything)
        available = sum(rs["status"].get("availableReplicas", 0) for rs in everything)
        updated = new_rs["status"].get("replicas", 0)
        complete = (
            updated == desired
            and total == desired
            and available >= desired
            and new_rs["status"].get("availableReplicas", 0) >= desired
        )
        stamp = now_iso(self.clock())
        conditions = {c["type"]: c for c in status.get("conditions", [])}

        def condition(
            kind: str, value: str, reason: str, message: str, *, touch: bool = False
        ) -> None:
            old = conditions.get(kind)
            same = old and (old["status"], old["reason"], old["message"]) == (
                value,
                reason,
                message,
            )
            if same and not touch:
                return  # unchanged conditions keep their timestamps (no churn)
            transition = old["lastTransitionTime"] if old and old["status"] == value else stamp
            conditions[kind] = {
                "type": kind,
                "status": value,
                "reason": reason,
                "message": message,
                "lastUpdateTime": stamp,
                "lastTransitionTime": transition,
            }

        condition(
            "Available",
            "True" if available >= desired - 1 else "False",
            "MinimumReplicasAvailable"
            if available >= desired - 1
            else "MinimumReplicasUnavailable",
            "Deployment has minimum availability."
            if available >= desired - 1
            else "Deployment does not have minimum availability.",
        )
        # As the deployment controller's syncRolloutStatus (pkg/controller/deployment/
        # progress.go): (1) a complete deployment (every replica updated, Progressing already
        # NewReplicaSetAvailable) is left alone, so scaling it never times out; (2) otherwise
        # complete → NewReplicaSetAvailable; progress (more updated, ready or available
        # replicas, fewer old ones) → ReplicaSetUpdated and the deadline counts from now;
        # no progress for progressDeadlineSeconds → ProgressDeadlineExceeded.
        private = self._progress.setdefault(meta["uid"], {})
        last_progress = status.get("progressStartedAt") or private.get(
            "progressStartedAt", self.clock()
        )
        deadline = spec.get("progressDeadlineSeconds", 600)
        rs_name = new_rs["metadata"]["name"]
        previous = conditions.get("Progressing", {})
        new_rollout = bool(status.pop("resetProgress", False))
        already_complete = (
            not new_rollout
            and total == updated
            and previous.get("reason") == "NewReplicaSetAvailable"
        )
        old_replicas = status.get("replicas", 0) - status.get("updatedReplicas", 0)
        progressed = (
            updated > status.get("updatedReplicas", 0)
            or total - updated < old_replicas
            or ready > status.get("readyReplicas", 0)
            or available > status.get("availableReplicas", 0)
        )
        if already_complete:
            pass
        elif complete:
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif new_rollout or progressed:
            status["progressStartedAt"] = self.clock()
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
                touch=True,  # lastUpdateTime: the deadline counts from the last progress
            )
        elif self.clock() - last_progress > deadline:
            condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{rs_name}" has timed out progressing.',
            )
        status.update(
            {
                "observedGeneration": meta["generation"],
                "replicas": total,
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "unavailableReplicas": max(0, desired - available),
                "conditions": [conditions[k] for k in ("Available", "Progressing")],
            }
        )
        for key in ("readyReplicas", "availableReplicas"):
            if not status[key]:
                status.pop(key)
        if not status["unavailableReplicas"]:
            status.pop("unavailableReplicas")
        self._set_status(deploy, status)

    def _set_status(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        public = {
            k: v for k, v in status.items() if k not in {"progressStartedAt", "resetProgress"}
        }
        current = self.objects.get(
            self._key(
                BY_PATH["apps", "v1", "deployments"],
                obj["metadata"]["namespace"],
                obj["metadata"]["name"],
            )
        )
        if current is None:
            return
        private = self._progress.setdefault(obj["metadata"]["uid"], {})
        if "progressStartedAt" in status:
            private["progressStartedAt"] = status["progressStartedAt"]
        if current.get("status") != public:
            updated = copy.deepcopy(current)
            updated["status"] = public
            self._write("deployments", "apps", updated, subresource="status")

    @property
    def _progress(self) -> dict[str, dict[str, float]]:
        if not hasattr(self, "_progress_store"):
            self._progress_store: dict[str, dict[str, float]] = {}
        return self._progress_store

    def _reconcile_replicaset(self, rs: dict[str, Any]) -> None:
        pods = BY_PATH["", "v1", "pods"]
        meta = rs["metadata"]
        owned = self._owned("/pods", rs)
        wanted = rs["spec"].get("replicas", 1)
        if len(owned) < wanted:
            template = rs["spec"]["template"]
            self.create(
                pods,
                meta["namespace"],
                {
                    "metadata": {
                        "name": f"{meta['name']}-{next(self._names)}",
                        "labels": copy.deepcopy(template.get("metadata", {}).get("labels")),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": meta["name"],
                                "uid": meta["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": copy.deepcopy(template["spec"]),
                    "status": {
                        "phase": "Pending",
                        "conditions": [{"type": "Ready", "status": "False"}],
                    },
                },
                internal=True,
            )
        elif len(owned) > wanted:
            victim = sorted(owned, key=lambda p: p["metadata"]["name"])[-1]
            self.delete(pods, meta["namespace"], victim["metadata"]["name"])
        now = self.clock()
        for pod in self._owned("/pods", rs):
            images = [c.get("image", "") for c in pod["spec"].get("containers", [])]
            # A broken image is named in full or as people say it (`app-api:1.4.1`).
            broken = any(
                image in self.broken_images
                or image.rsplit("/", 1)[-1] in self.broken_images
                or image.endswith(":broken")
                for image in images
            )
            missing = next(
                (
                    image
                    for image in images
                    if image in self.missing_images
                    or image.rsplit("/", 1)[-1] in self.missing_images
                ),
                None,
            )
            broken = broken or missing is not None
            oom = self.oom_below is not None and any(
                _memory(((c.get("resources") or {}).get("limits") or {}).get("memory"))
                < self.oom_below
                for c in pod["spec"].get("containers", [])
            )
            created = (
                datetime.strptime(pod["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
                .replace(tzinfo=UTC)
                .timestamp()
            )
            ready = not broken and not oom and now - created >= self.ready_after
            phase = "Running" if ready else "Pending"
            was_ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod.get("status", {}).get("conditions", [])
            )
            reported = "containerStatuses" in pod.get("status", {})
            if ready != was_ready or pod.get("status", {}).get("phase") != phase or not reported:
                updated = copy.deepcopy(pod)
                updated["status"] = {
                    "phase": phase,
                    "podIP": f"10.0.0.{sum(map(ord, pod['metadata']['name'])) % 250}",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True" if ready else "False",
                            "lastTransitionTime": now_iso(now),
                        }
                    ],
                    "containerStatuses": [
                        {
                            "name": c["name"],
                            "image": c.get("image", ""),
                            "imageID": "",
                            "ready": ready,
                            "restartCount": 3 if oom else 0,
                            "started": ready,
                            # As the kubelet reports a container killed for memory.
                            **(
                                {
                                    "lastState": {
                                        "terminated": {"reason": "OOMKilled", "exitCode": 137}
                                    }
                                }
                                if oom
                                else {}
                            ),
                            "state": {"running": {"startedAt": now_iso(now)}}
                            if ready
                            else {"waiting": _waiting(c.get("image", ""), broken, missing, oom)},
                        }
                        for c in pod["spec"].get("containers", [])
                    ],
                }
                self.replace(
                    pods,
                    meta["namespace"],
                    pod["metadata"]["name"],
                    updated,
                    subresource="status",
                    internal=True,
                )
        fresh = self._owned("/pods", rs)
        ready_count = sum(
            1
            for p in fresh
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        )
        status = {
            "replicas": len(fresh),
            "fullyLabeledReplicas": len(fresh),
            "readyReplicas": ready_count,
            "availableReplicas": ready_count,
            "observedGeneration": meta["generation"],
        }
        for key in ("readyReplicas", "availableReplicas", "fullyLabeledReplicas"):
            if not status[key]:
                status.pop(key)
        if rs.get("status") != status:
            current = copy.deepcopy(
                self.objects[
                    self._key(BY_PATH["apps", "v1", "replicasets"], meta["namespace"], meta["name"])
                ]
            )
            current["status"] = status
            self._write("replicasets", "apps", current, subresource="status")

    def _reconcile_hpa(self, hpa: dict[str, Any]) -> None:
        spec, meta = hpa["spec"], hpa["metadata"]
        target = spec.get("scaleTargetRef", {})
        if target.get("kind") != "Deployment":
            return
        key = self._key(BY_PATH["apps", "v1", "deployments"], meta["namespace"], target["name"])
        deploy = self.objects.get(key)
        if deploy is None:
            return
        low, high = spec.get("minReplicas", 1), spec["maxReplicas"]
        current = deploy["spec"].get("replicas", 1)
        # As Kubernetes: a target scaled to zero disables the autoscaler until it is scaled up.
        desired = current if current == 0 else min(max(current, low), high)
        if desired != current:
            updated = copy.deepcopy(deploy)
            updated["spec"]["replicas"] = desired
            self._write("deployments", "apps", updated)
        status = {
            "currentReplicas": deploy.get("status", {}).get("replicas", 0),
            "desiredReplicas": desired,
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "ScalingDisabled",
                    "lastTransitionTime": now_iso(self.clock()),
                }
                if current == 0
                else {
                    "type": "ScalingLimited",
                    "status": "True" if desired != current else "False",
                    "reason": "TooFewReplicas"
                    if current < low
                    else "TooManyReplicas"
                    if current > high
                    else "DesiredWithinRange",
                    "lastTransitionTime": now_iso(self.clock()),
                }
            ],
        }
        if {k: v for k, v in (hpa.get("status") or {}).items() if k != "conditions"} != {
            k: v for k, v in status.items() if k != "conditions"
        }:
            updated = copy.deepcopy(hpa)
            updated["status"] = status
            self._write("horizontalpodautoscalers", "autoscaling", updated, subresource="status")

    def _reconcile_endpoints(self, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        selector = service["spec"].get("selector") or {}
        pods = [
            p
            for (kind, ns, _), p in self.objects.items()
            if kind == "/pods"
            and ns == meta["namespace"]
            and selector
            and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
        ]
        ready = sorted(
            p["metadata"]["name"]
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p.get("status", {}).get("conditions", [])
            )
        )
        not_ready = sorted(
            p["metadata"]["name"] for p in pods if p["metadata"]["name"] not in ready
        )
        subset: dict[str, Any] = {
            "ports": [
                {
                    "port": p.get("targetPort", p.get("port", 80)),
                    "protocol": p.get("protocol", "TCP"),
                }
                for p in service["spec"].get("ports", [])
            ]
        }
        if ready:
            subset["addresses"] = [
                {
                    "ip": f"10.1.0.{i + 1}",
                    "targetRef": {"kind": "Pod", "name": n, "namespace": meta["namespace"]},
                }
                for i, n in enumerate(ready)
            ]
        if not_ready:
            subset["notReadyAddresses"] = [
                {
                    "ip": f"10.2.0.{i + 1}",
                    "targetRef": {"kind": "Pod", "name": n, "namespace": meta["namespace"]},
                }
                for i, n in enumerate(not_ready)
            ]
        body = {
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "labels": meta.get("labels") or {},
            },
            "subsets": [subset] if (ready or not_ready) else [],
        }
        endpoints = BY_PATH["", "v1", "endpoints"]
        key = self._key(endpoints, meta["namespace"], meta["name"])
        current = self.objects.get(key)
        if current is None:
            self.create(endpoints, meta["namespace"], body, internal=True)
        elif current.get("subsets") != body["subsets"]:
            updated = copy.deepcopy(current)
            updated["subsets"] = body["subsets"]
            self.replace(endpoints, meta["namespace"], meta["name"], updated, internal=True)

    def settle(self, rounds: int = 200) -> None:
        """Run controller passes until nothing changes (seeding and tests)."""
        for _ in range(rounds):
            with self.lock:
                before = self.rv
                self.reconcile()
                if self.rv == before:
                    return

    # watch ------------------------------------------------------------------------------
    def watch(
        self,
        resource: Resource,
        namespace: str | None,
        *,
        since: int | None,
        label_selector: str | None,
        field_selector: str | None,
        timeout: float,
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events (type + object) until the timeout."""
        labels, fields = parse_label_selector(label_selector), parse_field_selector(field_selector)
        prefix = f"{resource.group}/{resource.plural}"

        def wanted(obj: dict[str, Any]) -> bool:
            return (
                (namespace is None or obj["metadata"].get("namespace") == namespace)
                and labels(obj["metadata"].get("labels") or {})
                and fields(obj)
            )

        with self.lock:
            if since is None:
                items, cursor = self.list_objects(
                    resource, namespace, label_selector, field_selector
                )
                initial = [{"type": "ADDED", "object": obj} for obj in items]
            else:
                oldest = self.history[0][0] if self.history else self.rv
                if since < oldest - 1 and since < self.rv:
                    initial = [
                        {
                            "type": "ERROR",
                            "object": ApiError(
                                410, "Expired", f"too old resource version: {since} ({self.rv})"
                            ).status(),
                        }
                    ]
                    cursor = self.rv
                else:
                    initial, cursor = [], since
        yield from initial
        deadline = time.monotonic() + timeout
        while not self.stopped:
            with self.lock:
                events = [
                    (rv, kind, obj)
                    for rv, kind, res, obj in self.history
                    if rv > cursor and res == prefix
                ]
                if not events:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self.changed.wait(min(left, 1.0))
                    continue
                cursor = events[-1][0]
            for _rv, kind, obj in events:
                if wanted(obj):
                    yield {"type": kind, "object": obj}


class KubeEmulator(LocalServer[QuietServer]):
    """The HTTP front of a Cluster, on 127.0.0.1 and a free port."""

    def __init__(
        self, cluster: Cluster | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.cluster = cluster or Cluster()
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        super().__init__(
            QuietServer((host, port), handler),
            poll_interval=0.05,
            name=f"kube-http-{self.cluster.name}",
        )

    def start(self) -> Self:
        self.cluster.settle()
        self.cluster.start()
        return super().start()

    def stop(self) -> None:
        self.cluster.stop()
        super().stop()


def _protobuf_fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a protobuf message (field number -> bytes); the
    varint ones are skipped. Enough for the string and message fields read here."""
    fields: dict[int, bytes] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= len(data):
                raise ApiError(400, "BadRequest", "truncated protobuf body")
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            size = varint()
            fields[number] = data[i : i + size]
            i += size
        else:
            raise ApiError(400, "BadRequest", f"unsupported protobuf wire type {wire}")
    return fields


def review_from_protobuf(raw: bytes) -> dict[str, Any]:
    """A SelfSubjectAccessReview sent as Kubernetes protobuf (``k8s\\0`` + runtime.Unknown
    whose ``raw`` is the object): its spec's resourceAttributes, as the JSON form has them."""
    if not raw.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "a protobuf body starts with k8s\\0")
    review = _protobuf_fields(_protobuf_fields(raw[4:]).get(2, b""))
    spec = _protobuf_fields(review.get(2, b""))
    attrs = _protobuf_fields(spec.get(1, b""))
    names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
    return {
        "spec": {
            "resourceAttributes": {
                name: attrs[number].decode()
                for number, name in enumerate(names, 1)
                if number in attrs
            }
        }
    }


def _deny_rule(body: dict[str, Any]) -> tuple[str, str, str, str]:
    """``{"namespace", "group", "resource", "verb"}`` of ``/_sandbox/deny`` (400 if incomplete)."""
    try:
        rule = tuple(str(body[k]) for k in ("namespace", "group", "resource", "verb"))
    except KeyError as exc:
        raise ApiError(400, "BadRequest", f"/_sandbox/deny needs {exc.args[0]}") from None
    if not rule[2] or not rule[3]:
        raise ApiError(400, "BadRequest", "/_sandbox/deny needs a resource and a verb")
    return rule  # type: ignore[return-value]


class _Handler(JsonHandler):
    cluster: Cluster
    #: The current request's body once read (None: not yet).
    _read: bytes | None = None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # plumbing ---------------------------------------------------------------------------
    def _raw_body(self) -> bytes:
        """The request's body, read once (``_dispatch`` drains what no handler read)."""
        if self._read is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._read = self.rfile.read(length) if length else b""
        return self._read

    def _body(self) -> Any:
        try:
            return super()._body()
        except json.JSONDecodeError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    def _dispatch(self, method: str) -> None:
        self._read = None
        try:
            self._answer(method)
        finally:
            # A body no handler read (kubectl's DELETE sends DeleteOptions) would otherwise be
            # parsed as the next request on this kept-alive connection.
            with contextlib.suppress(OSError, ValueError):
                self._raw_body()

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.cluster.requests.append((method, parts.path))
        if not parts.path.startswith("/_sandbox/"):
            watching = query.get("watch") in ("true", "1")
            self.cluster.calls.append((method, parts.path, watching))
        try:
            if parts.path.startswith("/_sandbox/"):
                self._send(200, self._admin(parts.path, self._body()))
                return
            if method == "POST" and parts.path.rstrip("/") == REVIEWS_PATH:
                self._send(201, self._access_review(self._review_body()))
                return
            discovery = self._discovery(parts.path)
            if discovery is not None:
                self._send(200, discovery)
                return
            self._resource(method, parts.path, query)
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except PatchError as exc:
            self._send(422, ApiError(422, "Invalid", str(exc)).status())
        except (BrokenPipeError, ConnectionResetError):
            return

    def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self.cluster
        with cluster.lock:
            if path == "/_sandbox/conflicts":
                cluster.conflicts_to_inject = int(body.get("count", 1))
            elif path == "/_sandbox/broken":
                images = set(body.get("images", []))
                if body.get("missing"):
                    cluster.missing_images = images
                else:
                    cluster.broken_images = images
                    if not images:  # `sandbox.fault broken-image --off`: every image again
                        cluster.missing_images = set()
            elif path == "/_sandbox/oom":
                below = body.get("memory_limit_below")
                if below and memory_quantity(str(below)) is None:
                    raise ApiError(
                        400, "BadRequest", f"memory_limit_below {below!r} is not a quantity"
                    )
                cluster.oom_below = _memory(below) if below else None
            elif path == "/_sandbox/deny":
                rule = _deny_rule(body)
                if body.get("allow"):
                    cluster.denied.discard(rule)
                else:
                    cluster.denied.add(rule)
            elif path == "/_sandbox/forbid":
                cluster.forbidden = {
                    (str(r.get("group", "")), str(r["resource"]), str(r["verb"]))
                    for r in body.get("rules", [])
                }
            elif path == "/_sandbox/requests":
                requests = list(cluster.requests)
                if body.get("clear"):
                    cluster.requests.clear()
                return {"requests": requests}
            else:
                raise ApiError(404, "NotFound", f"no sandbox hook {path}")
        return {"ok": True}

    def _review_body(self) -> Any:
        """The review as JSON (the Python client) or protobuf (kubectl's typed client)."""
        if "protobuf" not in (self.headers.get("Content-Type") or ""):
            return self._body()
        return review_from_protobuf(self._raw_body())

    def _access_review(self, body: Any) -> dict[str, Any]:
        """A SelfSubjectAccessReview: allowed unless ``/_sandbox/deny`` or ``/_sandbox/forbid``
        says otherwise (no RBAC here)."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise ApiError(400, "BadRequest", "a SelfSubjectAccessReview needs a spec")
        attrs = body["spec"].get("resourceAttributes") or {}
        resource = str(attrs.get("resource") or "")
        if attrs.get("subresource"):
            resource += f"/{attrs['subresource']}"
        key = (
            str(attrs.get("namespace") or ""),
            str(attrs.get("group") or ""),
            resource,
            str(attrs.get("verb") or ""),
        )
        denied = key in self.cluster.denied
        forbidden = key[1:] in self.cluster.forbidden
        status: dict[str, Any] = {"allowed": not (denied or forbidden)}
        if denied:
            status.update(denied=True, reason="denied by the sandbox's access hook")
        elif forbidden:
            status.update(denied=True, reason="forbidden by the sandbox (/_sandbox/forbid)")
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body["spec"],
            "status": status,
        }

    def _discovery(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/")
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                ],
            }
        groups: dict[str, list[str]] = {}
        for r in RESOURCES:
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.split("/")[2]
            if group in groups:
                vs = groups[group]
                return {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{group}/{vs[0]}", "version": vs[0]},
                }
        group_version = None
        if path == "/api/v1":
            group_version = ("", "v1")
        elif path.startswith("/apis/") and path.count("/") == 3:
            _, _, group, version = path.split("/")
            if version in groups.get(group, []):
                group_version = (group, version)
        if group_version is None:
            return None
        group, version = group_version
        listed = []
        for r in RESOURCES:
            if (r.group, r.version) != group_version:
                continue
            listed.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": VERBS,
                    "shortNames": list(r.short),
                }
            )
            for sub in r.subresources:
                kind = "Scale" if sub == "scale" else r.kind
                entry = {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update({"group": "autoscaling", "version": "v1"})
                listed.append(entry)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": listed,
        }

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource "
                f"({group or 'core'}/{version} {rest[0]})",
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(404, "NotFound", f"{resource.plural} has no subresource {sub}")
        return resource, namespace, name, sub

    def _resource(self, method: str, path: str, query: dict[str, str]) -> None:
        cluster = self.cluster
        resource, namespace, name, sub = self._route(path)
        if resource.plural == "selfsubjectaccessreviews":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", "selfsubjectaccessreviews: create only")
            self._send(201, self._access_review(self._review_body()))
            return
        verb = (
            ("watch" if query.get("watch") in {"true", "1"} else "get" if name else "list")
            if method == "GET"
            else METHOD_VERBS.get(method, method.lower())
        )
        plural = f"{resource.plural}/{sub}" if sub else resource.plural
        if (resource.group, plural, verb) in cluster.forbidden:
            where = f' in the namespace "{namespace}"' if namespace else ""
            raise ApiError(
                403,
                "Forbidden",
                f"{resource.plural}{'.' + resource.group if resource.group else ''} "
                f'"{name or ""}" is forbidden: User "{SANDBOX_USER}" cannot {verb} resource '
                f'"{plural}" in API group "{resource.group}"{where}',
            )
        if not resource.namespaced and namespace is None and name is None and method == "GET":
            pass
        if method == "GET" and name is None:
            if query.get("watch") in {"true", "1"}:
                self._watch(resource, namespace, query)
                return
            items, rv = cluster.list_objects(
                resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
            if "as=Table" in (self.headers.get("Accept") or ""):
                self._send(200, table(resource, items, rv, cluster.clock()))
                return
            self._send(
                200,
                {
                    "kind": f"{resource.kind}List",
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
            return
        if method == "GET":
            obj = cluster.get(resource, namespace, name or "")
            if not sub and "as=Table" in (self.headers.get("Accept") or ""):
                # `kubectl get deploy NAME` asks for one object as a Table too.
                rv = int(obj["metadata"].get("resourceVersion") or 0)
                self._send(200, table(resource, [obj], rv, cluster.clock()))
                return
            self._send(200, cluster.scale_of(resource, obj) if sub == "scale" else obj)
            return
        if method == "POST" and name is None:
            self._send(201, cluster.create(resource, namespace, self._body()))
            return
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        if method == "DELETE":
            obj = cluster.delete(resource, namespace, name)
            self._send(200, obj)
            return
        body = self._body()
        with cluster.lock:
            current = cluster.get(resource, namespace, name)
            if sub == "scale":
                scale = cluster.scale_of(resource, current)
                if method == "PATCH":
                    scale = self._apply_patch(scale, body)
                else:
                    scale = {
                        **scale,
                        "spec": body.get("spec", {}),
                        "metadata": {**scale["metadata"], **(body.get("metadata") or {})},
                    }
                replicas = (scale.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'Scale.autoscaling "{name}" is invalid: '
                        f"spec.replicas: Invalid value: {replicas!r}: must be greater "
                        "than or equal to 0",
                    )
                current["spec"]["replicas"] = replicas
                if method == "PUT":
                    current["metadata"]["resourceVersion"] = scale["metadata"].get(
                        "resourceVersion", current["metadata"]["resourceVersion"]
                    )
                updated = cluster.replace(resource, namespace, name, current)
                self._send(200, cluster.scale_of(resource, updated))
                return
            if method == "PATCH":
                new = self._apply_patch(current, body)
                if (
                    (body.get("metadata") or {}).get("resourceVersion")
                    if isinstance(body, dict)
                    else None
                ):
                    new["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
                else:
                    new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                self._send(200, cluster.replace(resource, namespace, name, new, subresource=sub))
                return
            if method == "PUT":
                self._send(200, cluster.replace(resource, namespace, name, body, subresource=sub))
                return
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _apply_patch(self, current: dict[str, Any], body: Any) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if kind == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            result = json_patch(current, body)
        elif kind == "application/merge-patch+json":
            result = merge_patch(current, body)
        elif kind == "application/strategic-merge-patch+json":
            result = strategic_merge_patch(current, body)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media "
                f"types include: application/json-patch+json, "
                f"application/merge-patch+json, "
                f"application/strategic-merge-patch+json (got {kind!r})",
            )
        if not isinstance(result, dict):
            raise PatchError("the patch did not produce an object")
        return result

    def _watch(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> None:
        since_text = query.get("resourceVersion")
        since = int(since_text) if since_text and since_text != "0" else None
        timeout = float(query.get("timeoutSeconds") or 300)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.cluster.watch(
                resource,
                namespace,
                since=since,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
                timeout=timeout,
            ):
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        self.close_connection = True


def kubeconfig(
    clusters: dict[str, str],
    *,
    token: str = "sandbox-token",  # noqa: S107 - a dummy
) -> dict[str, Any]:
    """A kubeconfig with one context per emulator: {context name: server URL}."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": url}} for name, url in clusters.items()],
        "users": [{"name": "sandbox", "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": "sandbox"}} for name in clusters
        ],
        "current-context": next(iter(clusters)),
    }


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def _memory(text: Any) -> float:
    """A memory quantity in bytes (no limit: infinite)."""
    if not text:
        return float("inf")
    value = str(text)
    for unit, factor in _MEMORY_UNITS.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def memory_quantity(text: str) -> float | None:
    """Bytes of a memory quantity (``3Gi``, ``512Mi``, ``1000000``), None if it is not one."""
    try:
        value = _memory(text)
    except ValueError:
        return None
    return value if text and 0 < value < float("inf") else None


def _age(created: str, now: float) -> str:
    """Age as kubectl prints it: 45s, 12m, 5h, 3d."""
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_status(pod: dict[str, Any]) -> tuple[int, int, str]:
    """(ready containers, restarts, STATUS) as the API server's pod printer derives them: the
    phase, or the reason a container is waiting or was terminated, or Terminating."""
    status = pod.get("status") or {}
    shown = status.get("reason") or status.get("phase") or "Unknown"
    ready = restarts = 0
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            shown = waiting["reason"]
        elif terminated.get("reason"):
            shown = terminated["reason"]
        elif terminated:
            shown = f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and "running" in state:
            ready += 1
    if pod["metadata"].get("deletionTimestamp"):
        shown = "Terminating"
    return ready, restarts, shown


def table(resource: Resource, items: list[dict[str, Any]], rv: int, now: float) -> dict[str, Any]:
    """The Table (meta.k8s.io/v1) kubectl asks for with ``get``, columns as the API server
    prints them: deployments with READY, UP-TO-DATE, AVAILABLE, AGE (and CONTAINERS, IMAGES,
    SELECTOR for ``-o wide``); pods with READY, STATUS, RESTARTS, AGE (and IP, NODE,
    NOMINATED NODE, READINESS GATES for ``-o wide``); any other kind NAME and AGE."""

    def column(name: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": name,
            "priority": priority,
        }

    if resource.kind == "Deployment":
        columns = [
            column("Name"),
            column("Ready"),
            column("Up-to-date", "integer"),
            column("Available", "integer"),
            column("Age"),
            column("Containers", priority=1),
            column("Images", priority=1),
            column("Selector", priority=1),
        ]

        def cells(obj: dict[str, Any]) -> list[Any]:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            return [
                obj["metadata"]["name"],
                f"{status.get('readyReplicas', 0) or 0}/{spec.get('replicas', 1)}",
                status.get("updatedReplicas", 0) or 0,
                status.get("availableReplicas", 0) or 0,
                _age(obj["metadata"].get("creationTimestamp", ""), now),
                ",".join(c.get("name", "") for c in containers),
                ",".join(c.get("image", "") for c in containers),
                ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            ]
    elif resource.kind == "Pod":
        columns = [
            column("Name"),
            column("Ready"),
            column("Status"),
            column("Restarts"),
            column("Age"),
            column("IP", priority=1),
            column("Node", priority=1),
            column("Nominated Node", priority=1),
            column("Readiness Gates", priority=1),
        ]

        def cells(obj: dict[str, Any]) -> list[Any]:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            ready, restarts, shown = _pod_status(obj)
            gates = spec.get("readinessGates") or []
            return [
                obj["metadata"]["name"],
                f"{ready}/{len(spec.get('containers') or [])}",
                shown,
                str(restarts),
                _age(obj["metadata"].get("creationTimestamp", ""), now),
                status.get("podIP") or "<none>",
                spec.get("nodeName") or "<none>",
                status.get("nominatedNodeName") or "<none>",
                f"0/{len(gates)}" if gates else "<none>",
            ]
    else:
        columns = [column("Name"), column("Age")]

        def cells(obj: dict[str, Any]) -> list[Any]:
            return [
                obj["metadata"]["name"],
                _age(obj["metadata"].get("creationTimestamp", ""), now),
            ]

    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": columns,
        "rows": [{"cells": cells(obj), "object": obj} for obj in items],
    }


def _waiting(image: str, broken: bool, missing: str | None, oom: bool) -> dict[str, str]:
    """A not-ready container's ``state.waiting``, in the kubelet's words."""
    if missing is not None:
        return {
            "reason": "ErrImagePull",
            "message": "rpc error: code = NotFound desc = failed to pull and unpack image "
            f'"{image}": failed to resolve reference "{image}": {image}: not found',
        }
    if broken:
        return {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
    return {"reason": "CrashLoopBackOff" if oom else "ContainerCreating"}
