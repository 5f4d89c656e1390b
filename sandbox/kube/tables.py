"""What kubectl reads besides objects: a kubeconfig for the emulators, the Table format of
``kubectl get``, quantities and the kubelet's waiting reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sandbox.kube.resources import Resource


def kubeconfig(
    clusters: dict[str, str],
    *,
    token: str = "sandbox-token",  # noqa: S107 - a dummy
) -> dict[str, Any]:
    """A kubeconfig with one context per emulator: {context name: server URL}."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": {"server": url}} for name, url in clusters.items()],
        "users": [{"name": "sandbox", "user": {"token": token}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": "sandbox"}} for name in clusters
        ],
        "current-context": next(iter(clusters)),
    }


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def _memory(text: Any) -> float:
    """A memory quantity in bytes (no limit: infinite)."""
    if not text:
        return float("inf")
    value = str(text)
    for unit, factor in _MEMORY_UNITS.items():
        if value.endswith(unit):
            return float(value[: -len(unit)]) * factor
    return float(value)


def memory_quantity(text: str) -> float | None:
    """Bytes of a memory quantity (``3Gi``, ``512Mi``, ``1000000``), None if it is not one."""
    try:
        value = _memory(text)
    except ValueError:
        return None
    return value if text and 0 < value < float("inf") else None


def _age(created: str, now: float) -> str:
    """Age as kubectl prints it: 45s, 12m, 5h, 3d."""
    try:
        then = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_status(pod: dict[str, Any]) -> tuple[int, int, str]:
    """(ready containers, restarts, STATUS) as the API server's pod printer derives them: the
    phase, or the reason a container is waiting or was terminated, or Terminating."""
    status = pod.get("status") or {}
    shown = status.get("reason") or status.get("phase") or "Unknown"
    ready = restarts = 0
    for container in reversed(status.get("containerStatuses") or []):
        restarts += int(container.get("restartCount") or 0)
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            shown = waiting["reason"]
        elif terminated.get("reason"):
            shown = terminated["reason"]
        elif terminated:
            shown = f"ExitCode:{terminated.get('exitCode', 0)}"
        elif container.get("ready") and "running" in state:
            ready += 1
    if pod["metadata"].get("deletionTimestamp"):
        shown = "Terminating"
    return ready, restarts, shown


def table(resource: Resource, items: list[dict[str, Any]], rv: int, now: float) -> dict[str, Any]:
    """The Table (meta.k8s.io/v1) kubectl asks for with ``get``, columns as the API server
    prints them: deployments with READY, UP-TO-DATE, AVAILABLE, AGE (and CONTAINERS, IMAGES,
    SELECTOR for ``-o wide``); pods with READY, STATUS, RESTARTS, AGE (and IP, NODE,
    NOMINATED NODE, READINESS GATES for ``-o wide``); any other kind NAME and AGE."""

    def column(name: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": name,
            "priority": priority,
        }

    if resource.kind == "Deployment":
        columns = [
            column("Name"),
            column("Ready"),
            column("Up-to-date", "integer"),
            column("Available", "integer"),
            column("Age"),
            column("Containers", priority=1),
            column("Images", priority=1),
            column("Selector", priority=1),
        ]

        def cells(obj: dict[str, Any]) -> list[Any]:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            return [
                obj["metadata"]["name"],
                f"{status.get('readyReplicas', 0) or 0}/{spec.get('replicas', 1)}",
                status.get("updatedReplicas", 0) or 0,
                status.get("availableReplicas", 0) or 0,
                _age(obj["metadata"].get("creationTimestamp", ""), now),
                ",".join(c.get("name", "") for c in containers),
                ",".join(c.get("image", "") for c in containers),
                ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            ]
    elif resource.kind == "Pod":
        columns = [
            column("Name"),
            column("Ready"),
            column("Status"),
            column("Restarts"),
            column("Age"),
            column("IP", priority=1),
            column("Node", priority=1),
            column("Nominated Node", priority=1),
            column("Readiness Gates", priority=1),
        ]

        def cells(obj: dict[str, Any]) -> list[Any]:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            ready, restarts, shown = _pod_status(obj)
            gates = spec.get("readinessGates") or []
            return [
                obj["metadata"]["name"],
                f"{ready}/{len(spec.get('containers') or [])}",
                shown,
                str(restarts),
                _age(obj["metadata"].get("creationTimestamp", ""), now),
                status.get("podIP") or "<none>",
                spec.get("nodeName") or "<none>",
                status.get("nominatedNodeName") or "<none>",
                f"0/{len(gates)}" if gates else "<none>",
            ]
    else:
        columns = [column("Name"), column("Age")]

        def cells(obj: dict[str, Any]) -> list[Any]:
            return [
                obj["metadata"]["name"],
                _age(obj["metadata"].get("creationTimestamp", ""), now),
            ]

    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": columns,
        "rows": [{"cells": cells(obj), "object": obj} for obj in items],
    }


def _waiting(image: str, broken: bool, missing: str | None, oom: bool) -> dict[str, str]:
    """A not-ready container's ``state.waiting``, in the kubelet's words."""
    if missing is not None:
        return {
            "reason": "ErrImagePull",
            "message": "rpc error: code = NotFound desc = failed to pull and unpack image "
            f'"{image}": failed to resolve reference "{image}": {image}: not found',
        }
    if broken:
        return {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
    return {"reason": "CrashLoopBackOff" if oom else "ContainerCreating"}
