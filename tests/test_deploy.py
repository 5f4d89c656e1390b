"""deploy/kubernetes: the overlays render with ``kubectl kustomize``; every object is a valid
Kubernetes object for the official client's models (no field it would drop); the Deployment's
probes, port, user and security context match the bot and the Dockerfile; the ConfigMap is
config/example; the operator role grants exactly what the Kubernetes adapter calls."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from runbooks.reach import OPERATOR_ROLE
from tests.conftest import ROOT
from tests.support.deploy import by_kind, render

DEPLOY = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["staging", "production"]
KUBECTL = shutil.which("kubectl")


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_round_trips_through_the_official_models(overlay: str) -> None:
    from kubernetes import client

    api = client.ApiClient()
    docs = render(overlay)
    assert {d["kind"] for d in docs} >= {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ClusterRole",
        "RoleBinding",
    }
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a custom resource: no model (test_the_prometheusrule_is_the_rules_file)
        model = api._ApiClient__deserialize(doc, "V1" + doc["kind"])  # type: ignore[attr-defined]
        again = _strip_none(api.sanitize_for_serialization(model))
        assert again == doc, f"{doc['kind']} {doc['metadata']['name']}: a field the model drops"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_matches_the_bot_and_the_dockerfile(overlay: str) -> None:
    docs = render(overlay)
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] >= 2  # several replicas: state in MongoDB
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    user_line = re.search(r"^USER (\d+):(\d+)", dockerfile, re.M)
    port_line = re.search(r"^EXPOSE (\d+)", dockerfile, re.M)
    assert user_line and port_line, "the Dockerfile names its USER and EXPOSE"
    user, port = int(user_line.group(1)), int(port_line.group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert container["args"][:4] == ["python", "-m", "bot", "serve"]
    assert '"bot", "serve"' in dockerfile
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    server = (ROOT / "bot" / "server.py").read_text()
    assert '("GET", "/health")' in server and '("GET", "/ready")' in server
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Writable only where the bot writes: its home and /tmp.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/runbook-bot"]["readOnly"] is True
    assert {"/var/lib/runbook-bot", "/tmp"} <= set(mounts)
    env = {e["name"]: e for e in container["env"]}
    for secret in ("RUNBOOK_BOT_STATE", "RUNBOOK_BOT_AUDIT_KEY", "SLACK_BOT_TOKEN"):
        assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "runbook-bot"
    (service,) = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    selector = spec["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    (budget,) = by_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == selector
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_prometheusrule_is_the_rules_file(overlay: str) -> None:
    """The base ships deploy/prometheus/rules.yaml as a PrometheusRule (regenerate with
    deploy/kubernetes/prometheusrule.py), in the bot's namespace, labelled for a ruleSelector."""
    (rule,) = by_kind(render(overlay), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["role"] == "alert-rules"
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yaml").read_text())
    assert rule["spec"]["groups"] == rules["groups"]


def test_the_configmap_is_config_example() -> None:
    docs = render("production")
    (config,) = by_kind(docs, "ConfigMap")
    example = ROOT / "config" / "example"
    assert set(config["data"]) == {p.name for p in example.glob("*.yaml")}
    for name, text in config["data"].items():
        assert text == (example / name).read_text(), (
            f"deploy/kubernetes/base/configmap.yaml: {name} differs from config/example/{name}; "
            "run python3 deploy/kubernetes/configmap.py"
        )


# --- RBAC: exactly what the adapter calls ---------------------------------------------------

RESOURCES = {
    "deployment": ("apps", "deployments"),
    "deployment_scale": ("apps", "deployments/scale"),
    "replica_set": ("apps", "replicasets"),
    "pod": ("", "pods"),
    "endpoints": ("", "endpoints"),
    "service": ("", "services"),
    "horizontal_pod_autoscaler": ("autoscaling", "horizontalpodautoscalers"),
}
VERBS = {"read": "get", "list": "list", "patch": "patch", "replace": "update", "create": "create"}


def used_by_the_adapter() -> set[tuple[str, str, str]]:
    """(API group, resource, verb) of every call the Kubernetes adapter makes."""
    source = (ROOT / "runbooks" / "adapters" / "kube.py").read_text()
    used = set()
    # A list function handed to watch.Watch().stream() is a watch request, not a list.
    stream = r"stream\(\s*self\.\w+\.list_namespaced_(\w+)"
    for resource in re.findall(stream, source):
        used.add((*RESOURCES[resource], "watch"))
    source = re.sub(stream, "stream(", source)
    calls = r"\.(read|list|patch|replace|create)_namespaced_(\w+)"
    for verb, resource in re.findall(calls, source):
        if resource in {"custom_object", "config_map"}:
            # Argo CD / Flux objects and Argo's argocd-cm (GitOps rollbacks): granted by the
            # optional components, not by the operator role (used_for_gitops, below).
            continue
        group, name = RESOURCES[resource]
        used.add((group, name, VERBS[verb]))
    return used


def test_the_operator_role_grants_exactly_what_the_adapter_uses() -> None:
    docs = render("production")
    (role,) = by_kind(docs, "ClusterRole")
    granted = set()
    for rule in role["rules"]:
        for value in (*rule["apiGroups"], *rule["resources"], *rule["verbs"]):
            assert "*" not in value, f"a wildcard in the role: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted |= {(group, resource, verb) for verb in rule["verbs"]}
    used = used_by_the_adapter()
    # Readiness asks one SelfSubjectAccessReview per verb the role grants (runbooks/reach.py).
    assert set(OPERATOR_ROLE) == granted, "readiness reviews other verbs than the role grants"
    assert used - granted == set(), "the adapter calls what the role does not grant"
    assert granted - used == set(), "the role grants what no runbook uses"
    for overlay, namespace in (("staging", "staging"), ("production", "production")):
        (binding,) = by_kind(render(overlay), "RoleBinding")
        assert binding["metadata"]["namespace"] == namespace
        assert binding["roleRef"]["name"] == role["metadata"]["name"]
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "runbook-bot", "namespace": "runbook-bot"}
        ]


