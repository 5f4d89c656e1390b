"""Deployments a GitOps reconciler owns (Argo CD, Flux): who owns one, the steps that make a
rollback survive it, and the watch that gives sync back once Git matches (docs/gitops.md).

1. **Who owns it** is read from the marks the tools put on what they apply: Argo CD's
   tracking annotation ``argocd.argoproj.io/tracking-id`` (``<app>:<group>/<kind>:<ns>/<name>``,
   ``<app namespace>_<app>`` for apps outside ``argocd``) or its tracking label
   ``app.kubernetes.io/instance``; Flux's ``kustomize.toolkit.fluxcd.io/name`` + ``/namespace``
   and ``helm.toolkit.fluxcd.io/name`` + ``/namespace``. A mark counts only when the object it
   names exists: Helm charts set ``app.kubernetes.io/instance`` too.
2. **Suspend** turns automated sync off for that application only, keeping what it needs to
   give it back in an annotation (``runbook-bot.io/suspended``: the run, its expiry, the
   automated policy, the images Git must render); compensation restores it.
3. **Revert** pushes ``runbook-bot/revert-<run>`` with one commit setting the image back.
4. **The watch** (``GitOpsWatch``, on the leader's ``gitops`` lease) reads every suspended
   application: once the revision its reconciler syncs from renders the rolled-back images
   (a person merged the branch), it restores automated sync (``gitops.resumed``); when the
   limit passes first, it pages once and keeps sync suspended (``gitops.expired``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbooks.engine.background.leases import LeaderLease
from runbooks.engine.clock import format_duration, iso
from runbooks.engine.errors import InvalidInput, Refused, RunbookError, StepFailed
from runbooks.engine.models import Actor, Origin
from runbooks.engine.plan import RUN_ID, PlanContext, RunContext, Step
from runbooks.engine.redact import redact_text
from runbooks.interfaces import (
    GitOpsApp,
    GitOpsOwner,
    Infrastructure,
    KubeOps,
    infrastructure,
    short_images,
)
from runbooks.kit.kube import KubeStep

if TYPE_CHECKING:
    from runbooks.engine.engine import Engine

_log = logging.getLogger(__name__)

ARGO_TRACKING_ID = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE = "app.kubernetes.io/instance"
ARGO_NAMESPACE = "argocd"
FLUX_KUSTOMIZE = "kustomize.toolkit.fluxcd.io"
FLUX_HELM = "helm.toolkit.fluxcd.io"
BRANCH_PREFIX = "runbook-bot/revert-"


def owner_from_marks(labels: dict[str, str], annotations: dict[str, str]) -> GitOpsOwner | None:
    """The owner a deployment's labels and annotations name, if any (module docstring, 1)."""
    tracking = annotations.get(ARGO_TRACKING_ID)
    if tracking and ":" in tracking:
        app = tracking.split(":", 1)[0]
        namespace, _, name = app.rpartition("_")
        return GitOpsOwner("argo", name, namespace or ARGO_NAMESPACE)
    for prefix, tool in ((FLUX_KUSTOMIZE, "flux"), (FLUX_HELM, "flux-helm")):
        flux_name, flux_ns = labels.get(f"{prefix}/name"), labels.get(f"{prefix}/namespace")
        if flux_name and flux_ns:
            return GitOpsOwner("flux" if tool == "flux" else "flux-helm", flux_name, flux_ns)
    if labels.get(ARGO_INSTANCE):
        return GitOpsOwner("argo", labels[ARGO_INSTANCE], ARGO_NAMESPACE)
    return None


def find_owner(kube: KubeOps, namespace: str, deployment: str) -> GitOpsApp | None:
    """The application that reconciles this deployment, read from the cluster, or None."""
    labels, annotations = kube.deployment_marks(namespace, deployment)
    owner = owner_from_marks(labels, annotations)
    if owner is None:
        return None
    return kube.gitops_app(owner)


