"""GitOps in the sandbox: a bare Git repository per application and a small reconciler.

``seed_gitops`` gives an application (Argo CD ``Application`` or Flux ``Kustomization`` with its
``GitRepository``) a bare repository under the sandbox's state directory, with one commit per
release of the seeded history (``deployment.yaml``, the deployment's manifest; real ``git``),
marks the live deployment as the tool marks what it applies (Argo's tracking label and
annotation, Flux's ``kustomize.toolkit.fluxcd.io/*`` labels) and creates the objects.

``GitOpsReconciler`` plays both controllers, every ``interval`` of its injected clock:

- **Refresh** (always, as Argo's comparison and Flux's source-controller do while a
  Kustomization is suspended): the tracked branch's head becomes Argo's
  ``status.sync.revision`` (``Synced`` or ``OutOfSync``) and the GitRepository's
  ``status.artifact.revision`` (``main@sha1:<sha>``).
- **Apply** only while automated sync is on (Argo: ``spec.syncPolicy.automated`` present;
  Flux: ``spec.suspend`` not true): the containers' images of the Deployments the path renders
  (its YAML files, or ``kubectl kustomize`` where it holds a ``kustomization.yaml``) replace
  the live ones when they differ; Flux's ``status.lastAppliedRevision`` records it.

Not emulated: other kinds and fields than the Deployment's images (no prune, no health
assessment, no hooks or sync waves), Helm charts (a chart's path renders nothing here),
webhooks (only the interval), Argo's operation state and retry, Flux's dependsOn and
health checks, and authentication to the repository (a local path).
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from sandbox.kube.emulator import BY_PATH, ApiError, Cluster, now_iso
from sandbox.kube.seed import REGISTRY, RELEASES, _deployment

APPLICATIONS = BY_PATH["argoproj.io", "v1alpha1", "applications"]
KUSTOMIZATIONS = BY_PATH["kustomize.toolkit.fluxcd.io", "v1", "kustomizations"]
GIT_REPOSITORIES = BY_PATH["source.toolkit.fluxcd.io", "v1", "gitrepositories"]
CONFIGMAPS = BY_PATH["", "v1", "configmaps"]
DEPLOYMENTS = BY_PATH["apps", "v1", "deployments"]
NAMESPACES = BY_PATH["", "v1", "namespaces"]
ARGO_NAMESPACE = "argocd"
FLUX_NAMESPACE = "flux-system"
TRACKED = "main"
MANIFEST = "deployment.yaml"
GIT_TIMEOUT_S = 30.0
#: Seconds of its clock between two reconciliations of one application; the seeded objects
#: declare it (Argo CD's ``timeout.reconciliation`` in ``argocd-cm``, Flux's ``spec.interval``).
RECONCILE_INTERVAL_S = 3.0
#: Who commits the seeded history (and merges, in tests).
AUTHOR = ("sandbox", "sandbox@example.com")


class GitFailed(RuntimeError):
    """A git command failed; the message carries its stderr."""


def git(*args: str, cwd: Path | None = None, timeout: float = GIT_TIMEOUT_S) -> str:
    """Run ``git`` (never a prompt, never the user's configuration) and return its stdout."""
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": AUTHOR[0],
        "GIT_AUTHOR_EMAIL": AUTHOR[1],
        "GIT_COMMITTER_NAME": AUTHOR[0],
        "GIT_COMMITTER_EMAIL": AUTHOR[1],
    }
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise GitFailed(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class GitOpsApp:
    """One application: which tool, its object's name, the deployment it owns, its repo."""

    tool: Literal["argo", "flux"]
    name: str
    namespace: str
    deployment: str
    repo: Path

    @property
    def url(self) -> str:
        return self.repo.as_uri()


def manifest(namespace: str, deployment: str, image: str, cause: str) -> str:
    """The deployment's manifest as the application's repository holds it."""
    doc = _deployment(deployment, {"app": "api"}, image, 3, cause)
    doc = {"apiVersion": "apps/v1", "kind": "Deployment", **doc}
    doc["metadata"]["namespace"] = namespace
    return yaml.safe_dump(doc, sort_keys=False)


#: How a repository declares the image (``create_repository``'s layouts): ``plain``, the
#: manifest with the image as a value; ``kustomize``, a base manifest without a tag and a
#: ``kustomization.yaml`` whose ``images:`` entry sets ``newTag``; ``helm``, a chart whose
#: ``values.yaml`` sets ``image.repository`` and ``image.tag``; ``appversion``, a chart whose
#: tag comes from ``Chart.yaml``'s ``appVersion`` (``values.yaml`` leaves ``tag`` empty):
#: somewhere the bot does not rewrite.
Layout = Literal["plain", "kustomize", "helm", "appversion"]

_HELM_TEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {deployment}
  namespace: {namespace}
spec:
  replicas: 3
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api
    spec:
      containers:
        - name: api
          image: {image}
"""
_HELM_IMAGE = '"{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"'


def _release_files(
    layout: Layout, namespace: str, deployment: str, version: str, cause: str
) -> dict[str, str]:
    """The files of one release in a layout (relative path → text)."""
    image = f"{REGISTRY}/app-api"
    if layout == "plain":
        return {MANIFEST: manifest(namespace, deployment, f"{image}:{version}", cause)}
    if layout == "kustomize":
        return {
            MANIFEST: manifest(namespace, deployment, image, "kustomize base"),
            "kustomization.yaml": (
                "apiVersion: kustomize.config.k8s.io/v1beta1\n"
                "kind: Kustomization\n"
                "resources:\n"
                f"  - {MANIFEST}\n"
                "images:\n"
                "  # the release this environment runs\n"
                f"  - name: {image}\n"
                f"    newTag: {version}\n"
            ),
        }
    tag = "" if layout == "appversion" else version
    app_version = version if layout == "appversion" else "1.0.0"
    return {
        "Chart.yaml": f'apiVersion: v2\nname: api\nversion: 0.1.0\nappVersion: "{app_version}"\n',
        "values.yaml": (
            f'replicaCount: 3\nimage:\n  repository: {image}\n  tag: "{tag}"\n'
            "  pullPolicy: IfNotPresent\n"
        ),
        "templates/deployment.yaml": _HELM_TEMPLATE.format(
            deployment=deployment, namespace=namespace, image=_HELM_IMAGE
        ),
    }


def create_repository(
    directory: Path, name: str, namespace: str, deployment: str, *, layout: Layout = "plain"
) -> Path:
    """A fresh bare repository ``<directory>/<name>.git`` whose ``main`` has one commit per
    seeded release (the last one what the cluster runs), declaring the image as ``layout``
    says."""
    bare = directory / f"{name}.git"
    if bare.exists():
        shutil.rmtree(bare)
    directory.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", "--bare", "--initial-branch", TRACKED, str(bare))
    with tempfile.TemporaryDirectory(prefix="gitops-seed-") as scratch:
        work = Path(scratch)
        git("init", "--quiet", "--initial-branch", TRACKED, str(work))
        for version, cause in RELEASES:
            for relative, text in _release_files(
                layout, namespace, deployment, version, cause
            ).items():
                (work / relative).parent.mkdir(parents=True, exist_ok=True)
                (work / relative).write_text(text)
            git("add", "--all", cwd=work)
            git("commit", "--quiet", "-m", cause, cwd=work)
        git("push", "--quiet", str(bare), f"{TRACKED}:{TRACKED}", cwd=work)
    return bare


def _ensure_namespace(cluster: Cluster, name: str) -> None:
    with contextlib.suppress(ApiError):
        cluster.create(NAMESPACES, None, {"metadata": {"name": name}}, internal=True)


def own(cluster: Cluster, app: GitOpsApp, *, interval: float = RECONCILE_INTERVAL_S) -> None:
    """Create the tool's objects for ``app`` and mark the live deployment as the tool does;
    they declare ``interval`` (seconds), what the reconciler does."""
    every = f"{interval:g}s"
    with cluster.lock:
        deploy = cluster.get(DEPLOYMENTS, app.namespace, app.deployment)
        meta = deploy["metadata"]
        if app.tool == "argo":
            _ensure_namespace(cluster, ARGO_NAMESPACE)
            with contextlib.suppress(ApiError):  # one per installation, shared by its apps
                cluster.create(
                    CONFIGMAPS,
                    ARGO_NAMESPACE,
                    {
                        "metadata": {"name": "argocd-cm"},
                        "data": {"timeout.reconciliation": every},
                    },
                    internal=True,
                )
            meta["labels"]["app.kubernetes.io/instance"] = app.name
            meta["annotations"]["argocd.argoproj.io/tracking-id"] = (
                f"{app.name}:apps/Deployment:{app.namespace}/{app.deployment}"
            )
            cluster.create(
                APPLICATIONS,
                ARGO_NAMESPACE,
                {
                    "metadata": {"name": app.name},
                    "spec": {
                        "project": "default",
                        "source": {"repoURL": app.url, "targetRevision": TRACKED, "path": "."},
                        "destination": {
                            "server": "https://kubernetes.default.svc",
                            "namespace": app.namespace,
                        },
                        "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
                    },
                },
                internal=True,
            )
        else:
            _ensure_namespace(cluster, FLUX_NAMESPACE)
            meta["labels"]["kustomize.toolkit.fluxcd.io/name"] = app.name
            meta["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = FLUX_NAMESPACE
            cluster.create(
                GIT_REPOSITORIES,
                FLUX_NAMESPACE,
                {
                    "metadata": {"name": app.name},
                    "spec": {"url": app.url, "ref": {"branch": TRACKED}, "interval": "1m"},
                },
                internal=True,
            )
            cluster.create(
                KUSTOMIZATIONS,
                FLUX_NAMESPACE,
                {
                    "metadata": {"name": app.name},
                    "spec": {
                        "interval": every,
                        "path": "./",
                        "prune": True,
                        "sourceRef": {"kind": "GitRepository", "name": app.name},
                        "targetNamespace": app.namespace,
                        "suspend": False,
                    },
                },
                internal=True,
            )
        cluster.replace(DEPLOYMENTS, app.namespace, app.deployment, deploy, internal=True)


def seed_gitops(
    clusters: dict[str, Cluster],
    directory: Path,
    *,
    world: str = "serve",
    interval: float = RECONCILE_INTERVAL_S,
    layouts: dict[str, Layout] | None = None,
) -> list[GitOpsApp]:
    """The ``serve`` world: production's ``api`` owned by Argo CD application
    ``api-production`` (one repository, an Application in each region's cluster), staging's by
    Flux Kustomization ``api-staging``; both declare ``interval``, the reconciler's. Their
    repositories hold plain manifests unless ``layouts`` (application → layout) says."""
    del world  # one world for now; the name says which
    found = []
    for tool, name, namespace in (
        ("argo", "api-production", "production"),
        ("flux", "api-staging", "staging"),
    ):
        repo = create_repository(
            directory,
            name,
            namespace,
            "api-deployment",
            layout=(layouts or {}).get(name, "plain"),
        )
        app = GitOpsApp(tool, name, namespace, "api-deployment", repo)  # type: ignore[arg-type]
        for cluster in clusters.values():
            with contextlib.suppress(ApiError):
                cluster.get(NAMESPACES, None, namespace)
                own(cluster, app, interval=interval)
        found.append(app)
    return found


def _images(text: str) -> dict[str, dict[str, str]]:
    """Deployment name → container name → image, from a manifest file's documents."""
    found: dict[str, dict[str, str]] = {}
    for doc in yaml.safe_load_all(text):
        if not isinstance(doc, dict) or doc.get("kind") != "Deployment":
            continue
        containers = (((doc.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers"
        ) or []
        found[str(doc["metadata"]["name"])] = {
            str(c["name"]): str(c["image"]) for c in containers if c.get("image")
        }
    return found


def rendered_images(repo: Path, revision: str, path: str = ".") -> dict[str, dict[str, str]]:
    """The Deployments' images that ``path`` renders at ``revision``: a kustomization built
    by kustomize itself (``kubectl kustomize`` on a copy of the tree), else the plain YAML
    files at the path. A Helm chart renders nothing here (its templates are not YAML)."""
    prefix = "" if path.strip("./") == "" else path.strip("./") + "/"
    names = git("--git-dir", str(repo), "ls-tree", "--name-only", revision, prefix or ".")
    listed = [n.removeprefix(prefix) for n in names.split()]
    if "kustomization.yaml" in listed:
        return _images(_kustomize(repo, revision, prefix))
    found: dict[str, dict[str, str]] = {}
    for name in names.split():
        if name.endswith((".yaml", ".yml")):
            found.update(_images(git("--git-dir", str(repo), "show", f"{revision}:{name}")))
    return found


def _kustomize(repo: Path, revision: str, prefix: str) -> str:
    """``kubectl kustomize`` of ``prefix`` in a copy of the tree at ``revision``."""
    with tempfile.TemporaryDirectory(prefix="gitops-kustomize-") as scratch:
        root = Path(scratch)
        for name in git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", revision).split():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(git("--git-dir", str(repo), "show", f"{revision}:{name}"))
        done = subprocess.run(
            ["kubectl", "kustomize", str(root / prefix)],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise GitFailed(f"kubectl kustomize: {done.stderr.strip()}")
        return done.stdout


def _repo_path(url: str) -> Path:
    return Path(url.removeprefix("file://"))


class GitOpsReconciler:
    """Argo CD's and Flux's controllers, reduced to what a rollback meets (module docstring)."""

    def __init__(
        self,
        clusters: dict[str, Cluster],
        *,
        interval: float = RECONCILE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
        pace: float = 0.2,
    ) -> None:
        self.clusters = clusters
        self.interval = interval
        self.clock = clock
        self.pace = pace
        #: (region, kind, name) -> when it was last reconciled (the clock's time).
        self._last: dict[tuple[str, str, str], float] = {}
        #: (region, name) -> reconciliations done (refreshes, applied or not): what tests
        #: wait on to know an interval passed through the reconciler.
        self.passes: dict[tuple[str, str], int] = {}
        #: (region, name) -> times live images were replaced from Git.
        self.applied: dict[tuple[str, str], int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> GitOpsReconciler:
        self._thread = threading.Thread(target=self._loop, name="gitops-reconciler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.pace):
            with contextlib.suppress(Exception):  # a broken repo must not stop the others
                self.tick()

    def tick(self) -> int:
        """Reconcile every application that is due; how many were."""
        done = 0
        for region, cluster in self.clusters.items():
            for resource in (APPLICATIONS, KUSTOMIZATIONS):
                items, _ = cluster.list_objects(resource, None)
                for obj in items:
                    key = (region, resource.kind, obj["metadata"]["name"])
                    now = self.clock()
                    if key in self._last and now - self._last[key] < self.interval:
                        continue
                    self._last[key] = now
                    try:
                        self._reconcile(region, cluster, resource.kind, obj)
                    except (GitFailed, ApiError, KeyError, yaml.YAMLError):
                        continue
                    done += 1
        return done

    def _reconcile(self, region: str, cluster: Cluster, kind: str, obj: dict[str, Any]) -> None:
        name, ns = obj["metadata"]["name"], obj["metadata"]["namespace"]
        if kind == "Application":
            source = obj["spec"]["source"]
            repo, branch, path = (
                _repo_path(source["repoURL"]),
                source["targetRevision"],
                source.get("path", "."),
            )
            target_ns = obj["spec"]["destination"]["namespace"]
        else:
            ref = obj["spec"]["sourceRef"]
            source_obj = cluster.get(GIT_REPOSITORIES, ns, ref["name"])
            repo = _repo_path(source_obj["spec"]["url"])
            branch = (source_obj["spec"].get("ref") or {}).get("branch", TRACKED)
            path = obj["spec"].get("path", ".")
            target_ns = obj["spec"].get("targetNamespace") or ns
        head = git("--git-dir", str(repo), "rev-parse", f"refs/heads/{branch}").strip()
        wanted = rendered_images(repo, head, path)
        stamp = now_iso(self.clock())
        with cluster.lock:
            current = cluster.get(
                APPLICATIONS if kind == "Application" else KUSTOMIZATIONS, ns, name
            )
            automated = (
                "automated" in (current["spec"].get("syncPolicy") or {})
                if kind == "Application"
                else not current["spec"].get("suspend", False)
            )
            in_sync = True
            for deployment, images in wanted.items():
                live = cluster.get(DEPLOYMENTS, target_ns, deployment)
                containers = live["spec"]["template"]["spec"]["containers"]
                if all(images.get(c["name"], c["image"]) == c["image"] for c in containers):
                    continue
                in_sync = False
                if automated:
                    for container in containers:
                        container["image"] = images.get(container["name"], container["image"])
                    cluster.replace(DEPLOYMENTS, target_ns, deployment, live, internal=True)
                    self.applied[region, name] = self.applied.get((region, name), 0) + 1
            status = copy.deepcopy(current.get("status") or {})
            if kind == "Application":
                status["sync"] = {
                    "status": "Synced" if in_sync or automated else "OutOfSync",
                    "revision": head,
                }
                status["reconciledAt"] = stamp
            else:
                revision = f"{branch}@sha1:{head}"
                source_obj = cluster.get(GIT_REPOSITORIES, ns, obj["spec"]["sourceRef"]["name"])
                artifact = {"revision": revision, "lastUpdateTime": stamp}
                if (source_obj.get("status") or {}).get("artifact", {}).get("revision") != revision:
                    source_obj["status"] = {"artifact": artifact}
                    cluster.replace(
                        GIT_REPOSITORIES,
                        ns,
                        source_obj["metadata"]["name"],
                        _no_version(source_obj),
                        subresource="status",
                        internal=True,
                    )
                if automated:
                    status["lastAppliedRevision"] = revision
                status["lastAttemptedRevision"] = (
                    revision if automated else status.get("lastAttemptedRevision", "")
                )
                status["lastHandledReconcileAt"] = stamp
            current["status"] = status
            cluster.replace(
                APPLICATIONS if kind == "Application" else KUSTOMIZATIONS,
                ns,
                name,
                _no_version(current),
                subresource="status",
                internal=True,
            )
            self.passes[region, name] = self.passes.get((region, name), 0) + 1


def _no_version(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without its resourceVersion: a status write the controller owns."""
    out = copy.deepcopy(obj)
    out["metadata"].pop("resourceVersion", None)
    return out


def merge(repo: Path, branch: str, *, into: str = TRACKED) -> str:
    """Merge ``branch`` into ``into`` as a person merging the pull request would (a merge
    commit, pushed); the new head."""
    with tempfile.TemporaryDirectory(prefix="gitops-merge-") as scratch:
        work = Path(scratch) / "work"
        git("clone", "--quiet", "--branch", into, str(repo), str(work))
        git("fetch", "--quiet", "origin", branch, cwd=work)
        git("merge", "--quiet", "--no-ff", "-m", f"Merge {branch}", "FETCH_HEAD", cwd=work)
        git("push", "--quiet", "origin", into, cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()
