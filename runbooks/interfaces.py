"""What runbooks need from the outside world, in their own words.

Runbook modules import these types, never an adapter module (an adapter imports its SDK, and
import-linter counts that edge). ``runbooks.adapters`` implements them; tests may too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Literal, Protocol

from runbooks.engine.errors import InvalidInput, RunbookError
from runbooks.engine.plan import Adapters, PlanContext


class InfrastructureError(RunbookError):
    """An external system refused or failed; the message names the object and the reason."""

    code = "infrastructure_error"


_UNSET_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def expand_vars(text: str, *, what: str) -> str:
    """``${VAR}`` replaced from the environment; a variable that is not set is an error naming
    it (``os.path.expandvars`` would leave it in place, and the address would fail obscurely)."""
    expanded = os.path.expandvars(text)
    missing = [a or b for a, b in _UNSET_VAR.findall(expanded)]
    if missing:
        raise InfrastructureError(
            f"{what} {text!r} names ${missing[0]}, which is not set in the bot's environment "
            "(the sandbox exports it: run under `python3 dev.py serve`, or source the env file "
            "`python -m sandbox up` writes)"
        )
    return expanded


class RolloutFailed(InfrastructureError):
    """A rollout did not complete (e.g. ProgressDeadlineExceeded)."""

    code = "rollout_failed"


@dataclass(frozen=True)
class Revision:
    """One entry of a deployment's rollout history (a ReplicaSet)."""

    number: int
    replicaset: str
    images: dict[str, str]
    change_cause: str
    template: dict[str, Any]
    replicas: int
    #: The numbers this ReplicaSet had before it was deployed again (Kubernetes'
    #: ``deployment.kubernetes.io/revision-history``): it came back by a rollback.
    earlier: tuple[int, ...] = ()

    def image_text(self) -> str:
        return short_images(self.images)


def short_images(images: dict[str, str]) -> str:
    """``app-api:1.4.2`` for ``123.dkr.ecr.../app-api:1.4.2``: the part people recognise."""
    return ", ".join(sorted({image.rsplit("/", 1)[-1] for image in images.values()})) or "no image"


@dataclass(frozen=True)
class DeploymentState:
    name: str
    namespace: str
    revision: int
    images: dict[str, str]
    replicas: int
    ready: int
    updated: int
    available: int
    generation: int
    observed_generation: int
    paused: bool
    template: dict[str, Any]
    labels: dict[str, str]
    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # type -> (status, reason)

    def image_text(self) -> str:
        return short_images(self.images)


@dataclass(frozen=True)
class HpaState:
    name: str
    min_replicas: int
    max_replicas: int
    current: int
    desired: int
    cpu_target: int | None
    memory_target: int | None


