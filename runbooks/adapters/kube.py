"""Kubernetes adapter: the official ``kubernetes`` client, in the runbooks' words.

- One API client per kubeconfig context (environment + region), or in-cluster configuration.
- ``undo`` follows kubectl's rollback algorithm (polymorphichelpers/rollback.go): target is
  ``--to-revision`` or the second-highest revision; refuse when paused; skip when the template
  already matches (ignoring ``pod-template-hash``); one JSON patch replacing
  ``/spec/template`` and ``/metadata/annotations``.
- ``wait_rollout`` watches the deployment with ``fieldSelector=metadata.name=...`` and applies
  ``kubectl rollout status``'s rules; it never sleeps in a loop.
- HTTP 409 is retried with a fresh read; other API errors become InfrastructureError naming the
  object and the reason.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from runbooks.adapters.kube_contexts import CONTEXT_HINT, IN_CLUSTER
from runbooks.engine.errors import Refused
from runbooks.interfaces import (
    SUSPENDED_ANNOTATION,
    DeploymentState,
    GitOpsApp,
    GitOpsOwner,
    HpaState,
    InfrastructureError,
    Revision,
    RolloutFailed,
)

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
#: Deployment annotations kubectl keeps on undo instead of copying them from the ReplicaSet.
KEEP_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
)
CONFLICT_RETRIES = 5
#: A SelfSubjectAccessReview answers at once; a cluster that does not is a finding.
REVIEW_TIMEOUT_S = 10
#: Seconds any one GitOps object call may take (reads, patches, access reviews).
GITOPS_TIMEOUT_S = 10.0
#: (group, version, plural) of each owner's object.
OWNER_OBJECTS = {
    "argo": ("argoproj.io", "v1alpha1", "applications"),
    "flux": ("kustomize.toolkit.fluxcd.io", "v1", "kustomizations"),
    "flux-helm": ("helm.toolkit.fluxcd.io", "v2", "helmreleases"),
}
GIT_REPOSITORIES = ("source.toolkit.fluxcd.io", "v1", "gitrepositories")
#: Argo CD's default ``timeout.reconciliation``: it polls Git every 3 minutes.
ARGO_DEFAULT_INTERVAL = "every 3m (Argo CD's default polling)"
#: Where Argo CD declares how often it polls (one setting per installation: Argo has no
#: per-Application interval): ``timeout.reconciliation`` in this ConfigMap of its namespace.
ARGO_CONFIGMAP = "argocd-cm"
ARGO_RECONCILIATION = "timeout.reconciliation"
T = TypeVar("T")


def make_api_client(*, context: str, kubeconfig: str | None) -> client.ApiClient:
    """An ApiClient for a kubeconfig context, or the in-cluster one for ``in-cluster``."""
    try:
        if context == IN_CLUSTER:
            configuration = client.Configuration()
            kube_config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        if kubeconfig is None:
            raise kube_config.ConfigException(
                "no kubeconfig (KUBECONFIG is not set and ~/.kube/config does not exist)"
            )
        api: client.ApiClient = kube_config.new_client_from_config(
            config_file=kubeconfig, context=context
        )
        return api
    except (kube_config.ConfigException, OSError) as exc:
        raise InfrastructureError(
            f"cannot configure Kubernetes context {context!r} from {kubeconfig or 'in-cluster'}: "
            f"{exc}",
            hint=CONTEXT_HINT,
        ) from None


#: Container states a rollout does not recover from by waiting.
FATAL_WAITING = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "InvalidImageName"})
#: Waiting reasons that may clear by themselves (a registry hiccup); named when a rollout's
#: deadline passes, and fatal once they last ``image_pull_grace`` seconds.
SLOW_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull"})
#: What the kubelet's pull error says when retrying cannot help: the registry has no such image
#: or tag, or refuses this node. Such a pull fails the rollout at once.
PERMANENT_PULL = re.compile(
    r"not found|manifest unknown|repository does not exist|pull access denied|unauthorized",
    re.IGNORECASE,
)
#: How long an image pull may keep failing before a rollout stops waiting for it: the kubelet
#: retries after 10 s, 20 s, 40 s (doubling to 5 min), so one minute is three tries.
IMAGE_PULL_GRACE_S = 60.0


def warm() -> None:
    """Load what the client imports lazily on first use (its API classes and the models the
    adapter reads), so the first plan does not import them while requests wait. Touches no
    cluster."""
    for name in (
        "ApiClient",
        "AppsV1Api",
        "CoreV1Api",
        "AutoscalingV2Api",
        "V1Deployment",
        "V1ReplicaSet",
        "V1Pod",
        "V1Endpoints",
        "V1Node",
        "V2HorizontalPodAutoscaler",
    ):
        getattr(client, name)


class KubeAdapter:
    """Operations on one cluster."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        region: str,
        label: str,
        image_pull_grace: float = IMAGE_PULL_GRACE_S,
    ) -> None:
        self.region = region
        self.label = label  # e.g. "production/us-east-1", used in messages
        self.image_pull_grace = image_pull_grace
        self._api = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.authorization = client.AuthorizationV1Api(api_client)

    # error handling ---------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ApiException as exc:
            raise self._error(what, exc) from None
        except OSError as exc:  # connection refused, DNS, TLS
            raise InfrastructureError(
                f"cannot reach Kubernetes ({self.label}) to {what}: {exc}",
                hint="is the cluster (or `invoke sandbox.up`) running?",
            ) from None

    def _error(self, what: str, exc: ApiException) -> InfrastructureError:
        reason = exc.reason or ""
        try:
            body = json.loads(exc.body or "{}")
            reason = body.get("message") or reason
        except (TypeError, ValueError):
            pass
        return InfrastructureError(
            f"Kubernetes ({self.label}) refused to {what}: HTTP {exc.status} {reason}"
        )

    def _retry_conflicts(self, what: str, attempt: Callable[[], T]) -> T:
        """Run a read-modify-write; on 409 read again and retry."""
        for _ in range(CONFLICT_RETRIES):
            try:
                return attempt()
            except ApiException as exc:
                if exc.status != 409:
                    raise self._error(what, exc) from None
        raise InfrastructureError(
            f"Kubernetes ({self.label}): {what} kept conflicting with "
            f"other writers ({CONFLICT_RETRIES} attempts)"
        )

    # reads ------------------------------------------------------------------------------
    def _raw_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        obj = self._call(
            f"read deployment {namespace}/{name}",
            lambda: self.apps.read_namespaced_deployment(name, namespace),
        )
        return dict(self._api.sanitize_for_serialization(obj))

    def deployment(self, namespace: str, name: str) -> DeploymentState:
        return _state(self._raw_deployment(namespace, name))

    def revisions(self, namespace: str, name: str) -> list[Revision]:
        deploy = self._raw_deployment(namespace, name)
        return _revisions(deploy, self._replicasets(namespace, deploy))

    def _replicasets(self, namespace: str, deploy: dict[str, Any]) -> list[dict[str, Any]]:
        labels = (deploy["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        listed = self._call(
            f"list replica sets of {namespace}/{deploy['metadata']['name']}",
            lambda: self.apps.list_namespaced_replica_set(namespace, label_selector=selector),
        )
        uid = deploy["metadata"]["uid"]
        items = [self._api.sanitize_for_serialization(rs) for rs in listed.items]
        return [
            rs
            for rs in items
            if any(
                ref.get("uid") == uid and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences", [])
            )
        ]

    # rollback ---------------------------------------------------------------------------
    def undo(self, namespace: str, name: str, to_revision: int) -> bool:
        def attempt() -> bool:
            deploy = self.apps.read_namespaced_deployment(name, namespace)
            raw = self._api.sanitize_for_serialization(deploy)
            if raw["spec"].get("paused"):
                raise Refused(
                    f"deployment {namespace}/{name} ({self.label}) is paused; resume "
                    "the rollout (kubectl rollout resume) before rolling back"
                )
            by_number = {r.number: r for r in _revisions(raw, self._replicasets(namespace, raw))}
            if to_revision not in by_number:
                raise Refused(
                    f"revision {to_revision} of {namespace}/{name} ({self.label}) "
                    f"does not exist; known: {', '.join(map(str, sorted(by_number)))}"
                )
            target = by_number[to_revision]
            if _strip_hash(raw["spec"]["template"]) == target.template:
                return False
            annotations = {
                k: v
                for k, v in (raw["metadata"].get("annotations") or {}).items()
                if k in KEEP_ANNOTATIONS
            }
            rs_annotations = _rs_annotations(raw, self._replicasets(namespace, raw), to_revision)
            annotations.update(
                {k: v for k, v in rs_annotations.items() if k not in KEEP_ANNOTATIONS}
            )
            self.apps.patch_namespaced_deployment(
                name,
                namespace,
                [
                    {"op": "replace", "path": "/spec/template", "value": target.template},
                    {"op": "replace", "path": "/metadata/annotations", "value": annotations},
                ],
            )
            return True

        return self._retry_conflicts(f"roll back deployment {namespace}/{name}", attempt)

    def wait_rollout(
        self, namespace: str, name: str, *, timeout: float, check: Callable[[], None]
    ) -> DeploymentState:
        try:
            return self._wait_rollout(namespace, name, timeout=timeout, check=check)
        except _DeadlinePassed as exc:
            # Say why the pods never became ready (an image that cannot be pulled, no node
            # with room) rather than only that they did not.
            waiting = self._stuck_pod(namespace, name, transient=True)
            raise RolloutFailed(f"{exc}; {waiting}" if waiting else str(exc)) from None

    def _wait_rollout(
        self, namespace: str, name: str, *, timeout: float, check: Callable[[], None]
    ) -> DeploymentState:
        deadline = time.monotonic() + timeout
        state = self.deployment(namespace, name)
        resource_version = None
        pulling_since: float | None = None
        while True:
            check()
            done, message = _rollout_done(state)
            if done:
                return state
            pulling: list[str] = []
            stuck = self._stuck_pod(namespace, name, pulling=pulling)
            if stuck is None and pulling:
                now = time.monotonic()
                pulling_since = now if pulling_since is None else pulling_since
                if now - pulling_since >= self.image_pull_grace:
                    stuck = (
                        f"{pulling[0]}, still after {now - pulling_since:.0f}s (an image pull "
                        f"may keep failing for {self.image_pull_grace:g}s)"
                    )
            elif not pulling:
                pulling_since = None
            if stuck is not None:
                raise RolloutFailed(
                    f"rollout of {namespace}/{name} ({self.label}) cannot finish: {stuck}; "
                    "not waiting for the progress deadline"
                )
            left = deadline - time.monotonic()
            if left <= 0:
                raise _DeadlinePassed(
                    f"rollout of {namespace}/{name} ({self.label}) did not "
                    f"finish within {timeout:g}s: {message}"
                )
            # A watch window ends by the deadline, and by the end of a pull's grace when
            # one is counting, so a stuck pull is named when its grace ends, not up to a
            # window later.
            window = min(int(left) + 1, 5)
            if pulling_since is not None:
                grace_left = pulling_since + self.image_pull_grace - time.monotonic()
                window = min(window, math.ceil(grace_left))
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.apps.list_namespaced_deployment,
                    namespace,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version or None,
                    timeout_seconds=max(1, window),
                ):
                    raw = self._api.sanitize_for_serialization(event["object"])
                    resource_version = raw["metadata"]["resourceVersion"]
                    state = _state(raw)
                    check()
                    if _rollout_done(state)[0]:
                        stream.stop()
                        break
            except ApiException as exc:
                if exc.status == 410:  # expired resourceVersion: list again
                    resource_version = None
                    state = self.deployment(namespace, name)
                    continue
                raise self._error(f"watch deployment {namespace}/{name}", exc) from None
            else:
                if not _rollout_done(state)[0]:
                    state = self.deployment(namespace, name)

    def _stuck_pod(
        self,
        namespace: str,
        name: str,
        *,
        transient: bool = False,
        pulling: list[str] | None = None,
    ) -> str | None:
        """A pod of the deployment that cannot become ready by waiting, in words, or None.

        OOMKilled and CrashLoopBackOff (and a container config that cannot be created) do not
        heal within a progress deadline; waiting ten minutes and then blaming the rollout
        hides the cause. Neither does an image the registry says it does not have (or will
        not give: ``PERMANENT_PULL``). Other image pull errors and Pending can clear (a
        registry hiccup, a node scaling up): image pull errors are added to ``pulling`` (the
        caller gives them ``image_pull_grace``), Pending is left to the deadline; with
        ``transient`` (the deadline has passed) both are named, so the failure says why the
        pods never became ready.
        """
        raw = self._raw_deployment(namespace, name)
        # Only the pods of the ReplicaSet being rolled out count: pods of the one a rollout (or
        # an undo) moves away from may still be crashing while they terminate, and blaming
        # them would call a good rollout (or a compensation that worked) failed.
        template = _strip_hash(raw["spec"]["template"])
        target = next(
            (
                rs
                for rs in self._replicasets(namespace, raw)
                if _strip_hash(rs["spec"]["template"]) == template
            ),
            None,
        )
        if target is None:
            return None  # the controller has not made it yet: none of its pods can be stuck
        labels = (target["spec"].get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        pods = self._call(
            f"list pods of {namespace}/{name}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=selector),
        )
        for pod in pods.items or []:
            pod_name = pod.metadata.name if pod.metadata else "?"
            for status in (pod.status.container_statuses if pod.status else None) or []:
                last = status.last_state.terminated if status.last_state else None
                waiting = status.state.waiting if status.state else None
                if last is not None and last.reason == "OOMKilled":
                    return (
                        f"pod {pod_name}: container {status.name} was OOMKilled (out "
                        f"of memory: its memory limit is too low), restarted "
                        f"{status.restart_count} time(s)"
                    )
                if waiting is not None and waiting.reason in FATAL_WAITING:
                    return f"pod {pod_name}: container {status.name} {waiting.reason}"
                if waiting is not None and waiting.reason in SLOW_WAITING:
                    detail = f" ({waiting.message})" if waiting.message else ""
                    words = f"pod {pod_name}: container {status.name} {waiting.reason}{detail}"
                    if transient or PERMANENT_PULL.search(waiting.message or ""):
                        return words
                    if pulling is not None:
                        pulling.append(words)
            if transient and pod.status is not None:
                for condition in pod.status.conditions or []:
                    if condition.type == "PodScheduled" and condition.status == "False":
                        why = condition.message or condition.reason or "not scheduled"
                        return f"pod {pod_name}: Pending, not scheduled: {why}"
        return None

    def set_container_resources(
        self,
        namespace: str,
        name: str,
        container: str,
        resources: dict[str, dict[str, str | None]],
        *,
        cause: str,
    ) -> None:
        body = {
            "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
            "spec": {
                "template": {"spec": {"containers": [{"name": container, "resources": resources}]}}
            },
        }
        self._retry_conflicts(
            f"set resources of {namespace}/{name} container {container}",
            lambda: self.apps.patch_namespaced_deployment(name, namespace, body),
        )

    # scaling ----------------------------------------------------------------------------
    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self._retry_conflicts(
            f"scale deployment {namespace}/{name} to {replicas}",
            lambda: self.apps.patch_namespaced_deployment_scale(
                name, namespace, {"spec": {"replicas": replicas}}
            ),
        )

    def hpa_for(self, namespace: str, deployment: str) -> HpaState | None:
        listed = self._call(
            f"list autoscalers in {namespace}",
            lambda: self.autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace),
        )
        for item in listed.items:
            raw = self._api.sanitize_for_serialization(item)
            ref = raw["spec"].get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name") == deployment:
                return _hpa_state(raw)
        return None

    def set_hpa_bounds(self, namespace: str, name: str, minimum: int, maximum: int) -> None:
        self._retry_conflicts(
            f"set autoscaler {namespace}/{name} to {minimum}-{maximum}",
            lambda: self.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
                name, namespace, {"spec": {"minReplicas": minimum, "maxReplicas": maximum}}
            ),
        )

    # access -----------------------------------------------------------------------------
    def can_i(self, namespace: str, group: str, resource: str, verb: str) -> tuple[bool, str]:
        plural, _, sub = resource.partition("/")
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    group=group,
                    resource=plural,
                    subresource=sub or None,
                    verb=verb,
                )
            )
        )
        answer = self._call(
            f"review access to {verb} {resource} in {namespace}",
            lambda: self.authorization.create_self_subject_access_review(
                review, _request_timeout=REVIEW_TIMEOUT_S
            ),
        )
        status = answer.status
        if status is None:
            return False, "the access review came back without a status"
        return bool(status.allowed), str(status.reason or status.evaluation_error or "")

    # GitOps owners ----------------------------------------------------------------------
    def deployment_marks(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        meta = self._raw_deployment(namespace, name).get("metadata") or {}
        return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})

    def _custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self._api)

    def _get_object(
        self, ids: tuple[str, str, str], namespace: str, name: str
    ) -> dict[str, Any] | None:
        group, version, plural = ids
        try:
            found = self._custom().get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=GITOPS_TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status == 404:
                return None  # no such object, or the kind is not installed
            raise self._error(f"read {plural}.{group} {namespace}/{name}", exc) from None
        except OSError as exc:
            raise InfrastructureError(
                f"cannot reach Kubernetes ({self.label}) to read {plural} {namespace}/{name}: {exc}"
            ) from None
        return cast(dict[str, Any], found)

    def gitops_app(self, owner: GitOpsOwner) -> GitOpsApp | None:
        obj = self._get_object(OWNER_OBJECTS[owner.tool], owner.namespace, owner.name)
        if obj is None:
            return None
        return self._app(owner, obj)

    def _app(self, owner: GitOpsOwner, obj: dict[str, Any]) -> GitOpsApp:
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        suspended = ((obj.get("metadata") or {}).get("annotations") or {}).get(SUSPENDED_ANNOTATION)
        if owner.tool == "argo":
            source = spec.get("source") or {}
            policy = (spec.get("syncPolicy") or {}).get("automated")
            revision = (status.get("sync") or {}).get("revision")
            synced = (status.get("sync") or {}).get("status") == "Synced"
            return GitOpsApp(
                owner=owner,
                repo_url=str(source.get("repoURL") or ""),
                branch=str(source.get("targetRevision") or "HEAD"),
                path=str(source.get("path") or "."),
                automated=policy is not None,
                automated_policy=dict(policy) if policy is not None else None,
                interval=self._argo_interval(owner.namespace),
                source_revision=revision,
                applied_revision=revision if synced else None,
                suspended=suspended,
            )
        ref = spec.get("sourceRef") or {}
        source = (
            self._get_object(
                GIT_REPOSITORIES, ref.get("namespace") or owner.namespace, ref.get("name", "")
            )
            # A HelmRelease's chart source is under spec.chart: not read (kit.gitops.unfollowed).
            if owner.tool == "flux" and ref.get("kind", "GitRepository") == "GitRepository"
            else None
        ) or {}
        artifact = ((source.get("status") or {}).get("artifact") or {}).get("revision")
        return GitOpsApp(
            owner=owner,
            repo_url=str((source.get("spec") or {}).get("url") or ""),
            branch=str(((source.get("spec") or {}).get("ref") or {}).get("branch") or "main"),
            path=str(spec.get("path") or "."),
            automated=not spec.get("suspend", False),
            automated_policy=None,
            interval=f"every {spec.get('interval', '?')}",
            source_revision=_commit(artifact),
            applied_revision=_commit(status.get("lastAppliedRevision")),
            suspended=suspended,
        )

    def _argo_interval(self, namespace: str) -> str:
        """How often Argo CD polls, as its installation declares it (``timeout.reconciliation``
        in ``argocd-cm``), or its default when it declares nothing or the bot may not read it."""
        try:
            found = self.core.read_namespaced_config_map(
                ARGO_CONFIGMAP, namespace, _request_timeout=GITOPS_TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status in {403, 404}:
                return ARGO_DEFAULT_INTERVAL  # not Argo's namespace, or not granted
            raise self._error(f"read configmap {namespace}/{ARGO_CONFIGMAP}", exc) from None
        except OSError as exc:
            raise InfrastructureError(
                f"cannot reach Kubernetes ({self.label}) to read configmap "
                f"{namespace}/{ARGO_CONFIGMAP}: {exc}"
            ) from None
        declared = (found.data or {}).get(ARGO_RECONCILIATION, "").strip()
        if not declared:
            return ARGO_DEFAULT_INTERVAL
        return f"every {declared} (Argo CD's {ARGO_RECONCILIATION})"

    def gitops_apps(self) -> list[GitOpsApp]:
        found = []
        for tool in ("argo", "flux"):
            group, version, plural = OWNER_OBJECTS[tool]
            try:
                listed = self._custom().list_cluster_custom_object(
                    group, version, plural, _request_timeout=GITOPS_TIMEOUT_S
                )
            except ApiException as exc:
                if exc.status in {403, 404}:
                    continue  # the tool is not installed here, or the role may not list it
                raise self._error(f"list {plural}.{group}", exc) from None
            for obj in cast(dict[str, Any], listed).get("items") or []:
                meta = obj.get("metadata") or {}
                owner = GitOpsOwner(
                    "argo" if tool == "argo" else "flux",
                    meta.get("name", ""),
                    meta.get("namespace", ""),
                )
                found.append(self._app(owner, obj))
        return found

    def may_suspend(self, owner: GitOpsOwner) -> bool:
        group, _version, plural = OWNER_OBJECTS[owner.tool]
        # Patch the object (suspend, resume) and list its kind cluster-wide: the watch that
        # gives sync back (or pages at the limit) finds suspended applications by listing.
        return self._may(group, plural, "patch", owner.namespace, owner.name) and self._may(
            group, plural, "list", None, None
        )

    def _may(
        self, group: str, plural: str, verb: str, namespace: str | None, name: str | None
    ) -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    group=group, resource=plural, verb=verb, namespace=namespace, name=name
                )
            )
        )
        where = f"{namespace}/{name}" if name else "in all namespaces"
        answer = self._call(
            f"ask whether it may {verb} {plural}.{group} {where}",
            lambda: client.AuthorizationV1Api(self._api).create_self_subject_access_review(
                review, _request_timeout=GITOPS_TIMEOUT_S
            ),
        )
        return bool(answer.status and answer.status.allowed)

    def _patch_owner(self, owner: GitOpsOwner, body: dict[str, Any], what: str) -> None:
        group, version, plural = OWNER_OBJECTS[owner.tool]
        self._call(
            f"{what} {plural}.{group} {owner.namespace}/{owner.name}",
            lambda: self._custom().patch_namespaced_custom_object(
                group,
                version,
                owner.namespace,
                plural,
                owner.name,
                body,
                _request_timeout=GITOPS_TIMEOUT_S,
            ),
        )

    def suspend_gitops(self, owner: GitOpsOwner, annotation: str) -> None:
        spec: dict[str, Any] = (
            {"syncPolicy": {"automated": None}} if owner.tool == "argo" else {"suspend": True}
        )
        body = {"metadata": {"annotations": {SUSPENDED_ANNOTATION: annotation}}, "spec": spec}
        self._patch_owner(owner, body, "suspend automated sync of")

    def resume_gitops(self, owner: GitOpsOwner, automated: dict[str, Any] | None) -> None:
        spec: dict[str, Any] = (
            {"syncPolicy": {"automated": automated or {}}}
            if owner.tool == "argo"
            else {"suspend": False}
        )
        body = {"metadata": {"annotations": {SUSPENDED_ANNOTATION: None}}, "spec": spec}
        self._patch_owner(owner, body, "resume automated sync of")

    # services ---------------------------------------------------------------------------
    def service_selector(self, namespace: str, service: str) -> dict[str, str]:
        obj = self._call(
            f"read service {namespace}/{service}",
            lambda: self.core.read_namespaced_service(service, namespace),
        )
        return dict((obj.spec.selector if obj.spec else None) or {})

    def set_service_selector(self, namespace: str, service: str, selector: dict[str, str]) -> None:
        def attempt() -> None:
            current = self.core.read_namespaced_service(service, namespace)
            if current.spec is None:
                raise InfrastructureError(f"service {namespace}/{service} has no spec")
            current.spec.selector = selector
            self.core.replace_namespaced_service(service, namespace, current)

        self._retry_conflicts(f"switch service {namespace}/{service}", attempt)

    def endpoints(self, namespace: str, service: str) -> tuple[list[str], list[str]]:
        obj = self._call(
            f"read endpoints {namespace}/{service}",
            lambda: self.core.read_namespaced_endpoints(service, namespace),
        )
        ready: list[str] = []
        not_ready: list[str] = []
        for subset in obj.subsets or []:
            ready += [a.target_ref.name or "" for a in subset.addresses or [] if a.target_ref]
            not_ready += [
                a.target_ref.name or "" for a in subset.not_ready_addresses or [] if a.target_ref
            ]
        return sorted(ready), sorted(not_ready)