def owned_words(app: GitOpsApp, *, change: str, source: str = "") -> str:
    """``owned by Argo CD application `api-production` (automated sync every 3m): the
    rollback alone would be reverted`` (``source``: `` from REPO (BRANCH)`` after "sync"
    where the words name it). With automated sync off nothing reverts the change now; the
    next sync would (by hand, or once someone turns automated sync back on)."""
    owner = app.owner.words()
    if app.automated:
        return (
            f"owned by {owner} (automated sync {app.interval}): the {change} alone would be "
            f"reverted{' at the next sync' + source if source else ''}"
        )
    return (
        f"owned by {owner} (automated sync off): nothing reverts the {change} while "
        f"automated sync stays off, but the next sync{source} would (a sync by hand, or "
        "automated sync turned back on)"
    )


def owned_warning(kube: KubeOps, namespace: str, deployment: str, *, change: str) -> str | None:
    """A plan line for runbooks that change an owned deployment without Git (scaling,
    resources): the reconciler undoes it at its next sync (automated or not)."""
    app = find_owner(kube, namespace, deployment)
    if app is None:
        return None
    source = f" from {app.repo_url} ({app.branch})"
    return (
        f"WARNING: {deployment} is {owned_words(app, change=change, source=source)}; "
        "make the change in Git as well"
    )


def unfollowed(app: GitOpsApp) -> str:
    """Why runbook-bot does not suspend this owner (Flux HelmReleases), or "" if it does."""
    if app.owner.tool != "flux-helm":
        return ""
    return (
        f"runbook-bot does not suspend {app.owner.words()}: its watch follows Argo CD "
        "Applications and Flux Kustomizations only, so that suspension would never be given "
        "back nor paged at its limit"
    )


def revert_branch(execution_id: str) -> str:
    return f"{BRANCH_PREFIX}{execution_id}"


@dataclass(frozen=True, kw_only=True)
class SuspendSync(KubeStep, kind="gitops.suspend"):
    """Automated sync off for one application, until Git renders ``images`` (the watch) or
    compensation gives it back."""

    tool: str
    app: str
    app_namespace: str
    deployment: str
    #: Argo's automated policy as it was, restored as it was.
    automated: dict[str, Any] | None
    #: Container → image Git must render before sync comes back (the rolled-back release).
    images: dict[str, str]
    limit: float
    timeout: float = 60.0
    audit_action = "gitops.suspended"

    @property
    def owner(self) -> GitOpsOwner:
        return GitOpsOwner(
            "argo" if self.tool == "argo" else "flux-helm" if self.tool == "flux-helm" else "flux",
            self.app,
            self.app_namespace,
        )

    def describe(self) -> str:
        how = (
            "remove spec.syncPolicy.automated" if self.tool == "argo" else "set spec.suspend: true"
        )
        return (
            f"suspend automated sync of {self.owner.words()} in {self.environment} "
            f"({self.region}) for this application only ({how}, kept in annotation "
            f"runbook-bot.io/suspended with this run and its expiry): restored once Git renders "
            f"{short_images(self.images)}, kept suspended and paged after "
            f"{format_duration(self.limit)}; compensation restores it"
        )

    def _ours(self, ctx: RunContext) -> GitOpsApp:
        app = self.kube(ctx).gitops_app(self.owner)
        if app is None:
            raise StepFailed(f"{self.owner.words()} ({self.region}) no longer exists")
        return app

    def run(self, ctx: RunContext) -> str | None:
        app = self._ours(ctx)
        if app.suspended and json.loads(app.suspended).get("run") == ctx.execution_id:
            return f"{self.region}: {self.app} already suspended by this run"
        expires = ctx.clock.now() + self.limit
        doc = {
            "run": ctx.execution_id,
            "environment": self.environment,
            "region": self.region,
            "namespace": self.namespace,
            "deployment": self.deployment,
            "images": self.images,
            "automated": self.automated,
            "branch": revert_branch(ctx.execution_id),
            "expires_at": expires,
            "expires": iso(expires),
        }
        self.kube(ctx).suspend_gitops(self.owner, json.dumps(doc, sort_keys=True))
        return (
            f"{self.region}: automated sync of {self.app} suspended until Git renders "
            f"{short_images(self.images)} (at most until {iso(expires)})"
        )

    def verify(self, ctx: RunContext) -> bool:
        app = self._ours(ctx)
        return (
            not app.automated
            and app.suspended is not None
            and json.loads(app.suspended).get("run") == ctx.execution_id
        )

    def undo(self, ctx: RunContext) -> str | None:
        app = self._ours(ctx)
        if not app.suspended or json.loads(app.suspended).get("run") != ctx.execution_id:
            return f"{self.region}: {self.app} is not suspended by this run; left as it is"
        self.kube(ctx).resume_gitops(self.owner, self.automated)
        return f"{self.region}: automated sync of {self.app} restored"