class KubeOps(Protocol):
    """Kubernetes operations for one cluster (one environment in one region)."""

    region: str

    def deployment(self, namespace: str, name: str) -> DeploymentState: ...

    def revisions(self, namespace: str, name: str) -> list[Revision]: ...

    def undo(self, namespace: str, name: str, to_revision: int) -> bool:
        """Roll back like ``kubectl rollout undo``; False when already at that template."""
        ...

    def wait_rollout(
        self, namespace: str, name: str, *, timeout: float, check: Callable[[], None]
    ) -> DeploymentState:
        """Watch until the rollout completes (like ``kubectl rollout status``)."""
        ...

    def scale(self, namespace: str, name: str, replicas: int) -> None: ...

    def set_container_resources(
        self,
        namespace: str,
        name: str,
        container: str,
        resources: dict[str, dict[str, str | None]],
        *,
        cause: str,
    ) -> None:
        """Strategic-merge a container's requests/limits (None removes a key); starts a
        rollout. ``cause`` becomes the change-cause annotation (rollout history)."""
        ...

    def hpa_for(self, namespace: str, deployment: str) -> HpaState | None: ...

    def set_hpa_bounds(self, namespace: str, name: str, minimum: int, maximum: int) -> None: ...

    def service_selector(self, namespace: str, service: str) -> dict[str, str]: ...

    def set_service_selector(
        self, namespace: str, service: str, selector: dict[str, str]
    ) -> None: ...

    def deployment_marks(self, namespace: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """The deployment's labels and annotations (who applied it: Argo CD, Flux)."""
        ...

    def gitops_app(self, owner: GitOpsOwner) -> GitOpsApp | None:
        """The owner's object (Argo CD Application, Flux Kustomization with its source), or
        None when there is none (a label that only looked like an owner's)."""
        ...

    def gitops_apps(self) -> list[GitOpsApp]:
        """Every Argo CD Application and Flux Kustomization in the cluster."""
        ...

    def may_suspend(self, owner: GitOpsOwner) -> bool:
        """Whether RBAC lets this client patch the owner's object and list its kind in all
        namespaces (what the watch that resumes sync needs): SelfSubjectAccessReviews."""
        ...

    def suspend_gitops(self, owner: GitOpsOwner, annotation: str) -> None:
        """Turn automated sync off (Argo: ``spec.syncPolicy.automated`` removed; Flux:
        ``spec.suspend: true``) and set ``SUSPENDED_ANNOTATION`` to ``annotation``."""
        ...

    def resume_gitops(self, owner: GitOpsOwner, automated: dict[str, Any] | None) -> None:
        """Turn automated sync back on (Argo: ``automated`` as it was) and drop the
        annotation."""
        ...

    def endpoints(self, namespace: str, service: str) -> tuple[list[str], list[str]]:
        """(ready pod names, not-ready pod names) behind a service."""
        ...

    def can_i(self, namespace: str, group: str, resource: str, verb: str) -> tuple[bool, str]:
        """A ``SelfSubjectAccessReview``: may these credentials do ``verb`` on ``resource``
        (``deployments/scale`` names a subresource) in ``namespace``; (allowed, reason).
        A review changes nothing (the API server keeps no object)."""
        ...


#: The annotation on a suspended Application/Kustomization: JSON naming the run, its expiry,
#: the automated policy to restore and the images Git must render before it is restored.
SUSPENDED_ANNOTATION = "runbook-bot.io/suspended"
GitOpsTool = Literal["argo", "flux", "flux-helm"]


@dataclass(frozen=True)
class GitOpsOwner:
    """Who reconciles a deployment from Git: the tool and its object's name and namespace."""

    tool: GitOpsTool
    name: str
    namespace: str

    def words(self) -> str:
        kind = {
            "argo": "Argo CD application",
            "flux": "Flux Kustomization",
            "flux-helm": "Flux HelmRelease",
        }[self.tool]
        return f"{kind} `{self.name}` (namespace {self.namespace})"


@dataclass(frozen=True)
class GitOpsApp:
    """The owner's object as read: where it syncs from and whether it syncs by itself."""

    owner: GitOpsOwner
    repo_url: str
    branch: str
    path: str
    #: Automated sync is on (Argo: ``syncPolicy.automated``; Flux: not suspended).
    automated: bool
    #: Argo's automated policy (``{prune, selfHeal}``), kept to restore it as it was.
    automated_policy: dict[str, Any] | None
    #: How often it syncs, in words (``every 3m (Argo CD's default)``, ``every 10m``).
    interval: str
    #: The revision the reconciler compares or fetched last (Argo ``status.sync.revision``,
    #: Flux's GitRepository ``status.artifact.revision``), a commit id; None before any.
    source_revision: str | None
    #: Flux ``status.lastAppliedRevision`` / Argo ``status.sync.revision`` when synced.
    applied_revision: str | None
    #: ``SUSPENDED_ANNOTATION``'s value, when set.
    suspended: str | None = None


@dataclass(frozen=True)
class Reverted:
    """A revert branch pushed: its name, its commit, and what the commit changed."""

    branch: str
    commit: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class ImageSites:
    """Where an application's path declares the images a revert would change (plan time)."""

    #: Old image → where it is declared, in words (``kustomization.yaml: `images:` entry
    #: `…/app-api` (newTag)``).
    found: dict[str, str]
    #: Old images declared nowhere the bot looks (or not rewritable: ``problem`` says why).
    missing: tuple[str, ...]
    #: What was looked for, in words (for the refusal).
    looked: str = ""
    problem: str | None = None


class GitOps(Protocol):
    """An application's Git repository, with real ``git`` (every call with a timeout)."""

    def branch_head(self, repo_url: str, branch: str) -> str | None:
        """The branch's commit on the remote, or None when it does not exist."""
        ...

    def default_branch(self, repo_url: str) -> str:
        """The branch the remote's HEAD names."""
        ...

    def revert_images(
        self,
        repo_url: str,
        *,
        base: str,
        branch: str,
        path: str,
        images: dict[str, str],
        message: str,
    ) -> Reverted:
        """Push ``branch`` (from ``base``'s head) with one commit setting each image
        (``old → new``) where the files under ``path`` declare it (a kustomization's
        ``images:``, a Helm values file, or the image as a value); refuses when one is
        declared nowhere."""
        ...

    def locate_images(
        self, repo_url: str, *, base: str, path: str, images: dict[str, str]
    ) -> ImageSites:
        """Where ``base``'s head declares each old image under ``path`` (nothing pushed)."""
        ...

    def delete_branch(self, repo_url: str, branch: str) -> None: ...

    def images_at(self, repo_url: str, revision: str, path: str) -> dict[str, dict[str, str]]:
        """Deployment name → container → image in the YAML under ``path`` at ``revision``
        (a kustomization's ``images:`` applied)."""
        ...

    def renders(
        self,
        repo_url: str,
        revision: str,
        path: str,
        *,
        deployment: str,
        images: dict[str, str],
    ) -> bool:
        """Whether ``revision`` renders ``images`` (container → image) for ``deployment``:
        its manifests (a kustomization's ``images:`` applied), or a chart's values."""
        ...


@dataclass(frozen=True)
class PullRequest:
    """A pull request for a revert branch: where people review it."""

    url: str
    number: int
    #: It was open already (a resumed run, or one opened by hand): none was created.
    existed: bool = False


class PullRequestOps(Protocol):
    """A repository hosting API (GitHub's REST API), every call with a timeout."""

    def open_pull_request(
        self, repository: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        """The open pull request of ``head`` into ``base`` in ``repository`` (``owner/name``):
        the one already open for that branch, else a new one."""
        ...


@dataclass(frozen=True)
class Instance:
    id: str
    type: str
    lifecycle: str  # InService, Pending, Terminating, ...
    health: str  # Healthy, Unhealthy


@dataclass(frozen=True)
class NodeGroupState:
    """An Auto Scaling group: the Kubernetes node group of one environment in one region."""

    name: str
    region: str
    minimum: int
    maximum: int
    desired: int
    instances: tuple[Instance, ...]
    launch_template: str | None
    template_version: str | None
    #: When capacity last changed (latest scaling activity, or runbook-bot's own tag).
    last_scaled_at: float | None

    @property
    def in_service(self) -> int:
        return sum(
            1 for i in self.instances if i.lifecycle == "InService" and i.health == "Healthy"
        )


@dataclass(frozen=True)
class StandaloneInstance:
    """An EC2 instance found by its Name tag."""

    id: str
    name: str
    type: str
    state: str  # pending, running, stopping, stopped
    status_ok: bool  # both EC2 status checks (instance and system) ok
    group: str | None  # the Auto Scaling group it belongs to, if any


class AwsOps(Protocol):
    """AWS operations in one region."""

    region: str

    def caller_identity(self) -> str:
        """The ARN the credentials act as (``sts get-caller-identity``)."""
        ...

    def node_group(self, name: str) -> NodeGroupState: ...

    def set_desired(self, name: str, desired: int, *, at: float) -> None:
        """Set the group's desired capacity and stamp when (the cooldown's clock)."""
        ...

    def template_versions(self, template: str) -> list[tuple[int, str, str]]:
        """(version number, instance type, description) of a launch template's versions."""
        ...

    def create_template_version(
        self, template: str, *, source: str, instance_type: str, description: str
    ) -> int: ...

    def set_group_template(self, name: str, template: str, version: str) -> None:
        """Point the group at a launch template version (new instances use it)."""
        ...

    def replace_instance(self, name: str, instance_id: str) -> None:
        """Terminate one instance in the group without lowering its desired capacity."""
        ...

    def target_health(self, name: str) -> tuple[int, int]:
        """(healthy, registered) of the group's current instances in its target groups."""
        ...

    def standalone(self, name: str) -> StandaloneInstance:
        """The one live instance with this Name tag (an error if none or several)."""
        ...

    def stop_instance(self, instance_id: str) -> None: ...

    def start_instance(self, instance_id: str) -> None: ...

    def set_instance_type(self, instance_id: str, instance_type: str) -> None:
        """Change a stopped instance's type."""
        ...

    def health_checks(self, domain: str) -> list[tuple[str, int, int]]:
        """Route53 health checks on names under ``domain``: (target, healthy observers, all
        observers), e.g. ("https://api-us-east-1.example.com/health", 8, 8)."""
        ...

    def latest_object(self, bucket: str) -> tuple[str, float] | None:
        """(key, last modified) of the newest object in a bucket; None when it is empty."""
        ...

    def objects(self, bucket: str, prefix: str = "") -> list[StoredObject]:
        """Every object under ``prefix`` in a bucket (all pages)."""
        ...

    def read_object(self, bucket: str, key: str) -> BinaryIO:
        """A streaming reader of one object (read in chunks; close it)."""
        ...

    def delete_objects(self, bucket: str, keys: list[str]) -> None: ...

    def write_object(self, bucket: str, key: str) -> AbstractContextManager[BinaryIO]:
        """A writer that uploads in parts as it fills; completed when the block exits
        normally, aborted (nothing left behind) when it raises."""
        ...

    def traffic_ttl(self, zone: str, record: str) -> int:
        """The longest TTL of the weighted records: how long resolvers keep the old split."""
        ...

    def health_check_timing(self, domain: str) -> list[tuple[str, int, int]]:
        """Route53 health checks of hosts under ``domain``: (host, request interval in
        seconds, failure threshold)."""
        ...

    def traffic_weights(self, zone: str, record: str) -> dict[str, int]:
        """Weights of the weighted records of ``record`` by set identifier (the region)."""
        ...

    def set_traffic_weights(self, zone: str, record: str, weights: dict[str, int]) -> None:
        """Change the weights only (targets unchanged); wait until Route53 reports INSYNC."""
        ...


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float


@dataclass(frozen=True)
class DbMember:
    host: str
    region: str | None  # from the member's region tag (None: untagged)
    state: str  # PRIMARY, SECONDARY, ...
    lag: float | None  # seconds behind the primary (None for the primary or unknown)


@dataclass(frozen=True)
class DbTopology:
    """The replica set as the database reports it (``replSetGetStatus`` + its config)."""

    members: tuple[DbMember, ...]

    @property
    def primary_region(self) -> str | None:
        for member in self.members:
            if member.state == "PRIMARY":
                return member.region
        return None

    def lag(self, region: str) -> float | None:
        """The smallest lag among the region's healthy secondaries (its best candidate);
        0 when the primary is there; None when the region has no readable member."""
        if self.primary_region == region:
            return 0.0
        lags = [
            m.lag
            for m in self.members
            if m.region == region and m.state == "SECONDARY" and m.lag is not None
        ]
        return min(lags) if lags else None


@dataclass(frozen=True)
class AtlasRegion:
    """One region of an Atlas cluster's configuration (``replicationSpecs[].regionConfigs[]``)."""

    tag: str  # Atlas's region name: US_EAST_1
    priority: int  # 7 for the preferred region, then 6, 5, ...; 0 without electable nodes
    electable: int  # electableSpecs.nodeCount: members that can become primary
    read_only: int  # readOnlySpecs.nodeCount: members that replicate but never lead


class DatabaseOps(Protocol):
    """The environment's MongoDB: topology, and moving the primary to a region."""

    def topology(self) -> DbTopology: ...

    def atlas_regions(self) -> tuple[AtlasRegion, ...]:
        """The Atlas cluster's regions as its Admin API configures them (a read, ``GET`` of
        the cluster); InfrastructureError for a self-managed replica set or a refused call."""
        ...

    def ping(self) -> None:
        """Reach the database (``ping``); InfrastructureError naming why it could not."""
        ...

    def promote(self, region: str, *, timeout: float, check: Callable[[], None]) -> None:
        """Make ``region`` the preferred one and wait until the primary is there."""
        ...

    def close(self) -> None: ...


class DataOps(Protocol):
    """A MongoDB deployment's data (the environment's cluster, or its restore target).

    Documents travel as raw BSON bytes: what is dumped, hashed and restored is exactly what
    the server stored, never a re-encoding."""

    label: str

    def hosts(self) -> frozenset[str]:
        """The ``host:port`` seeds of the connection string (the cluster's identity here)."""
        ...

    def database_names(self) -> list[str]: ...

    def collection_names(self, database: str) -> list[str]: ...

    def index_specs(self, database: str, collection: str) -> list[dict[str, Any]]: ...

    def raw_documents(self, database: str, collection: str) -> Iterator[bytes]:
        """Every document in ``_id`` order, as BSON bytes, in batches from the server."""
        ...

    def count(self, database: str, collection: str, query: dict[str, Any] | None = None) -> int: ...

    def newest(self, database: str, collection: str, field: str) -> datetime | None:
        """The largest value of ``field`` (a time) in the collection, or None."""
        ...

    def insert_raw(self, database: str, collection: str, documents: list[bytes]) -> None: ...

    def create_collection(self, database: str, collection: str) -> None: ...

    def create_indexes(
        self, database: str, collection: str, specs: list[dict[str, Any]]
    ) -> None: ...

    def drop_database(self, database: str) -> None: ...

    def drop_collection(self, database: str, collection: str) -> None: ...

    def replace_documents(
        self, database: str, collection: str, documents: list[dict[str, Any]]
    ) -> None:
        """Replace each document with the same ``_id`` (scratch copies only: dr.simulate)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CloudSnapshot:
    id: str
    created: float
    status: str


class CloudBackupOps(Protocol):
    """A managed cluster's cloud backups (Atlas): snapshots and restore jobs."""

    def snapshots(self) -> list[CloudSnapshot]:
        """Completed and pending snapshots, oldest first."""
        ...

    def cluster_tags(self, cluster: str) -> dict[str, str]: ...

    def start_restore(self, snapshot_id: str, target_cluster: str) -> str:
        """Start a restore job (it wipes the target cluster); the job id."""
        ...

    def start_point_in_time_restore(self, second: int, target_cluster: str) -> str:
        """Start a restore job of the cluster as it was at ``second`` (epoch, UTC); the job id."""
        ...

    def restore_finished(self, job_id: str) -> bool:
        """Whether the job finished; InfrastructureError when it failed or was cancelled."""
        ...


class MetricsOps(Protocol):
    """The environment's Prometheus."""

    def query(self, expr: str) -> float | None:
        """An instant query's value; None when there are no samples."""
        ...


class HealthOps(Protocol):
    """Health endpoints over HTTP."""

    def status(self, url: str) -> int | str:
        """The HTTP status of a GET (with a timeout), or a sentence saying why none came."""
        ...


class IdentityOps(Protocol):
    """A chat or paging service's credentials: who they act as (an error when revoked)."""

    def identity(self) -> str: ...


class Infrastructure(Adapters):
    """The adapters runbooks use, reached through ``ctx.adapters``."""

    def kube(self, environment: str, region: str) -> KubeOps:
        raise InvalidInput(f"no Kubernetes adapter is configured for {environment} in {region}")

    def aws(self, region: str) -> AwsOps:
        raise InvalidInput(f"no AWS adapter is configured for {region}")

    def database(self, environment: str) -> DatabaseOps:
        raise InvalidInput(f"no database adapter is configured for {environment}")

    def data(self, environment: str, *, restore_target: bool = False) -> DataOps:
        """The environment's database data, or (``restore_target``) where restore tests
        restore to."""
        raise InvalidInput(f"no database data adapter is configured for {environment}")

    def cloud_backups(self, environment: str) -> CloudBackupOps:
        raise InvalidInput(f"no cloud backup adapter is configured for {environment}")

    def metrics(self, environment: str) -> MetricsOps:
        raise InvalidInput(f"no metrics adapter is configured for {environment}")

    def health(self) -> HealthOps:
        raise InvalidInput("no health-check adapter is configured")

    def chat(self) -> IdentityOps | None:
        """Slack's Web API as the bot (``auth.test``); None when Slack is off."""
        return None

    def paging(self) -> IdentityOps | None:
        """PagerDuty's REST API token; None when PagerDuty's REST API is off."""
        return None

    def git(self, environment: str) -> GitOps:
        raise InvalidInput(f"no Git adapter is configured for {environment}")

    def pull_requests(self, environment: str) -> PullRequestOps | None:
        """The hosting API that opens revert branches' pull requests; None when off
        (``gitops.pull_request`` unset)."""
        return None


def infrastructure(ctx: PlanContext) -> Infrastructure:
    """The context's adapters as the runbooks' interface."""
    if not isinstance(ctx.adapters, Infrastructure):
        raise InvalidInput("this runbook needs infrastructure adapters; the front end gave none")
    return ctx.adapters
