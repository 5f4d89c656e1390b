"""Scenario tests: rollback and scaling against the emulated clusters, asserting on effects."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from runbooks.adapters.kube import KubeAdapter, make_api_client
from runbooks.engine.errors import InvalidInput, NeedsPerson, Refused
from runbooks.engine.models import Actor, Origin, State
from runbooks.interfaces import RolloutFailed
from sandbox.kube.emulator import BY_PATH, Cluster, KubeEmulator, kubeconfig
from sandbox.kube.seed import seed
from tests.support.kube_runs import DEPLOY, actions, image, run
from tests.support.people import ALICE

SERVICES = BY_PATH["", "v1", "services"]


def test_rollback_reaches_every_region_and_waits_for_health(kube, kube_engine) -> None:
    done = run(kube_engine, "rollback", environment="production")
    assert done.state == State.SUCCEEDED, done.error
    assert [s.description.split(": ")[0] for s in done.steps] == [
        "roll back deployment api-deployment in production (us-east-1)",
        "roll back deployment api-deployment in production (us-west-2)",
        # production's rollback gate (config/environments.yaml) watches the signals after
        "watch api in production (us-east-1, us-west-2) for 3.0s in Prometheus",
    ]
    assert "us-west-2: healthy for 3.0s" in " ".join(done.steps[2].output)
    for region in ("us-east-1", "us-west-2"):
        assert image(kube, region) == "app-api:1.4.1"
        deploy = kube.cluster(region).get(DEPLOY, "production", "api-deployment")
        assert deploy["status"]["availableReplicas"] == 3
    assert "rollout complete, 3/3 available" in " ".join(done.steps[0].output)
    assert "3 ready endpoints" in " ".join(done.steps[0].output)


def test_rollback_to_an_explicit_revision_in_one_region(kube, kube_engine) -> None:
    done = run(kube_engine, "rollback", environment="production", to_revision=1, region="us-west-2")
    assert done.state == State.SUCCEEDED, done.error
    assert image(kube, "us-west-2") == "app-api:1.4.0"
    assert image(kube, "us-east-1") == "app-api:1.4.2"  # untouched
    history = kube.kubectl(
        "rollout", "history", "deployment/api-deployment", "-n", "production", region="us-west-2"
    )
    assert [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()] == [
        "2",
        "3",
        "4",
    ]


def test_refusals_name_what_is_wrong(kube, kube_engine) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"--to-revision 9: api-deployment in production "
        r"\(us-east-1\) has revisions 1, 2, 3",
    ):
        kube_engine.prepare(
            "rollback", {"environment": "production", "to_revision": "9"}, actor=ALICE
        )
    with pytest.raises(InvalidInput, match="unknown service 'payments' in production; known: api"):
        kube_engine.prepare(
            "rollback", {"environment": "production", "service": "payments"}, actor=ALICE
        )
    with pytest.raises(InvalidInput, match="unknown region 'eu-west-1' for production"):
        kube_engine.prepare(
            "rollback", {"environment": "production", "region": "eu-west-1"}, actor=ALICE
        )
    deploy = kube.cluster().get(DEPLOY, "production", "api-deployment")
    deploy["spec"]["paused"] = True
    kube.cluster().replace(DEPLOY, "production", "api-deployment", deploy)
    with pytest.raises(Refused, match="is paused"):
        kube_engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    assert kube_engine.list() == []


def test_target_that_never_becomes_ready_fails_clearly_and_is_compensated(
    kube, kube_engine
) -> None:
    for region in ("us-east-1",):
        deploy = kube.cluster(region).get(DEPLOY, "production", "api-deployment")
        deploy["spec"]["progressDeadlineSeconds"] = 1
        kube.cluster(region).replace(DEPLOY, "production", "api-deployment", deploy)
    kube.hook(
        "/_sandbox/broken",
        {"images": ["123456789012.dkr.ecr.us-east-1.amazonaws.com/app-api:1.4.1"]},
    )
    done = run(kube_engine, "rollback", environment="production", region="us-east-1")
    assert done.state == State.COMPENSATED
    assert "exceeded its progress deadline" in (done.steps[0].error or "")
    assert "app-api:1.4.1 is not becoming ready" in (done.steps[0].error or "")
    # ... and why: the kubelet's waiting reason, not only that the image is not ready.
    assert "container api ImagePullBackOff" in (done.steps[0].error or ""), done.steps[0].error
    assert image(kube, "us-east-1") == "app-api:1.4.2"  # compensation restored the release
    recorded = actions(kube_engine, done.id)
    assert recorded[-6:] == [
        "step.failed",
        "execution.failed",
        "execution.compensating",
        "step.undoing",
        "step.undone",
        "execution.compensated",
    ]
    failed = [r for r in kube_engine.audit.export() if r["action"] == "step.failed"]
    assert "exceeded its progress deadline" in json.dumps(failed)


def test_blue_green_rollback_switches_the_service_to_the_other_colour(kube, kube_engine) -> None:
    cluster = kube.cluster("us-east-1")
    assert cluster.get(SERVICES, "staging", "web-service")["spec"]["selector"]["color"] == "green"
    done = run(kube_engine, "rollback", environment="staging", service="web")
    assert done.state == State.SUCCEEDED, done.error
    assert done.steps[0].description == (
        "switch service web-service in staging (us-east-1) from green (app-api:1.4.2) to "
        "blue (app-api:1.4.1)"
    )
    assert cluster.get(SERVICES, "staging", "web-service")["spec"]["selector"]["color"] == "blue"
    endpoints = cluster.get(BY_PATH["", "v1", "endpoints"], "staging", "web-service")
    pods = [a["targetRef"]["name"] for a in endpoints["subsets"][0]["addresses"]]
    assert pods and all(p.startswith("web-blue-") for p in pods)


def test_conflicts_during_the_patch_are_retried(kube, kube_engine) -> None:
    kube.hook("/_sandbox/requests", {"clear": True})
    kube.hook("/_sandbox/conflicts", {"count": 2})
    done = run(kube_engine, "rollback", environment="development")
    assert done.state == State.SUCCEEDED, done.error
    assert image(kube, "us-east-1", "development") == "app-api:1.4.1"
    requests = kube.hook("/_sandbox/requests", {})["requests"]
    patches = [
        r
        for r in requests
        if r[0] == "PATCH" and r[1].endswith("/namespaces/development/deployments/api-deployment")
    ]
    assert len(patches) == 3  # two 409s, then the write that landed


def test_dry_run_changes_nothing(kube, kube_engine, aws) -> None:
    # Scaling reads which region serves production from DNS (the sandbox's Route53).
    def versions() -> dict[str, str]:
        cluster = kube.cluster("us-east-1")
        with cluster.lock:
            return {
                "/".join(k): o["metadata"]["resourceVersion"] for k, o in cluster.objects.items()
            }

    before = versions()
    prepared = kube_engine.prepare("rollback", {"environment": "production"}, actor=ALICE)
    kube_engine.dry_run(prepared, actor=ALICE)
    prepared = kube_engine.prepare(
        "scale.pods", {"environment": "production", "service": "api", "replicas": 6}, actor=ALICE
    )
    kube_engine.dry_run(prepared, actor=ALICE)
    assert versions() == before
    assert kube_engine.list() == []


def test_runbook_rollback_equals_kubectl_rollout_undo_on_a_twin(kube, kube_engine) -> None:
    """us-east-1 and us-west-2 start identical: one rolls back via the runbook, the other via
    kubectl; the resulting pod templates and revision annotations must be equal."""
    done = run(kube_engine, "rollback", environment="production", region="us-east-1")
    assert done.state == State.SUCCEEDED, done.error
    undo = kube.kubectl(
        "rollout", "undo", "deployment/api-deployment", "-n", "production", region="us-west-2"
    )
    assert undo.returncode == 0, undo.stderr
    status = kube.kubectl(
        "rollout",
        "status",
        "deployment/api-deployment",
        "-n",
        "production",
        "--timeout=30s",
        region="us-west-2",
    )
    assert status.returncode == 0
    east = kube.cluster("us-east-1").get(DEPLOY, "production", "api-deployment")
    west = kube.cluster("us-west-2").get(DEPLOY, "production", "api-deployment")
    assert east["spec"]["template"] == west["spec"]["template"]
    assert east["metadata"]["annotations"] == west["metadata"]["annotations"]


def test_scale_within_bounds_and_refusals_outside(kube, kube_engine, aws) -> None:
    # Scaling reads which region serves production from DNS (the sandbox's Route53).
    done = run(kube_engine, "scale.pods", environment="production", service="api", replicas=6)
    assert done.state == State.SUCCEEDED, done.error
    deploy = kube.cluster("us-east-1").get(DEPLOY, "production", "api-deployment")
    assert deploy["spec"]["replicas"] == 6 and deploy["status"]["readyReplicas"] == 6
    assert (
        kube.cluster("us-west-2").get(DEPLOY, "production", "api-deployment")["spec"]["replicas"]
        == 3
    )  # the serving region only
    with pytest.raises(InvalidInput, match=r"50 is outside production's bounds 2-20"):
        kube_engine.prepare(
            "scale.pods",
            {"environment": "production", "service": "api", "replicas": 50},
            actor=ALICE,
        )
    with pytest.raises(
        InvalidInput,
        match=r"managed by autoscaler api-deployment \(2-10\).*"
        r"scale.hpa production --service api",
    ):
        kube_engine.prepare(
            "scale.pods",
            {"environment": "production", "service": "api", "replicas": 15},
            actor=ALICE,
        )


def test_scale_hpa_then_pods_beyond_the_old_bounds(kube, kube_engine, aws) -> None:
    # Scaling reads which region serves production from DNS (the sandbox's Route53).
    done = run(kube_engine, "scale.hpa", environment="production", service="api", min=4, max=16)
    assert done.state == State.SUCCEEDED, done.error
    hpa = kube.cluster().get(
        BY_PATH["autoscaling", "v2", "horizontalpodautoscalers"], "production", "api-deployment"
    )
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 16)
    assert kube.cluster().get(DEPLOY, "production", "api-deployment")["spec"]["replicas"] == 4
    done = run(kube_engine, "scale.pods", environment="production", service="api", replicas=15)
    assert done.state == State.SUCCEEDED, done.error
    with pytest.raises(InvalidInput, match="--min 9 is above --max 3"):
        kube_engine.prepare(
            "scale.hpa",
            {"environment": "production", "service": "api", "min": 9, "max": 3},
            actor=ALICE,
        )
    with pytest.raises(InvalidInput, match="outside production's bounds 2-20"):
        kube_engine.prepare(
            "scale.hpa",
            {"environment": "production", "service": "api", "min": 2, "max": 30},
            actor=ALICE,
        )


def test_a_rollback_after_a_rollback_skips_the_release_it_removed(kube, kube_engine) -> None:
    """1.4.2 (rev 3) → 1.4.1 (rev 4). A second plain `rollback` goes to 1.4.0, saying it skips
    1.4.2 and which run removed it; 1.4.2 comes back only by revision, with a warning; an
    automatic request is refused (NeedsPerson). kubectl's undo by hand counts too."""
    first = run(kube_engine, "rollback", environment="development")
    assert first.state == State.SUCCEEDED, first.error
    assert image(kube, "us-east-1", "development") == "app-api:1.4.1"

    plan = kube_engine.prepare("rollback", {"environment": "development"}, actor=ALICE).plan
    assert "revision 4 (app-api:1.4.1) → revision 1 (app-api:1.4.0)" in plan.steps[0]["description"]
    skip = next(n for n in plan.notes if "skips revision 3" in n)
    assert "app-api:1.4.2" in skip and "rolled back at" in skip and first.id in skip

    by_revision = kube_engine.prepare(
        "rollback", {"environment": "development", "to_revision": 3}, actor=ALICE
    ).plan
    assert (
        "RE-DEPLOYS app-api:1.4.2, the release rolled back at"
        in (by_revision.steps[0]["description"])
    )
    assert any(n.startswith("us-east-1: WARNING: revision 3 re-deploys") for n in by_revision.notes)

    alerts = Actor("alertmanager", "Alertmanager", Origin.ALERTMANAGER)
    with pytest.raises(NeedsPerson, match=r"still failing after rolling back to app-api:1\.4\.1"):
        kube_engine.prepare("rollback", {"environment": "development"}, actor=alerts)
    assert image(kube, "us-east-1", "development") == "app-api:1.4.1"

    # By hand in staging, outside runbook-bot: the cluster's own history says it all the same.
    undo = kube.kubectl("rollout", "undo", "deployment/api-deployment", "-n", "staging")
    assert undo.returncode == 0, undo.stderr
    # As on a real cluster, the deployment controller renumbers the replica sets after the
    # patch, not in it: wait for the rollout as a person would before planning (planned in
    # the same millisecond, the history did not show the undo yet).
    done = kube.kubectl(
        "rollout", "status", "deployment/api-deployment", "-n", "staging", "--timeout=60s"
    )
    assert done.returncode == 0, done.stderr
    plan = kube_engine.prepare(
        "rollback", {"environment": "staging", "region": "us-east-1"}, actor=ALICE
    ).plan
    assert "→ revision 1 (app-api:1.4.0)" in plan.steps[0]["description"]
    assert any("rolled back outside runbook-bot" in n for n in plan.notes)


