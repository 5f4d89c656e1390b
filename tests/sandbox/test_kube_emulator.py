"""The Kubernetes API emulator, checked with independent clients: kubectl and the official
Python client (the emulator is ours, so it is not its own oracle)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from sandbox.kube.emulator import BY_PATH, Cluster, KubeEmulator, kubeconfig
from sandbox.kube.seed import seed
from tests.conftest import KubeSandbox
from tests.support.waiting import wait_for

NS = "production"
DEPLOY = BY_PATH["apps", "v1", "deployments"]


def apps(kube: KubeSandbox, region: str = "us-east-1") -> client.AppsV1Api:
    return client.AppsV1Api(
        kube_config.new_client_from_config(config_file=str(kube.kubeconfig), context=region)
    )


def image(kube: KubeSandbox, region: str = "us-east-1") -> str:
    deploy = kube.cluster(region).get(DEPLOY, NS, "api-deployment")
    return str(deploy["spec"]["template"]["spec"]["containers"][0]["image"])


def test_kubectl_sees_the_seeded_regions(kube: KubeSandbox) -> None:
    version = kube.kubectl("version", "-o", "json")
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.32.4"
    east = kube.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}")
    assert east.stdout.split() == ["development", "production", "rehearsal", "staging"]
    west = kube.kubectl("get", "ns", "-o", "jsonpath={.items[*].metadata.name}", region="us-west-2")
    assert west.stdout.split() == ["production", "rehearsal"]
    pods = kube.kubectl(
        "get", "pods", "-n", NS, "-l", "app=api", "-o", "jsonpath={.items[*].status.phase}"
    )
    assert pods.stdout.split() == ["Running"] * 3
    hpa = kube.kubectl(
        "get",
        "hpa",
        "api-deployment",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.minReplicas}-{.spec.maxReplicas}",
    )
    assert hpa.stdout == "2-10"


def test_kubectl_rollout_history_undo_and_status(kube: KubeSandbox) -> None:
    history = kube.kubectl("rollout", "history", "deployment/api-deployment", "-n", NS)
    assert [line.split()[:2] for line in history.stdout.splitlines()[2:] if line.strip()] == [
        ["1", "deploy"],
        ["2", "deploy"],
        ["3", "deploy"],
    ]
    assert image(kube).endswith("app-api:1.4.2")
    undo = kube.kubectl("rollout", "undo", "deployment/api-deployment", "-n", NS)
    assert undo.returncode == 0, undo.stderr
    status = kube.kubectl(
        "rollout", "status", "deployment/api-deployment", "-n", NS, "--timeout=30s"
    )
    assert status.returncode == 0 and "successfully rolled out" in status.stdout
    assert image(kube).endswith("app-api:1.4.1")
    history = kube.kubectl("rollout", "history", "deployment/api-deployment", "-n", NS)
    assert [line.split()[0] for line in history.stdout.splitlines()[2:] if line.strip()] == [
        "1",
        "3",
        "4",
    ]
    missing = kube.kubectl(
        "rollout", "undo", "deployment/api-deployment", "-n", NS, "--to-revision=9"
    )
    assert missing.returncode != 0 and "unable to find specified revision 9" in missing.stderr


def test_kubectl_scale_and_the_hpa_clamps(kube: KubeSandbox) -> None:
    assert (
        kube.kubectl("scale", "deployment/api-deployment", "-n", NS, "--replicas=5").returncode == 0
    )
    wait_for(
        lambda: (
            kube.kubectl(
                "get",
                "deploy",
                "api-deployment",
                "-n",
                NS,
                "-o",
                "jsonpath={.status.readyReplicas}",
            ).stdout
            == "5"
        ),
        what="5 ready replicas",
    )
    kube.kubectl("scale", "deployment/api-deployment", "-n", NS, "--replicas=50")
    wait_for(
        lambda: kube.cluster().get(DEPLOY, NS, "api-deployment")["spec"]["replicas"] == 10,
        what="the HPA to clamp replicas to 10",
    )


def test_a_deployment_scaled_to_zero_disables_its_hpa(kube: KubeSandbox) -> None:
    """As Kubernetes: an HPA whose target runs zero replicas does not scale it back up (the
    region-failure simulation relies on it), and scaling up again re-enables it."""
    kube.kubectl("scale", "deployment/api-deployment", "-n", NS, "--replicas=0")

    def hpa_condition() -> str:
        return kube.kubectl(
            "get",
            "hpa",
            "api-deployment",
            "-n",
            NS,
            "-o",
            "jsonpath={.status.conditions[0].type}={.status.conditions[0].reason}",
        ).stdout

    wait_for(lambda: hpa_condition() == "ScalingActive=ScalingDisabled", what="HPA disabled")
    kube.cluster().settle()
    assert kube.cluster().get(DEPLOY, NS, "api-deployment")["spec"]["replicas"] == 0
    kube.kubectl("scale", "deployment/api-deployment", "-n", NS, "--replicas=1")
    wait_for(
        lambda: kube.cluster().get(DEPLOY, NS, "api-deployment")["spec"]["replicas"] == 2,
        what="the HPA, active again, to raise replicas to its minimum of 2",
    )


def test_stale_update_conflicts_and_errors_are_status_objects(kube: KubeSandbox) -> None:
    api = apps(kube)
    first = api.read_namespaced_deployment("api-deployment", NS)
    second = api.read_namespaced_deployment("api-deployment", NS)
    first.spec.paused = True
    api.replace_namespaced_deployment("api-deployment", NS, first)
    second.spec.paused = False
    with pytest.raises(ApiException) as conflict:
        api.replace_namespaced_deployment("api-deployment", NS, second)
    assert conflict.value.status == 409
    assert json.loads(conflict.value.body or "{}")["reason"] == "Conflict"
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_deployment("nope", NS)
    assert (
        missing.value.status == 404 and json.loads(missing.value.body or "{}")["kind"] == "Status"
    )
    with pytest.raises(ApiException) as invalid:
        api.patch_namespaced_deployment_scale("api-deployment", NS, {"spec": {"replicas": -1}})
    assert invalid.value.status == 422


def test_patch_types_and_generation(kube: KubeSandbox) -> None:
    api = apps(kube)
    before = api.read_namespaced_deployment("api-deployment", NS)
    # strategic merge (a dict body): containers merge by name
    api.patch_namespaced_deployment(
        "api-deployment",
        NS,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "api", "image": "app-api:9.9.9"}]}}
            }
        },
    )
    after = api.read_namespaced_deployment("api-deployment", NS)
    assert after.spec.template.spec.containers[0].image == "app-api:9.9.9"
    assert after.spec.template.spec.containers[0].ports[0].container_port == 3000
    assert after.metadata.generation == before.metadata.generation + 1
    # JSON patch (a list body)
    api.patch_namespaced_deployment(
        "api-deployment",
        NS,
        [{"op": "replace", "path": "/metadata/labels", "value": {"app": "api", "x": "y"}}],
    )
    patched = api.read_namespaced_deployment("api-deployment", NS)
    assert patched.metadata.labels == {"app": "api", "x": "y"}
    assert patched.metadata.generation == after.metadata.generation  # metadata only


def test_watch_streams_changes_with_field_selector(kube: KubeSandbox) -> None:
    api = apps(kube)
    listed = api.list_namespaced_deployment(NS, field_selector="metadata.name=api-deployment")
    seen: list[tuple[str, int]] = []

    def follow() -> None:
        stream = watch.Watch()
        for event in stream.stream(
            api.list_namespaced_deployment,
            NS,
            field_selector="metadata.name=api-deployment",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=10,
        ):
            seen.append((event["type"], event["object"].spec.replicas))
            if event["object"].spec.replicas == 4:
                stream.stop()

    thread = threading.Thread(target=follow)
    thread.start()
    api.patch_namespaced_deployment_scale("api-deployment", NS, {"spec": {"replicas": 4}})
    thread.join(timeout=15)
    assert ("MODIFIED", 4) in seen


def test_broken_image_never_becomes_ready_and_exceeds_the_deadline(kube: KubeSandbox) -> None:
    api = apps(kube)
    api.patch_namespaced_deployment(
        "api-deployment",
        NS,
        {
            "spec": {
                "progressDeadlineSeconds": 1,
                "template": {"spec": {"containers": [{"name": "api", "image": "app-api:broken"}]}},
            }
        },
    )
    status = kube.kubectl(
        "rollout", "status", "deployment/api-deployment", "-n", NS, "--timeout=30s"
    )
    assert status.returncode != 0
    assert "exceeded its progress deadline" in status.stderr
    deploy = api.read_namespaced_deployment("api-deployment", NS)
    progressing = next(c for c in deploy.status.conditions if c.type == "Progressing")
    assert progressing.reason == "ProgressDeadlineExceeded"
    assert deploy.status.available_replicas >= 2  # old pods keep serving


def test_injected_conflicts_answer_409_then_clear(kube: KubeSandbox) -> None:
    kube.hook("/_sandbox/conflicts", {"count": 1})
    api = apps(kube)
    with pytest.raises(ApiException) as first:
        api.patch_namespaced_deployment_scale("api-deployment", NS, {"spec": {"replicas": 4}})
    assert first.value.status == 409
    api.patch_namespaced_deployment_scale("api-deployment", NS, {"spec": {"replicas": 4}})
    assert api.read_namespaced_deployment("api-deployment", NS).spec.replicas == 4


def test_kubectl_get_prints_the_columns_the_api_server_would(kube: KubeSandbox) -> None:
    wide = kube.kubectl("get", "deploy", "-n", "production", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    cells = row.split()
    assert cells[0] == "api-deployment" and cells[1] == "3/3" and cells[2:4] == ["3", "3"]
    assert "app-api:1.4.2" in cells[6]
    plain = kube.kubectl("get", "deploy", "-n", "production")
    assert plain.stdout.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    # One deployment by name: the same columns (it used to be NAME and AGE only).
    one = kube.kubectl("get", "deploy", "api-deployment", "-n", "production")
    assert one.returncode == 0, one.stderr
    header, row = one.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:4] == ["api-deployment", "3/3", "3", "3"]

    pods = kube.kubectl("get", "pods", "-n", "production", "-l", "app=api")
    assert pods.returncode == 0, pods.stderr
    lines = pods.stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    # The oracle for the rows: the pods as kubectl reads them in JSON, not the table.
    listed = json.loads(kube.kubectl("get", "pods", "-n", "production", "-o", "json").stdout)
    names = sorted(p["metadata"]["name"] for p in listed["items"] if "api" in p["metadata"]["name"])
    rows = {line.split()[0]: line.split()[1:4] for line in lines[1:]}
    assert sorted(rows) == names and len(names) == 3
    assert all(cells == ["1/1", "Running", "0"] for cells in rows.values()), rows
    wide_pods = kube.kubectl("get", "pods", "-n", "production", "-o", "wide")
    assert wide_pods.stdout.split()[:9] == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
    ]
    pod = names[0]
    single = kube.kubectl("get", "pod", pod, "-n", "production")
    assert single.stdout.splitlines()[1].split()[:4] == [pod, "1/1", "Running", "0"]


def test_scaling_an_hour_after_the_last_rollout_keeps_progressing(tmp_path: Path) -> None:
    """Real Kubernetes times out only a rollout in progress: scaling a complete deployment (up
    or down) an hour after its last rollout keeps NewReplicaSetAvailable. The emulator's clock
    is moved an hour on; kubectl (rollout status, which fails on ProgressDeadlineExceeded) and a
    watch of the Progressing condition judge."""
    offset = [0.0]
    emulator = KubeEmulator(
        seed(Cluster("us-east-1", pace=0.02, clock=lambda: time.time() + offset[0]), "us-east-1")
    ).start()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig({"us-east-1": emulator.url})))
    kube = KubeSandbox({"us-east-1": emulator}, path, tmp_path / "kube-cache")
    try:
        offset[0] = 3600.0  # an hour later, nothing rolled out since the seed
        api = apps(kube)
        before = api.read_namespaced_deployment("api-deployment", NS).metadata.resource_version
        for replicas in ("6", "2"):  # up, then down
            scaled = kube.kubectl(
                "scale", "deployment/api-deployment", "-n", NS, f"--replicas={replicas}"
            )
            assert scaled.returncode == 0, scaled.stderr
            status = kube.kubectl(
                "rollout", "status", "deployment/api-deployment", "-n", NS, "--timeout=30s"
            )
            assert status.returncode == 0, status.stderr
            assert "successfully rolled out" in status.stdout
        # Every state the deployment went through since (a watch from before the scales).
        seen = [
            c.reason
            for event in watch.Watch().stream(
                api.list_namespaced_deployment,
                NS,
                field_selector="metadata.name=api-deployment",
                resource_version=before,
                timeout_seconds=1,
            )
            for c in event["object"].status.conditions or []
            if c.type == "Progressing"
        ]
        assert len(seen) > 4 and set(seen) == {"NewReplicaSetAvailable"}, seen
        deploy = api.read_namespaced_deployment("api-deployment", NS)
        assert deploy.status.ready_replicas == 2
    finally:
        emulator.stop()


def test_a_broken_image_named_as_people_say_it_never_becomes_ready(kube: KubeSandbox) -> None:
    """`sandbox.fault broken-image --value app-api:1.4.1` names the image without its registry:
    the rollback to it must then fail, as the README's fault table promises."""
    kube.hook("/_sandbox/broken", {"images": ["app-api:1.4.1"]})
    undo = kube.kubectl("rollout", "undo", "deployment/api-deployment", "-n", NS)
    assert undo.returncode == 0, undo.stderr
    status = kube.kubectl(
        "rollout", "status", "deployment/api-deployment", "-n", NS, "--timeout=3s"
    )
    assert status.returncode != 0  # still waiting for pods that never become ready
    pods = kube.kubectl("get", "pods", "-n", NS, "-o", "json")
    waiting = [
        c["state"]["waiting"]["reason"]
        for p in json.loads(pods.stdout)["items"]
        if p["spec"]["containers"][0]["image"].endswith("app-api:1.4.1")
        for c in p["status"].get("containerStatuses", [])
        if "waiting" in c.get("state", {})
    ]
    assert waiting and set(waiting) == {"ImagePullBackOff"}, waiting


def test_a_delete_with_a_body_leaves_the_kept_alive_connection_usable(kube: KubeSandbox) -> None:
    """kubectl delete sends DeleteOptions as the body and reuses the connection: a body the
    emulator did not read would be parsed as the next request (kubectl then saw "malformed
    HTTP status code" from the HTML error page an HTTP/0.9-looking request gets)."""
    url = urlsplit(kube.emulators["us-east-1"].url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        body = json.dumps({"kind": "DeleteOptions", "propagationPolicy": "Background"})
        connection.request(
            "DELETE",
            "/api/v1/namespaces/production/configmaps/none-such",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        deleted = connection.getresponse()
        assert deleted.status == 404
        deleted.read()
        connection.request("GET", "/api/v1/namespaces/production")  # the same connection
        again = connection.getresponse()
        assert again.status == 200
        assert json.loads(again.read())["metadata"]["name"] == "production"
    finally:
        connection.close()
