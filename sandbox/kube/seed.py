"""Seed a cluster with the spec's objects: per environment namespace, api-deployment with
three revisions of history (app-api 1.4.0, 1.4.1, 1.4.2), api-service and an HPA 2-10.
Production and rehearsal run in both regions, the others in us-east-1.
Staging also runs a blue-green ``web`` service (web-blue, web-green) for blue-green rollbacks.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.emulator import BY_PATH, Cluster

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
RELEASES = [("1.4.0", "deploy 1.4.0"), ("1.4.1", "deploy 1.4.1"), ("1.4.2", "deploy 1.4.2")]

#: region -> namespaces (environments) it runs; ``rehearsal`` is the two-region non-production
#: environment the region-failure simulation fails over and back
LAYOUT = {
    "us-east-1": ["development", "staging", "production", "rehearsal"],
    "us-west-2": ["production", "rehearsal"],
}


def _deployment(
    name: str, labels: dict[str, str], image: str, replicas: int, cause: str
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": dict(labels),
            "annotations": {"kubernetes.io/change-cause": cause},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "api",
                            "image": image,
                            "ports": [{"containerPort": 3000, "protocol": "TCP"}],
                            "resources": {
                                "requests": {"cpu": "500m", "memory": "512Mi"},
                                "limits": {"cpu": "2000m", "memory": "2Gi"},
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/ready", "port": 3000},
                                "periodSeconds": 5,
                            },
                        }
                    ]
                },
            },
        },
    }


def roll_out(cluster: Cluster, namespace: str, name: str, image: str, cause: str) -> None:
    """Change a deployment's image the way `kubectl set image` would, then settle."""
    deployments = BY_PATH["apps", "v1", "deployments"]
    current = cluster.get(deployments, namespace, name)
    current["spec"]["template"]["spec"]["containers"][0]["image"] = image
    current["metadata"]["annotations"]["kubernetes.io/change-cause"] = cause
    cluster.replace(deployments, namespace, name, current, internal=True)
    cluster.settle()


def seed(cluster: Cluster, region: str) -> Cluster:
    """Create the region's namespaces and workloads, with rollout history."""
    namespaces = LAYOUT[region]
    with cluster.lock:
        for namespace in namespaces:
            cluster.create(
                BY_PATH["", "v1", "namespaces"],
                None,
                {"metadata": {"name": namespace}},
                internal=True,
            )
            labels = {"app": "api"}
            first, cause = RELEASES[0]
            cluster.create(
                BY_PATH["apps", "v1", "deployments"],
                namespace,
                _deployment("api-deployment", labels, f"{REGISTRY}/app-api:{first}", 3, cause),
                internal=True,
            )
            cluster.create(
                BY_PATH["", "v1", "services"],
                namespace,
                {
                    "metadata": {"name": "api-service", "labels": labels},
                    "spec": {
                        "selector": labels,
                        "type": "LoadBalancer",
                        "ports": [{"protocol": "TCP", "port": 80, "targetPort": 3000}],
                    },
                },
                internal=True,
            )
            cluster.create(
                BY_PATH["autoscaling", "v2", "horizontalpodautoscalers"],
                namespace,
                {
                    "metadata": {"name": "api-deployment"},
                    "spec": {
                        "scaleTargetRef": {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": "api-deployment",
                        },
                        "minReplicas": 2,
                        "maxReplicas": 10,
                        "metrics": [
                            {
                                "type": "Resource",
                                "resource": {
                                    "name": "cpu",
                                    "target": {"type": "Utilization", "averageUtilization": 70},
                                },
                            },
                            {
                                "type": "Resource",
                                "resource": {
                                    "name": "memory",
                                    "target": {"type": "Utilization", "averageUtilization": 80},
                                },
                            },
                        ],
                    },
                },
                internal=True,
            )
            if namespace == "staging":
                for color, version in (("blue", "1.4.1"), ("green", "1.4.2")):
                    web = {"app": "web", "color": color}
                    cluster.create(
                        BY_PATH["apps", "v1", "deployments"],
                        namespace,
                        _deployment(
                            f"web-{color}",
                            web,
                            f"{REGISTRY}/app-api:{version}",
                            2,
                            f"web {version}",
                        ),
                        internal=True,
                    )
                cluster.create(
                    BY_PATH["", "v1", "services"],
                    namespace,
                    {
                        "metadata": {"name": "web-service", "labels": {"app": "web"}},
                        "spec": {
                            "selector": {"app": "web", "color": "green"},
                            "ports": [{"protocol": "TCP", "port": 80, "targetPort": 3000}],
                        },
                    },
                    internal=True,
                )
    cluster.settle()
    for namespace in namespaces:
        for version, cause in RELEASES[1:]:
            roll_out(cluster, namespace, "api-deployment", f"{REGISTRY}/app-api:{version}", cause)
    return cluster
