"""The revert in Git where the manifests do not carry the image literally: a kustomization's
``images:`` entry, a Helm values file, and a repository that declares it nowhere the bot looks
(refused at plan time, nothing pushed). Real repositories (``sandbox.gitops`` layouts), the
Kubernetes emulators, the sandbox's reconciler (kustomize builds by ``kubectl kustomize``).

Oracles: kubectl (images, sync), git (the branch's one commit, the merged head), kustomize
itself (what the branch renders)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbooks.engine.clock import FakeClock
from runbooks.engine.config.loader import Config
from runbooks.engine.engine import Engine
from runbooks.engine.errors import Refused
from runbooks.engine.models import State
from runbooks.kit.gitops import GitOpsWatch
from sandbox.gitops import Layout, git, merge, rendered_images
from tests.conftest import KubeSandbox
from tests.runbooks.conftest import live_engine
from tests.support.gitops import GitOpsWorld, gitops_world
from tests.support.kube_runs import actions, image, run
from tests.support.people import ALICE

NEW = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
def layouts() -> dict[str, Layout]:
    return {}


@pytest.fixture
def world(
    kube: KubeSandbox, tmp_path: Path, clock: FakeClock, layouts: dict[str, Layout]
) -> Iterator[GitOpsWorld]:
    with gitops_world(kube, tmp_path / "git", clock=clock.now, layouts=layouts) as running:
        yield running


@pytest.fixture
def engine(
    world: GitOpsWorld,
    *,
    kube: KubeSandbox,
    sandbox_config: Config,
    tmp_path: Path,
    clock: FakeClock,
    health: Any,
) -> Iterator[Engine]:
    with live_engine(
        sandbox_config, tmp_path / "engine", clock=clock, kubeconfig=str(kube.kubeconfig)
    ) as built:
        yield built


def _changed_lines(repo: Path, branch: str) -> list[str]:
    diff = git("--git-dir", str(repo), "diff", "--unified=0", f"main...{branch}")
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _sync(kube: KubeSandbox, owner: str, region: str = "us-east-1") -> Any:
    if owner == "argo":
        kind, name, namespace = "applications.argoproj.io", "api-production", "argocd"
    else:
        kind, name, namespace = "kustomization", "api-staging", "flux-system"
    done = kube.kubectl("get", kind, name, "-n", namespace, "-o", "json", region=region)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)["spec"]
    return spec.get("syncPolicy", {}).get("automated") if owner == "argo" else spec["suspend"]


@pytest.mark.parametrize("layouts", [{"api-staging": "kustomize"}])
def test_a_kustomization_gets_its_images_entry_reverted_and_sync_comes_back_after_merge(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine, clock: FakeClock
) -> None:
    prepared = engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
    (revert,) = [s for s in prepared.plan.steps if s["kind"] == "gitops.revert"]
    assert (
        "(kustomization.yaml: `images:` entry "
        "`123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api` (newTag))"
    ) in revert["description"]
    done = run(engine, "rollback", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    branch = f"runbook-bot/revert-{done.id}"
    repo = world.apps["api-staging"].repo
    assert _changed_lines(repo, branch) == ["-    newTag: 1.4.2", "+    newTag: 1.4.1"]
    assert rendered_images(repo, branch)["api-deployment"] == {"api": NEW}  # kustomize's word
    for _ in range(3):
        world.next_pass("us-east-1", "api-staging", clock.advance)
        assert image(kube, "us-east-1", "staging") == "app-api:1.4.1"
    watch = GitOpsWatch(engine)
    assert watch.tick().resumed == []
    merge(repo, branch)
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert watch.tick().resumed == ["api-staging (staging, us-east-1)"]
    assert _sync(kube, "flux") is False
    # Sync is on and the reconciler builds the kustomization: the cluster keeps 1.4.1.
    world.next_pass("us-east-1", "api-staging", clock.advance)
    assert image(kube, "us-east-1", "staging") == "app-api:1.4.1"
    assert "gitops.resumed" in actions(engine, done.id)


@pytest.mark.parametrize("layouts", [{"api-production": "helm"}])
def test_a_helm_values_file_gets_its_image_tag_reverted_and_sync_comes_back_after_merge(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine, clock: FakeClock
) -> None:
    done = run(engine, "rollback", environment="production")
    assert done.state == State.SUCCEEDED, done.error
    (revert,) = [s for s in done.plan.steps if s["kind"] == "gitops.revert"]
    assert "(values.yaml: image.tag)" in revert["description"]
    branch = f"runbook-bot/revert-{done.id}"
    repo = world.apps["api-production"].repo
    assert _changed_lines(repo, branch) == ['-  tag: "1.4.2"', '+  tag: "1.4.1"']
    values = yaml.safe_load(git("--git-dir", str(repo), "show", f"{branch}:values.yaml"))
    assert f"{values['image']['repository']}:{values['image']['tag']}" == NEW
    watch = GitOpsWatch(engine)
    assert watch.tick().resumed == []
    merge(repo, branch)
    world.next_pass("us-east-1", "api-production", clock.advance)
    world.next_pass("us-west-2", "api-production", clock.advance)
    assert len(watch.tick().resumed) == 2
    for region in ("us-east-1", "us-west-2"):
        assert _sync(kube, "argo", region) == {"prune": True, "selfHeal": True}
        assert image(kube, region) == "app-api:1.4.1"


@pytest.mark.parametrize("layouts", [{"api-staging": "appversion"}])
def test_an_image_declared_nowhere_the_bot_looks_is_refused_at_plan_time(
    kube: KubeSandbox, world: GitOpsWorld, engine: Engine
) -> None:
    repo = world.apps["api-staging"].repo
    with pytest.raises(Refused) as refused:
        engine.prepare("rollback", {"environment": "staging"}, actor=ALICE)
    message = refused.value.message
    assert message.startswith(
        "runbook-bot cannot revert Flux Kustomization `api-staging` (namespace flux-system) in "
        f"Git: no file under './' of {repo.as_uri()} (main) declares app-api:1.4.2: looked for "
        "a kustomization.yaml `images:` entry"
    ), message
    assert "a Helm values file's image.repository/image.tag" in message
    assert engine.list() == []
    assert git("--git-dir", str(repo), "branch", "--list", "runbook-bot/*").strip() == ""
    assert _sync(kube, "flux") is False  # nothing suspended
    assert image(kube, "us-east-1", "staging") == "app-api:1.4.2"
    # Break-glass: the rollback and the suspension, no revert branch, and a warning.
    prepared = engine.prepare("rollback", {"environment": "staging"}, actor=ALICE, break_glass=True)
    kinds = [s["kind"] for s in prepared.plan.steps]
    assert "gitops.suspend" in kinds and "gitops.revert" not in kinds
    assert any(
        n.startswith("WARNING (break-glass): no revert branch for Flux Kustomization")
        and "set Git to the rolled-back release by hand" in n
        for n in prepared.plan.notes
    ), prepared.plan.notes