# --- RBAC for GitOps rollbacks: the optional components -----------------------------------

GITOPS_COMPONENTS = ("gitops-argocd", "gitops-flux")
#: Where each tool keeps its objects: the only namespace the components let the bot patch in.
TOOL_NAMESPACE = {"argoproj.io": "argocd"}
CLUSTER = "*"


def used_for_gitops() -> set[tuple[str, str, str, str]]:
    """(API group, resource, verb, where) of the Kubernetes adapter's GitOps calls: ``*`` for
    every namespace, else the namespace (patches and argocd-cm: in the tools' namespaces)."""
    from runbooks.adapters.kube import ARGO_CONFIGMAP, GIT_REPOSITORIES, OWNER_OBJECTS

    source = (ROOT / "runbooks" / "adapters" / "kube.py").read_text()
    calls = set(re.findall(r"\.(\w+_custom_object|read_namespaced_config_map)\(", source))
    assert calls == {
        "get_namespaced_custom_object",
        "list_cluster_custom_object",
        "patch_namespaced_custom_object",
        "read_namespaced_config_map",
    }, f"the adapter's GitOps calls changed ({sorted(calls)}): map the new ones here"
    owners = {(group, plural) for group, _, plural in OWNER_OBJECTS.values()}
    used = set()
    # get: an owner in any namespace (plan), and the GitRepository a Flux owner syncs from.
    used |= {
        (g, r, "get", CLUSTER) for g, r in owners | {(GIT_REPOSITORIES[0], GIT_REPOSITORIES[2])}
    }
    # list: every owner kind cluster-wide (the watch lists; the plan's access review asks it).
    used |= {(g, r, "list", CLUSTER) for g, r in owners}
    # patch: suspend and resume, where the tool keeps its objects.
    used |= {(g, r, "patch", TOOL_NAMESPACE.get(g, "flux-system")) for g, r in owners}
    used.add(("", f"configmaps/{ARGO_CONFIGMAP}", "get", "argocd"))
    return used


def _grants(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    """What the rendered roles grant the bot's service account, through their bindings."""
    by_name = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}
    granted = set()
    for binding in docs:
        if binding["kind"] not in {"RoleBinding", "ClusterRoleBinding"}:
            continue
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "runbook-bot", "namespace": "runbook-bot"}
        ]
        where = binding["metadata"].get("namespace") or CLUSTER
        ref = binding["roleRef"]
        role = by_name[(ref["kind"], ref["name"], where if ref["kind"] == "Role" else None)]
        for rule in role["rules"]:
            for value in (*rule["apiGroups"], *rule["resources"], *rule["verbs"]):
                assert "*" not in value, f"a wildcard in {ref['name']}: {rule}"
            names = rule.get("resourceNames") or [None]
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in names:
                            what = f"{resource}/{name}" if name else resource
                            granted.add((group, what, verb, where))
    return granted