# pure helpers (unit-tested without a server) -------------------------------------------------


def _commit(revision: Any) -> str | None:
    """The commit id of a Flux revision (``main@sha1:<id>``, or a bare id)."""
    if not revision:
        return None
    return str(revision).rsplit(":", 1)[-1]


def _strip_hash(template: dict[str, Any]) -> dict[str, Any]:
    clean = copy.deepcopy(template)
    labels = (clean.get("metadata") or {}).get("labels")
    if labels:
        labels.pop("pod-template-hash", None)
    return clean


def _images(template: dict[str, Any]) -> dict[str, str]:
    return {
        c["name"]: c.get("image", "") for c in (template.get("spec") or {}).get("containers", [])
    }


def _revisions(deploy: dict[str, Any], replicasets: list[dict[str, Any]]) -> list[Revision]:
    out = []
    for rs in replicasets:
        annotations = rs["metadata"].get("annotations") or {}
        number = int(annotations.get(REVISION, "0") or 0)
        if number <= 0:
            continue
        template = _strip_hash(rs["spec"]["template"])
        out.append(
            Revision(
                number=number,
                replicaset=rs["metadata"]["name"],
                images=_images(template),
                change_cause=annotations.get("kubernetes.io/change-cause", ""),
                template=template,
                replicas=rs["spec"].get("replicas", 0),
                earlier=tuple(
                    int(n)
                    for n in annotations.get(REVISION_HISTORY, "").split(",")
                    if n.strip().isdigit()
                ),
            )
        )
    return sorted(out, key=lambda r: r.number)


