"""The GitOps world on the test clusters: production's ``api`` owned by Argo CD, staging's by
Flux (as ``python3 dev.py serve`` seeds them), with the sandbox's reconciler on a clock the
test moves (``sandbox/gitops.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from runbooks.engine.config.environments import PullRequestConfig
from runbooks.engine.config.loader import Config
from sandbox.gitops import GitOpsApp, GitOpsReconciler, Layout, git, seed_gitops
from tests.conftest import KubeSandbox
from tests.support.waiting import wait_for


@dataclass
class GitOpsWorld:
    kube: KubeSandbox
    apps: dict[str, GitOpsApp]
    reconciler: GitOpsReconciler

    def head(self, app: str, branch: str = "main") -> str:
        return git("--git-dir", str(self.apps[app].repo), "rev-parse", branch).strip()

    def passes(self, region: str, app: str) -> int:
        return self.reconciler.passes.get((region, app), 0)

    def next_pass(self, region: str, app: str, advance: Callable[[float], None]) -> None:
        """Move the clock one interval and wait until the reconciler has been through it."""
        before = self.passes(region, app)
        advance(self.reconciler.interval)
        wait_for(lambda: self.passes(region, app) > before, what=f"a reconciler pass of {app}")


@contextlib.contextmanager
def gitops_world(
    kube: KubeSandbox,
    directory: Path,
    *,
    clock: Callable[[], float],
    running: bool = True,
    interval: float = 3.0,
    layouts: dict[str, Layout] | None = None,
) -> Iterator[GitOpsWorld]:
    """Seed the owners into ``kube``'s clusters; the reconciler runs on a thread (it ticks
    every 20 ms of real time, reconciling each app every ``interval`` of ``clock``) unless
    ``running`` is false (the test calls ``tick``); ``layouts`` says how an application's
    repository declares the image (``sandbox.gitops.Layout``; plain manifests otherwise)."""
    clusters = {region: kube.cluster(region) for region in kube.emulators}
    apps = {
        app.name: app
        for app in seed_gitops(clusters, directory, interval=interval, layouts=layouts)
    }
    reconciler = GitOpsReconciler(clusters, interval=interval, clock=clock, pace=0.02)
    if running:
        reconciler.start()
    try:
        yield GitOpsWorld(kube, apps, reconciler)
    finally:
        reconciler.stop()


def with_pull_requests(config: Config, pull_request: PullRequestConfig, *names: str) -> Config:
    """``config`` with ``gitops.pull_request`` set in the environments ``names``."""
    files = config.environments
    changed = {
        name: files.environments[name].model_copy(
            update={
                "gitops": files.environments[name].gitops.model_copy(
                    update={"pull_request": pull_request}
                )
            }
        )
        for name in names
    }
    environments = files.model_copy(update={"environments": {**files.environments, **changed}})
    return Config(config.directory, environments, config.policy, config.schedules, config.alerts)
