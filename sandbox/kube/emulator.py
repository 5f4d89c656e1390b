"""An HTTP server that behaves like the Kubernetes API server for the subset runbook-bot uses.

Split by concern: ``resources.py`` (the catalog), ``cluster.py`` (state and controllers),
``http.py`` (the API server's routes and hooks), ``tables.py`` (kubeconfig, kubectl's tables);
this module is their public face.

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

from sandbox.kube.cluster import Cluster
from sandbox.kube.http import KubeEmulator, review_from_protobuf
from sandbox.kube.resources import (
    BY_PATH,
    RESOURCES,
    SANDBOX_USER,
    ApiError,
    Resource,
    now_iso,
    template_hash,
)
from sandbox.kube.tables import kubeconfig, memory_quantity, table

__all__ = [
    "BY_PATH",
    "RESOURCES",
    "SANDBOX_USER",
    "ApiError",
    "Cluster",
    "KubeEmulator",
    "Resource",
    "kubeconfig",
    "memory_quantity",
    "now_iso",
    "review_from_protobuf",
    "table",
    "template_hash",
]