def _rs_annotations(
    deploy: dict[str, Any], replicasets: list[dict[str, Any]], number: int
) -> dict[str, str]:
    for rs in replicasets:
        annotations = rs["metadata"].get("annotations") or {}
        if annotations.get(REVISION) == str(number):
            return dict(annotations)
    return {}


def _state(raw: dict[str, Any]) -> DeploymentState:
    spec, status, meta = raw["spec"], raw.get("status") or {}, raw["metadata"]
    return DeploymentState(
        name=meta["name"],
        namespace=meta["namespace"],
        revision=int((meta.get("annotations") or {}).get(REVISION, "0") or 0),
        images=_images(spec["template"]),
        replicas=spec.get("replicas", 1),
        ready=status.get("readyReplicas", 0) or 0,
        updated=status.get("updatedReplicas", 0) or 0,
        available=status.get("availableReplicas", 0) or 0,
        generation=meta.get("generation", 0) or 0,
        observed_generation=status.get("observedGeneration", 0) or 0,
        paused=bool(spec.get("paused")),
        template=_strip_hash(spec["template"]),
        labels=dict(meta.get("labels") or {}),
        conditions={
            c["type"]: (c["status"], c.get("reason", "")) for c in status.get("conditions") or []
        },
    )


class _DeadlinePassed(RolloutFailed):
    """The rollout's time is up; ``wait_rollout`` adds what the pods are waiting for."""