def test_the_gitops_components_grant_exactly_the_gitops_calls_and_are_not_bound_by_default(
    tmp_path: Any,
) -> None:
    gitops_groups = {"argoproj.io", "kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"}
    gitops_groups.add("source.toolkit.fluxcd.io")
    for overlay in OVERLAYS:
        plain = _grants(render(overlay))
        assert not {g for g in plain if g[0] in gitops_groups or g[1].startswith("configmaps")}
        assert by_kind(render(overlay), "ClusterRoleBinding") == []
        extra = (
            _grants(render(overlay, components=GITOPS_COMPONENTS, scratch=tmp_path / overlay))
            - plain
        )
        used = used_for_gitops()
        assert used - extra == set(), "the adapter makes GitOps calls the components do not grant"
        assert extra - used == set(), "the components grant what the GitOps calls do not use"
    # Each component alone: one tool's rights, bound only where that tool keeps its objects.
    argo = _grants(
        render("staging", components=("gitops-argocd",), scratch=tmp_path / "argo")
    ) - _grants(render("staging"))
    assert {g[0] for g in argo} == {"argoproj.io", ""}
    assert {g[3] for g in argo if g[2] == "patch" or g[0] == ""} == {"argocd"}


# --- What a real installation needs: IRSA, Socket Mode, a pinned image, zones, parameters ----


def the_deployment(overlay: str) -> dict[str, Any]:
    (deployment,) = by_kind(render(overlay), "Deployment")
    return deployment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_account_carries_an_irsa_role_placeholder(overlay: str) -> None:
    docs = render(overlay)
    (account,) = by_kind(docs, "ServiceAccount")
    arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    # The shape IAM gives a role's ARN (account id of 12 digits, a role name IAM accepts).
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]{1,64}", arn), arn
    pod = the_deployment(overlay)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    # IRSA and the in-cluster context both need the account's token in the pod.
    assert account["automountServiceAccountToken"] is True
    assert pod.get("automountServiceAccountToken", True) is True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_socket_mode_takes_an_optional_app_token_from_the_secret(overlay: str) -> None:
    from bot.slack.app import SlackSettings

    (container,) = the_deployment(overlay)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["SLACK_APP_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "runbook-bot", "key": "slack-app-token", "optional": True}
    # The variable is the one the bot reads: with it, Slack runs in Socket Mode; without the key
    # (optional: the variable is absent), over HTTP with the signing secret.
    values = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "SLACK_APP_TOKEN": "xapp-1"}
    assert SlackSettings.from_env(values).mode == "socket"
    del values["SLACK_APP_TOKEN"]
    assert SlackSettings.from_env(values).mode == "http"
    # Everything else stays: the kubeconfig Secret and KUBECONFIG pointing into its mount.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["KUBECONFIG"]["value"] == mounts["kubeconfig"] + "/config"


def test_production_runs_an_image_pinned_by_digest() -> None:
    (container,) = the_deployment("production")["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"[a-z0-9./-]+@sha256:[0-9a-f]{64}", container["image"]), container["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_across_zones(overlay: str) -> None:
    deployment = the_deployment(overlay)
    template = deployment["spec"]["template"]
    zone = [
        c
        for c in template["spec"]["topologySpreadConstraints"]
        if c["topologyKey"] == "topology.kubernetes.io/zone"
    ]
    assert len(zone) == 1, "one spread constraint over zones"
    (constraint,) = zone
    assert constraint["maxSkew"] == 1
    assert constraint["whenUnsatisfiable"] == "DoNotSchedule"
    # It counts this Deployment's own pods: its selector picks labels the pods carry.
    selector = constraint["labelSelector"]["matchLabels"]
    assert selector and selector.items() <= template["metadata"]["labels"].items()
    assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()


def network_parameters(overlay_dir: Any) -> dict[str, str]:
    (params,) = list(yaml.safe_load_all((overlay_dir / "network.yaml").read_text()))
    assert params["metadata"]["annotations"]["config.kubernetes.io/local-config"] == "true"
    data: dict[str, str] = params["data"]
    return data


def allowed_namespaces(docs: list[dict[str, Any]]) -> list[str]:
    (policy,) = by_kind(docs, "NetworkPolicy")
    return [
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_network_policy_namespaces_are_the_overlays_parameters(overlay: str) -> None:
    docs = render(overlay)
    params = network_parameters(DEPLOY / "overlays" / overlay)
    assert allowed_namespaces(docs) == [params["ingress-namespace"], params["monitoring-namespace"]]
    # The parameters are not installed.
    assert [c["metadata"]["name"] for c in by_kind(docs, "ConfigMap")] == ["runbook-bot-config"]


def test_an_overlay_with_other_namespaces_gets_a_policy_naming_them(tmp_path: Any) -> None:
    render("production")  # skips without kubectl
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    overlay = copy / "overlays" / "production"
    (params,) = list(yaml.safe_load_all((overlay / "network.yaml").read_text()))
    params["data"] = {"ingress-namespace": "traefik", "monitoring-namespace": "observability"}
    (overlay / "network.yaml").write_text(yaml.safe_dump(params))
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    assert allowed_namespaces(docs) == ["traefik", "observability"]