@dataclass(frozen=True, kw_only=True)
class RevertInGit(Step, kind="gitops.revert"):
    """Push ``runbook-bot/revert-<run>`` with one commit setting the images back."""

    environment: str
    app: str
    repo_url: str
    base: str
    path: str
    #: Old image → new image (full references).
    images: dict[str, str]
    #: Where the path declares them, in words (found at plan time).
    sites: tuple[str, ...] = ()
    #: The hosting API's ``owner/name`` to open a pull request in after the push
    #: (``gitops.pull_request``); None: no pull request.
    pull_request: str | None = None
    timeout: float = 120.0
    audit_action = "gitops.reverted"

    def describe(self) -> str:
        changes = ", ".join(
            f"{old.rsplit('/', 1)[-1]} → {new.rsplit('/', 1)[-1]}"
            for old, new in sorted(self.images.items())
        )
        where = f" ({'; '.join(self.sites)})" if self.sites else ""
        pull = (
            f", then open a pull request into {self.base} in {self.pull_request} (GitHub)"
            if self.pull_request
            else ""
        )
        return (
            f"revert in Git for {self.app}: push branch {BRANCH_PREFIX}{RUN_ID} to "
            f"{self.repo_url} (from {self.base}) with one commit setting {changes}{where} under "
            f"{self.path}{pull}; merging it into {self.base} ends the suspension"
        )

    def _releases(self) -> tuple[str, str]:
        """The release rolled back from and the one rolled back to, as people name them."""
        return (
            short_images({old: old for old in self.images}),
            short_images({new: new for new in self.images.values()}),
        )

    def _open_pull_request(self, ctx: RunContext, branch: str) -> str:
        """The pull request's line for the step's output: its URL, or why there is none. A
        failure here never fails the rollback: the branch is pushed either way."""
        if self.pull_request is None:
            return ""
        old, new = self._releases()
        incident = f", incident {ctx.incident}" if ctx.incident else ""
        title = f"Revert {self.app} to {new} (from {old}): runbook-bot run {ctx.execution_id}"
        try:
            pulls = infrastructure(ctx).pull_requests(self.environment)
            if pulls is None:
                raise InvalidInput("gitops.pull_request is no longer configured")
            wanted = ctx.env.gitops.pull_request
            link = (
                wanted.run_link.replace("{run}", ctx.execution_id)
                if wanted is not None and wanted.run_link
                else f"`{ctx.execution_id}` (`runs.show {ctx.execution_id}`)"
            )
            body = (
                f"runbook-bot rolled {self.app} back in {self.environment} from {old} to {new} "
                f"and suspended its automated sync{incident}.\n\n"
                f"Merging this branch into `{self.base}` makes Git match the cluster; automated "
                "sync resumes by itself once the reconciler syncs the merge.\n\n"
                f"Run: {link}\n" + (f"Incident: {ctx.incident}\n" if ctx.incident else "")
            )
            pull = pulls.open_pull_request(
                self.pull_request,
                head=branch,
                base=self.base,
                title=redact_text(title + incident),
                body=redact_text(body),
            )
        except Exception as exc:  # the branch is pushed: a person can open it by hand
            why = exc.message if isinstance(exc, RunbookError) else str(exc)
            if isinstance(exc, RunbookError) and exc.hint:
                why += f" ({exc.hint})"
            return redact_text(
                f"pull request NOT opened in {self.pull_request}: {why}; branch {branch} is "
                f"pushed: open one into {self.base} by hand"
            )
        verb = "already open" if pull.existed else "opened"
        return f"pull request {verb}: {pull.url} (#{pull.number}, {branch} into {self.base})"

    def run(self, ctx: RunContext) -> str | None:
        branch = revert_branch(ctx.execution_id)
        git = infrastructure(ctx).git(self.environment)
        head = git.branch_head(self.repo_url, branch)
        if head is not None:
            pushed = f"branch {branch} already pushed ({head[:12]})"
        else:
            pushed = self._push(ctx, branch)
        pull = self._open_pull_request(ctx, branch)
        if pull:
            ctx.note(pull)
        return pushed

    def _push(self, ctx: RunContext, branch: str) -> str:
        git = infrastructure(ctx).git(self.environment)
        done = git.revert_images(
            self.repo_url,
            base=self.base,
            branch=branch,
            path=self.path,
            images=self.images,
            message=(
                f"Revert {self.app} to "
                f"{short_images({new: new for new in self.images.values()})} "
                f"({ctx.execution_id})\n\n"
                f"runbook-bot rolled {self.app} back in {self.environment}; merge this into "
                f"{self.base} so Git matches the cluster and automated sync resumes."
            ),
        )
        return (
            f"pushed branch {branch} ({done.commit[:12]}) to {self.repo_url}, changing "
            f"{', '.join(done.files)}: merge it into {self.base} to end the suspension"
        )

    def verify(self, ctx: RunContext) -> bool:
        git = infrastructure(ctx).git(self.environment)
        return git.branch_head(self.repo_url, revert_branch(ctx.execution_id)) is not None

    def undo(self, ctx: RunContext) -> str | None:
        branch = revert_branch(ctx.execution_id)
        infrastructure(ctx).git(self.environment).delete_branch(self.repo_url, branch)
        closes = " (GitHub closes its pull request with it)" if self.pull_request else ""
        return f"deleted branch {branch}{closes}"