def _rollout_done(state: DeploymentState) -> tuple[bool, str]:
    """kubectl rollout status, in order: generation, deadline, updated, old, available."""
    if state.generation > state.observed_generation:
        return False, "waiting for the deployment spec update to be observed"
    progressing = state.conditions.get("Progressing")
    if progressing and progressing[1] == "ProgressDeadlineExceeded":
        if state.updated > state.replicas:  # scaling down: nothing new has to start
            detail = (
                f"{state.replicas} replicas wanted; {state.updated - state.replicas} still stopping"
            )
        else:
            detail = (
                f"{state.updated} of {state.replicas} updated replicas, {state.available} "
                f"available (image {state.image_text()} is not becoming ready)"
            )
        raise _DeadlinePassed(
            f"deployment {state.namespace}/{state.name} exceeded its progress deadline: {detail}"
        )
    if state.updated < state.replicas:
        return False, f"{state.updated} of {state.replicas} new replicas updated"
    if state.ready > state.updated or state.available < state.updated:
        return False, f"{state.available} of {state.updated} updated replicas available"
    return True, "successfully rolled out"


def _hpa_state(raw: dict[str, Any]) -> HpaState:
    spec, status = raw["spec"], raw.get("status") or {}
    targets: dict[str, int | None] = {"cpu": None, "memory": None}
    for metric in spec.get("metrics") or []:
        resource = metric.get("resource") or {}
        if resource.get("name") in targets:
            targets[resource["name"]] = (resource.get("target") or {}).get("averageUtilization")
    return HpaState(
        name=raw["metadata"]["name"],
        min_replicas=spec.get("minReplicas", 1),
        max_replicas=spec["maxReplicas"],
        current=status.get("currentReplicas", 0) or 0,
        desired=status.get("desiredReplicas", 0) or 0,
        cpu_target=targets["cpu"],
        memory_target=targets["memory"],
    )
