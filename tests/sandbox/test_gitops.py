"""The sandbox's GitOps: Argo CD and Flux objects as kubectl sees them, real Git repositories,
a reconciler that applies the tracked branch only while automated sync is on."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from sandbox.gitops import Layout, git
from tests.conftest import KubeSandbox
from tests.support.gitops import gitops_world

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:{}"


def _image(kube: KubeSandbox, namespace: str, region: str = "us-east-1") -> str:
    done = kube.kubectl(
        "get",
        "deployment/api-deployment",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
        region=region,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.rsplit("/", 1)[-1]


def _drift(kube: KubeSandbox, namespace: str, version: str) -> None:
    done = kube.kubectl(
        "set", "image", "deployment/api-deployment", f"api={IMAGE.format(version)}", "-n", namespace
    )
    assert done.returncode == 0, done.stderr
    assert _image(kube, namespace) == f"app-api:{version}"


def test_kubectl_lists_the_owners_and_git_holds_the_history(
    kube: KubeSandbox, tmp_path: Path
) -> None:
    with gitops_world(kube, tmp_path / "git", clock=lambda: 0.0, running=False) as world:
        listed = kube.kubectl("get", "applications", "-A")
        assert listed.returncode == 0, listed.stderr
        assert "argocd" in listed.stdout and "api-production" in listed.stdout
        for region in ("us-east-1", "us-west-2"):  # one Application per production cluster
            assert (
                "api-production" in kube.kubectl("get", "app", "-n", "argocd", region=region).stdout
            )
        flux = kube.kubectl("get", "kustomizations.kustomize.toolkit.fluxcd.io", "-A")
        assert "api-staging" in flux.stdout, flux.stderr
        log = git("--git-dir", str(world.apps["api-production"].repo), "log", "--format=%s", "main")
        assert log.split("\n")[:3] == ["deploy 1.4.2", "deploy 1.4.1", "deploy 1.4.0"]
        labels = json.loads(
            kube.kubectl("get", "deploy", "api-deployment", "-n", "production", "-o", "json").stdout
        )["metadata"]
        assert labels["labels"]["app.kubernetes.io/instance"] == "api-production"
        assert labels["annotations"]["argocd.argoproj.io/tracking-id"] == (
            "api-production:apps/Deployment:production/api-deployment"
        )


def test_the_reconciler_reverts_drift_only_while_automated(
    kube: KubeSandbox, tmp_path: Path
) -> None:
    now = [0.0]
    with gitops_world(kube, tmp_path / "git", clock=lambda: now[0], running=False) as world:
        world.reconciler.tick()  # the first pass: everything in sync
        _drift(kube, "production", "1.4.0")
        now[0] += 1.0
        world.reconciler.tick()  # not due yet: the interval is 3 s of the clock
        assert _image(kube, "production") == "app-api:1.4.0"
        now[0] += 3.0
        world.reconciler.tick()
        assert _image(kube, "production") == "app-api:1.4.2"  # reverted to Git
        status = json.loads(
            kube.kubectl("get", "app", "api-production", "-n", "argocd", "-o", "json").stdout
        )["status"]
        assert status["sync"] == {"status": "Synced", "revision": world.head("api-production")}

        # Automated sync off (kubectl patch): drift stays, the comparison still refreshes.
        patched = kube.kubectl(
            "patch",
            "app",
            "api-production",
            "-n",
            "argocd",
            "--type",
            "json",
            "-p",
            '[{"op": "remove", "path": "/spec/syncPolicy/automated"}]',
        )
        assert patched.returncode == 0, patched.stderr
        _drift(kube, "production", "1.4.0")
        now[0] += 3.0
        world.reconciler.tick()
        assert _image(kube, "production") == "app-api:1.4.0"
        status = json.loads(
            kube.kubectl("get", "app", "api-production", "-n", "argocd", "-o", "json").stdout
        )["status"]
        assert status["sync"]["status"] == "OutOfSync"

        # Flux: suspend true keeps the drift; the source still follows the branch.
        _drift(kube, "staging", "1.4.0")
        suspended = kube.kubectl(
            "patch",
            "kustomization",
            "api-staging",
            "-n",
            "flux-system",
            "--type",
            "merge",
            "-p",
            '{"spec": {"suspend": true}}',
        )
        assert suspended.returncode == 0, suspended.stderr
        now[0] += 3.0
        world.reconciler.tick()
        assert _image(kube, "staging") == "app-api:1.4.0"
        source = json.loads(
            kube.kubectl(
                "get", "gitrepository", "api-staging", "-n", "flux-system", "-o", "json"
            ).stdout
        )
        assert source["status"]["artifact"]["revision"] == f"main@sha1:{world.head('api-staging')}"
        kube.kubectl(
            "patch",
            "kustomization",
            "api-staging",
            "-n",
            "flux-system",
            "--type",
            "merge",
            "-p",
            '{"spec": {"suspend": false}}',
        )
        now[0] += 3.0
        world.reconciler.tick()
        assert _image(kube, "staging") == "app-api:1.4.2"


def _can_i(kube: KubeSandbox, verb: str) -> bool:
    """A SelfSubjectAccessReview in JSON, over plain HTTP (kubectl sends protobuf)."""
    request = urllib.request.Request(  # noqa: S310 - the local emulator
        kube.emulators["us-east-1"].url + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        data=json.dumps(
            {
                "spec": {
                    "resourceAttributes": {
                        "group": "argoproj.io",
                        "resource": "applications",
                        "verb": verb,
                        "namespace": "argocd",
                    }
                }
            }
        ).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local
        return bool(json.loads(response.read())["status"]["allowed"])


def test_forbidden_rules_answer_403_and_access_reviews_say_no(
    kube: KubeSandbox, tmp_path: Path
) -> None:
    with gitops_world(kube, tmp_path / "git", clock=lambda: 0.0, running=False):
        assert _can_i(kube, "patch")
        kube.hook(
            "/_sandbox/forbid",
            {"rules": [{"group": "argoproj.io", "resource": "applications", "verb": "patch"}]},
        )
        assert not _can_i(kube, "patch")
        assert _can_i(kube, "get")
        patched = kube.kubectl(
            "patch",
            "app",
            "api-production",
            "-n",
            "argocd",
            "--type",
            "merge",
            "-p",
            '{"spec": {"syncPolicy": null}}',
        )
        assert patched.returncode != 0
        assert "cannot patch resource" in patched.stderr
        assert kube.kubectl("get", "app", "api-production", "-n", "argocd").returncode == 0


def test_a_kustomization_is_built_by_kustomize_and_a_chart_is_not_applied(
    kube: KubeSandbox, tmp_path: Path
) -> None:
    """Staging's repository holds a kustomization (its base has no tag: only the ``images:``
    entry says 1.4.2), production's a Helm chart (not rendered by the sandbox)."""
    now = [0.0]
    layouts: dict[str, Layout] = {"api-staging": "kustomize", "api-production": "helm"}
    with gitops_world(
        kube, tmp_path / "git", clock=lambda: now[0], running=False, layouts=layouts
    ) as world:
        world.reconciler.tick()
        _drift(kube, "staging", "1.4.0")
        _drift(kube, "production", "1.4.0")
        now[0] += 3.0
        world.reconciler.tick()
        assert _image(kube, "staging") == "app-api:1.4.2"  # what kustomize renders
        assert _image(kube, "production") == "app-api:1.4.0"  # a chart: refreshed, not applied
        assert world.passes("us-east-1", "api-production") == 2
        status = json.loads(
            kube.kubectl("get", "app", "api-production", "-n", "argocd", "-o", "json").stdout
        )["status"]
        assert status["sync"]["revision"] == world.head("api-production")