@dataclass
class GitOpsPlan:
    """What a rollback adds for owned deployments, collected across regions."""

    suspends: list[SuspendSync] = field(default_factory=list)
    reverts: dict[tuple[str, str, str], RevertInGit] = field(default_factory=dict)
    #: Repositories and paths that declare the images nowhere the bot looks (break-glass).
    unrevertable: set[tuple[str, str, str]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def _pending_revert(app: GitOpsApp) -> str | None:
    """Why Git does not declare the live image when an earlier run's suspension still holds:
    its revert branch is not merged yet (Git still names the release that run left)."""
    if not app.suspended:
        return None
    try:
        run = str(json.loads(app.suspended).get("run") or "")
    except (ValueError, AttributeError):
        return None
    if not run:
        return None
    return (
        f"{app.owner.words()} is still suspended by {run}, whose revert "
        f"{BRANCH_PREFIX}{run} is not merged yet (Git still declares the release {run} rolled "
        f"back from); merge it into {app.branch} first (sync then resumes), then roll back again"
    )


def plan_owned(
    ctx: PlanContext,
    kube: KubeOps,
    found: GitOpsPlan,
    *,
    app: GitOpsApp,
    environment: str,
    region: str,
    namespace: str,
    deployment: str,
    from_images: dict[str, str],
    to_images: dict[str, str],
    limit: float,
) -> None:
    """Add the suspension (this region's application) and the revert (once per repository
    and path) for a rollback of an owned deployment, or refuse (module docstring)."""
    words = owned_words(app, change="rollback")
    found.notes.append(f"{region}: {deployment} is {words}")
    if app.automated and app.owner.tool == "flux-helm":
        # The watch lists Applications and Kustomizations, and a HelmRelease's chart source is
        # not read: a suspension would never be given back nor paged at its limit.
        why = unfollowed(app)
        if not ctx.break_glass:
            raise Refused(
                f"{why}; the rollback alone would be reverted at the next sync ({app.interval})",
                hint=f"suspend it by hand (flux suspend helmrelease {app.owner.name} -n "
                f"{app.owner.namespace}) and set the chart's values in Git, or "
                "--break-glass --reason TEXT --incident ID to roll back anyway",
            )
        found.notes.append(
            f"{region}: WARNING (break-glass): {why}: the reconciler WILL revert this rollback "
            f"at its next sync ({app.interval}) unless Git is changed first"
        )
        return
    if app.automated:
        if not kube.may_suspend(app.owner):
            where = f"{app.owner.words()} ({environment}, {region})"
            if not ctx.break_glass:
                raise Refused(
                    f"runbook-bot may not suspend {where}: RBAC does not let it patch the "
                    "application or list its kind in all namespaces (the watch that gives sync "
                    f"back needs both), and the rollback alone would be reverted at the next sync "
                    f"({app.interval})",
                    hint="grant the bot `patch` on the application and `list` on its kind "
                    "(docs/gitops.md), or "
                    "--break-glass --reason TEXT --incident ID to roll back anyway",
                )
            found.notes.append(
                f"{region}: WARNING (break-glass): runbook-bot may not suspend {where}: the "
                f"reconciler WILL revert this rollback at its next sync ({app.interval}) "
                "unless the revert is merged first"
            )
        else:
            found.suspends.append(
                SuspendSync(
                    environment=environment,
                    region=region,
                    namespace=namespace,
                    tool=app.owner.tool,
                    app=app.owner.name,
                    app_namespace=app.owner.namespace,
                    deployment=deployment,
                    automated=app.automated_policy,
                    images=to_images,
                    limit=limit,
                )
            )
    else:
        found.notes.append(
            f"{region}: automated sync of {app.owner.name} is already off; nothing to suspend "
            "(whoever turned it off turns it back on)"
        )
    changes = {
        old: to_images[container]
        for container, old in from_images.items()
        if container in to_images and to_images[container] != old
    }
    if not changes:
        return
    git = infrastructure(ctx).git(environment)
    # Argo CD's default targetRevision is HEAD: the revert goes to the branch HEAD names.
    base = git.default_branch(app.repo_url) if app.branch == "HEAD" else app.branch
    key = (app.repo_url, base, app.path)
    if key in found.reverts or key in found.unrevertable:
        return
    located = git.locate_images(app.repo_url, base=base, path=app.path, images=changes)
    if located.missing:
        found.unrevertable.add(key)
        pending = _pending_revert(app)
        why = (
            pending
            or located.problem
            or (
                f"no file under {app.path!r} of {app.repo_url} ({base}) declares "
                f"{short_images({m: m for m in located.missing})}: looked for {located.looked}"
            )
        )
        if not ctx.break_glass:
            raise Refused(
                f"runbook-bot cannot revert {app.owner.words()} in Git: {why}; without the "
                "revert the suspension would only end when someone changes Git by hand",
                hint=(
                    "merge the pending revert branch first"
                    if pending
                    else "declare the image where the bot looks (docs/gitops.md)"
                )
                + ", or --break-glass --reason TEXT --incident ID to roll back and suspend anyway",
            )
        found.notes.append(
            f"WARNING (break-glass): no revert branch for {app.owner.words()}: {why}; set Git "
            "to the rolled-back release by hand (sync stays suspended until Git renders it)"
        )
        return
    wanted = ctx.env.gitops.pull_request
    repository = wanted.repositories.get(app.repo_url) if wanted is not None else None
    if wanted is not None and repository is None:
        found.notes.append(
            f"no pull request for {app.owner.words()}: its repository {app.repo_url} is not in "
            "gitops.pull_request.repositories; the branch is pushed, open one by hand"
        )
    found.reverts[key] = RevertInGit(
        environment=environment,
        app=app.owner.name,
        repo_url=app.repo_url,
        base=base,
        path=app.path,
        images=changes,
        sites=tuple(located.found[old] for old in sorted(changes)),
        pull_request=repository,
    )


# -- the watch on the leader ---------------------------------------------------------------

LEASE_NAME = "gitops"
GITOPS = Actor("gitops", "GitOps watch", Origin.SCHEDULER)
#: ``page(summary, dedup_key, details)``: PagerDuty's Events API.
Page = Callable[[str, str, dict[str, Any]], None]


@dataclass
class GitOpsTick:
    leader: bool = False
    resumed: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)