def test_the_automatic_refusal_names_the_release_rolled_back_from_as_such(
    kube, kube_engine
) -> None:
    """The walkthrough: the alert's refusal called app-api:1.4.2 "the release before it" (before
    1.4.1): it is the newer release that rollback replaced; the release before 1.4.1 is 1.4.0
    (revision 1). The page says which is which."""
    first = run(kube_engine, "rollback", environment="development")
    assert first.state == State.SUCCEEDED, first.error
    alerts = Actor("alertmanager", "Alertmanager", Origin.ALERTMANAGER)
    with pytest.raises(NeedsPerson) as refused:
        kube_engine.prepare("rollback", {"environment": "development"}, actor=alerts)
    message = refused.value.message
    assert "the release before it" not in message
    assert message.startswith(
        "api-deployment in development (us-east-1) is still failing after rolling back to "
        "app-api:1.4.1 (revision 4); the release that rollback replaced, app-api:1.4.2 "
        "(revision 3), is the release rolled back at "
    ), message
    assert f"by {first.id} (Alice)" in message
    assert message.endswith(
        ": no earlier good release is known, and an automatic rollback does not go further "
        "back on its own"
    ), message


def test_a_crashing_pod_of_the_replica_set_rolled_away_from_is_not_blamed(tmp_path) -> None:
    """Terminating pods of the old ReplicaSet linger on a real cluster (their grace period):
    one that was OOMKilled must not fail the next rollout's wait, which is about the new
    ReplicaSet's pods (a false 'manual action needed' at 3 a.m.). Own emulator: new pods take
    30 s to become ready, so the wait is caught mid-rollout."""
    offset = [0.0]
    cluster = seed(
        Cluster("us-east-1", pace=0.02, ready_after=30, clock=lambda: time.time() + offset[0]),
        "us-east-1",
    )
    offset[0] = 60.0  # the seeded pods are ready
    emulator = KubeEmulator(cluster).start()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig({"us-east-1": emulator.url})))
    try:
        adapter = KubeAdapter(
            make_api_client(context="us-east-1", kubeconfig=str(path)),
            region="us-east-1",
            label="development/us-east-1",
        )
        (current,) = [
            r
            for r in adapter.revisions("development", "api-deployment")
            if r.template == adapter.deployment("development", "api-deployment").template
        ]
        rs = cluster.get(BY_PATH["apps", "v1", "replicasets"], "development", current.replicaset)
        pods = BY_PATH["", "v1", "pods"]
        lingering = cluster.create(
            pods,
            "development",
            {
                "metadata": {
                    "name": f"{current.replicaset}-lingering",
                    "labels": dict(rs["spec"]["selector"]["matchLabels"]),
                },
                "spec": {"containers": [{"name": "api", "image": "app-api:1.4.2"}]},
            },
            internal=True,
        )
        # What the kubelet reports of it (through the status subresource, as the kubelet
        # writes it; it has no owner left, so the emulated kubelet leaves it as it is).
        lingering["status"] = {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "api",
                    "ready": False,
                    "restartCount": 3,
                    "image": "app-api:1.4.2",
                    "imageID": "",
                    "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            ],
        }
        cluster.replace(
            pods, "development", lingering["metadata"]["name"], lingering, subresource="status"
        )
        deploy = cluster.get(DEPLOY, "development", "api-deployment")
        deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "app-api:1.4.3"
        cluster.replace(DEPLOY, "development", "api-deployment", deploy)
        with pytest.raises(RolloutFailed) as failed:
            adapter.wait_rollout("development", "api-deployment", timeout=1, check=lambda: None)
        assert "did not finish within 1s" in failed.value.message, failed.value.message
        assert "lingering" not in failed.value.message
        assert "OOMKilled" not in failed.value.message
    finally:
        emulator.stop()


def test_a_rollback_onto_an_image_the_registry_does_not_have_fails_at_once_and_is_compensated(
    kube, kube_engine
) -> None:
    """The walkthrough's 3 a.m. case: the release to return to was deleted from the registry.
    The kubelet says so (ErrImagePull, NotFound); the rollback must say it at once, not stay
    silent until its 300 s deadline, and put the running release back."""
    deploy = kube.cluster("us-east-1").get(DEPLOY, "production", "api-deployment")
    assert deploy["spec"].get("progressDeadlineSeconds", 600) >= 600  # no deadline to help
    kube.hook("/_sandbox/broken", {"images": ["app-api:1.4.1"], "missing": True})
    done = run(kube_engine, "rollback", environment="production", region="us-east-1")
    assert done.state == State.COMPENSATED, done.error
    error = done.steps[0].error or ""
    assert "cannot finish" in error and "container api ErrImagePull" in error, error
    assert "app-api:1.4.1: not found" in error, error  # the kubelet's own words
    assert "progress deadline" in error and "exceeded" not in error, error
    shown = kube.kubectl(
        "get",
        "deployment/api-deployment",
        "-n",
        "production",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    )
    assert shown.stdout.endswith("app-api:1.4.2"), shown  # compensation restored the release


def test_an_image_pull_that_keeps_failing_stops_the_wait_after_the_grace(kube, tmp_path) -> None:
    """A pull that only backs off (no registry answer) may clear, so it gets a grace, not the
    whole deadline: after it, the wait fails naming the pod, the container and the kubelet's
    message."""
    cluster = kube.cluster("us-east-1")
    deploy = cluster.get(DEPLOY, "production", "api-deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = "app-api:broken"
    cluster.replace(DEPLOY, "production", "api-deployment", deploy)
    adapter = KubeAdapter(
        make_api_client(context="us-east-1", kubeconfig=str(kube.kubeconfig)),
        region="us-east-1",
        label="production/us-east-1",
        image_pull_grace=1.0,
    )
    with pytest.raises(RolloutFailed) as failed:
        adapter.wait_rollout("production", "api-deployment", timeout=120, check=lambda: None)
    message = str(failed.value)
    assert "container api ImagePullBackOff" in message, message
    assert 'Back-off pulling image "app-api:broken"' in message, message
    assert "may keep failing for 1s" in message and "not waiting for the progress deadline" in (
        message
    ), message


def test_the_slack_plan_names_the_regions_the_steps_act_in(kube, kube_engine) -> None:
    """Staging has one region: the card says which, not "see the steps"; production's
    rollback of every region names both."""
    from bot.slack.render import plan_blocks

    def region_field(environment: str) -> str:
        plan = kube_engine.prepare("rollback", {"environment": environment}, actor=ALICE).plan
        blocks = plan_blocks(plan, banner=environment, approvals=0, reason=None, request=None)
        fields = [f["text"] for b in blocks for f in b.get("fields", [])]
        return str(next(f for f in fields if f.startswith("*Region*")))

    assert region_field("staging") == "*Region*\nus-east-1"
    assert region_field("production") == "*Region*\nus-east-1, us-west-2"