class GitOpsWatch:
    """Give automated sync back once Git renders the rolled-back release; page once when the
    suspension's limit passes first. One replica at a time (the ``gitops`` leader lease)."""

    def __init__(
        self,
        engine: Engine,
        *,
        page: Page | None = None,
        owner: str | None = None,
        lease: LeaderLease | None = None,
    ) -> None:
        self.engine = engine
        self.page = page
        self.clock = engine.clock
        self.store = engine.store
        self.lease = lease or LeaderLease(
            engine.store, LEASE_NAME, owner or engine.owner, engine.clock
        )

    def tick(self) -> GitOpsTick:
        done = GitOpsTick()
        if self.lease.acquire() is None:
            return done
        done.leader = True
        adapters = self.engine.adapters
        if not isinstance(adapters, Infrastructure):
            return done
        seen: set[str] = set()
        for name, env in self.engine.config.environments.environments.items():
            for region, context in env.kube_contexts.items():
                if context in seen:
                    continue  # one cluster may serve several environments
                seen.add(context)
                try:
                    kube = adapters.kube(name, region)
                    apps = kube.gitops_apps()
                except Exception as exc:  # one unreachable cluster must not stop the others
                    _log.warning("gitops watch: cannot list applications in %s: %s", context, exc)
                    continue
                for app in apps:
                    if app.suspended:
                        self._follow(adapters, kube, app, done)
        return done

    def _follow(
        self, adapters: Infrastructure, kube: KubeOps, app: GitOpsApp, done: GitOpsTick
    ) -> None:
        try:
            doc = json.loads(app.suspended or "")
            run, environment = str(doc["run"]), str(doc["environment"])
            wanted: dict[str, str] = dict(doc["images"])
            expires_at = float(doc["expires_at"])
        except (ValueError, KeyError, TypeError):
            return  # not ours, or damaged: a person decides
        label = f"{app.owner.name} ({environment}, {doc.get('region', '?')})"
        matches = False
        if app.source_revision:
            try:
                matches = adapters.git(environment).renders(
                    app.repo_url,
                    app.source_revision,
                    app.path,
                    deployment=str(doc["deployment"]),
                    images=wanted,
                )
            except Exception as exc:
                _log.warning("gitops watch: cannot read %s: %s", app.repo_url, exc)
        if matches:
            kube.resume_gitops(app.owner, doc.get("automated"))
            text = (
                f"automated sync of {app.owner.words()} in {environment} "
                f"({doc.get('region', '?')}) restored: Git ({app.branch} at "
                f"{app.source_revision[:12] if app.source_revision else '?'}) renders "
                f"{short_images(wanted)}, the release run {run} rolled back to"
            )
            self._record("gitops.resumed", app, doc, text)
            done.resumed.append(label)
            return
        if self.clock.now() < expires_at:
            done.waiting.append(label)
            return
        key = f"gitops:expired:{run}:{app.owner.name}"
        if not self.store.kv_insert(key, {"at": self.clock.now()}):
            return  # paged already (this region's twin, or an earlier tick)
        text = (
            f"automated sync of {app.owner.words()} in {environment} is still suspended after "
            f"its limit ({doc.get('expires')}): Git ({app.branch}) does not render "
            f"{short_images(wanted)} yet; merge {doc.get('branch')} into {app.branch} (or fix "
            "Git), then sync comes back by itself. It stays suspended."
        )
        if self.page is not None:
            try:
                self.page(
                    f"runbook-bot: {text}",
                    f"runbook-bot:gitops:{app.owner.name}:{run}",
                    {"run": run, "application": app.owner.name, "branch": doc.get("branch")},
                )
            except Exception as exc:
                _log.warning("gitops watch: the page failed: %s", exc)
        self._record("gitops.expired", app, doc, text)
        done.expired.append(label)

    def _record(self, action: str, app: GitOpsApp, doc: dict[str, Any], text: str) -> None:
        environment = str(doc["environment"])
        self.engine.audit.record(
            action,
            actor=GITOPS,
            outcome="ok" if action == "gitops.resumed" else "paged",
            execution_id=str(doc["run"]),
            target={"environment": environment, "application": app.owner.name},
            detail={
                "region": doc.get("region"),
                "tool": app.owner.tool,
                "revision": app.source_revision,
                "branch": doc.get("branch"),
                "text": text,
            },
        )
        # On the run: its card's thread and its incident's timeline.
        self.store.append_event(str(doc["run"]), action, {"text": text}, self.clock.now())
        channel = self.engine.config.policy.slack.approvals_channel(environment)
        icon = ":white_check_mark:" if action == "gitops.resumed" else ":rotating_light:"
        self.store.append_event(
            None, "notice", {"channel": channel, "text": f"{icon} {text}"}, self.clock.now()
        )
