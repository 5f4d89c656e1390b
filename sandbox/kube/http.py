"""The HTTP front of a Cluster: the API server's routes, discovery, watch streams,
SelfSubjectAccessReviews (JSON and protobuf) and the ``/_sandbox/`` hooks."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from sandbox.kube.cluster import Cluster
from sandbox.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from sandbox.kube.resources import (
    BY_PATH,
    METHOD_VERBS,
    RESOURCES,
    REVIEWS_PATH,
    SANDBOX_USER,
    SERVER_VERSION,
    VERBS,
    ApiError,
    Resource,
)
from sandbox.kube.tables import _memory, memory_quantity, table
from sandbox.local_http import JsonHandler, LocalServer, QuietServer


class KubeEmulator(LocalServer[QuietServer]):
    """The HTTP front of a Cluster, on 127.0.0.1 and a free port."""

    def __init__(
        self, cluster: Cluster | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.cluster = cluster or Cluster()
        handler = type("Handler", (_Handler,), {"cluster": self.cluster})
        super().__init__(
            QuietServer((host, port), handler),
            poll_interval=0.05,
            name=f"kube-http-{self.cluster.name}",
        )

    def start(self) -> Self:
        self.cluster.settle()
        self.cluster.start()
        return super().start()

    def stop(self) -> None:
        self.cluster.stop()
        super().stop()


def _protobuf_fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a protobuf message (field number -> bytes); the
    varint ones are skipped. Enough for the string and message fields read here."""
    fields: dict[int, bytes] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= len(data):
                raise ApiError(400, "BadRequest", "truncated protobuf body")
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
        elif wire == 2:
            size = varint()
            fields[number] = data[i : i + size]
            i += size
        else:
            raise ApiError(400, "BadRequest", f"unsupported protobuf wire type {wire}")
    return fields


def review_from_protobuf(raw: bytes) -> dict[str, Any]:
    """A SelfSubjectAccessReview sent as Kubernetes protobuf (``k8s\\0`` + runtime.Unknown
    whose ``raw`` is the object): its spec's resourceAttributes, as the JSON form has them."""
    if not raw.startswith(b"k8s\x00"):
        raise ApiError(400, "BadRequest", "a protobuf body starts with k8s\\0")
    review = _protobuf_fields(_protobuf_fields(raw[4:]).get(2, b""))
    spec = _protobuf_fields(review.get(2, b""))
    attrs = _protobuf_fields(spec.get(1, b""))
    names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
    return {
        "spec": {
            "resourceAttributes": {
                name: attrs[number].decode()
                for number, name in enumerate(names, 1)
                if number in attrs
            }
        }
    }


def _deny_rule(body: dict[str, Any]) -> tuple[str, str, str, str]:
    """``{"namespace", "group", "resource", "verb"}`` of ``/_sandbox/deny`` (400 if incomplete)."""
    try:
        rule = tuple(str(body[k]) for k in ("namespace", "group", "resource", "verb"))
    except KeyError as exc:
        raise ApiError(400, "BadRequest", f"/_sandbox/deny needs {exc.args[0]}") from None
    if not rule[2] or not rule[3]:
        raise ApiError(400, "BadRequest", "/_sandbox/deny needs a resource and a verb")
    return rule  # type: ignore[return-value]


class _Handler(JsonHandler):
    cluster: Cluster
    #: The current request's body once read (None: not yet).
    _read: bytes | None = None

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # plumbing ---------------------------------------------------------------------------
    def _raw_body(self) -> bytes:
        """The request's body, read once (``_dispatch`` drains what no handler read)."""
        if self._read is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._read = self.rfile.read(length) if length else b""
        return self._read

    def _body(self) -> Any:
        try:
            return super()._body()
        except json.JSONDecodeError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from None

    def _dispatch(self, method: str) -> None:
        self._read = None
        try:
            self._answer(method)
        finally:
            # A body no handler read (kubectl's DELETE sends DeleteOptions) would otherwise be
            # parsed as the next request on this kept-alive connection.
            with contextlib.suppress(OSError, ValueError):
                self._raw_body()

    def _answer(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.cluster.requests.append((method, parts.path))
        if not parts.path.startswith("/_sandbox/"):
            watching = query.get("watch") in ("true", "1")
            self.cluster.calls.append((method, parts.path, watching))
        try:
            if parts.path.startswith("/_sandbox/"):
                self._send(200, self._admin(parts.path, self._body()))
                return
            if method == "POST" and parts.path.rstrip("/") == REVIEWS_PATH:
                self._send(201, self._access_review(self._review_body()))
                return
            discovery = self._discovery(parts.path)
            if discovery is not None:
                self._send(200, discovery)
                return
            self._resource(method, parts.path, query)
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except PatchError as exc:
            self._send(422, ApiError(422, "Invalid", str(exc)).status())
        except (BrokenPipeError, ConnectionResetError):
            return

    def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        cluster = self.cluster
        with cluster.lock:
            if path == "/_sandbox/conflicts":
                cluster.conflicts_to_inject = int(body.get("count", 1))
            elif path == "/_sandbox/broken":
                images = set(body.get("images", []))
                if body.get("missing"):
                    cluster.missing_images = images
                else:
                    cluster.broken_images = images
                    if not images:  # `sandbox.fault broken-image --off`: every image again
                        cluster.missing_images = set()
            elif path == "/_sandbox/oom":
                below = body.get("memory_limit_below")
                if below and memory_quantity(str(below)) is None:
                    raise ApiError(
                        400, "BadRequest", f"memory_limit_below {below!r} is not a quantity"
                    )
                cluster.oom_below = _memory(below) if below else None
            elif path == "/_sandbox/deny":
                rule = _deny_rule(body)
                if body.get("allow"):
                    cluster.denied.discard(rule)
                else:
                    cluster.denied.add(rule)
            elif path == "/_sandbox/forbid":
                cluster.forbidden = {
                    (str(r.get("group", "")), str(r["resource"]), str(r["verb"]))
                    for r in body.get("rules", [])
                }
            elif path == "/_sandbox/requests":
                requests = list(cluster.requests)
                if body.get("clear"):
                    cluster.requests.clear()
                return {"requests": requests}
            else:
                raise ApiError(404, "NotFound", f"no sandbox hook {path}")
        return {"ok": True}

    def _review_body(self) -> Any:
        """The review as JSON (the Python client) or protobuf (kubectl's typed client)."""
        if "protobuf" not in (self.headers.get("Content-Type") or ""):
            return self._body()
        return review_from_protobuf(self._raw_body())

    def _access_review(self, body: Any) -> dict[str, Any]:
        """A SelfSubjectAccessReview: allowed unless ``/_sandbox/deny`` or ``/_sandbox/forbid``
        says otherwise (no RBAC here)."""
        if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
            raise ApiError(400, "BadRequest", "a SelfSubjectAccessReview needs a spec")
        attrs = body["spec"].get("resourceAttributes") or {}
        resource = str(attrs.get("resource") or "")
        if attrs.get("subresource"):
            resource += f"/{attrs['subresource']}"
        key = (
            str(attrs.get("namespace") or ""),
            str(attrs.get("group") or ""),
            resource,
            str(attrs.get("verb") or ""),
        )
        denied = key in self.cluster.denied
        forbidden = key[1:] in self.cluster.forbidden
        status: dict[str, Any] = {"allowed": not (denied or forbidden)}
        if denied:
            status.update(denied=True, reason="denied by the sandbox's access hook")
        elif forbidden:
            status.update(denied=True, reason="forbidden by the sandbox (/_sandbox/forbid)")
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": body["spec"],
            "status": status,
        }

    def _discovery(self, path: str) -> dict[str, Any] | None:
        path = path.rstrip("/")
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                ],
            }
        groups: dict[str, list[str]] = {}
        for r in RESOURCES:
            if r.group:
                groups.setdefault(r.group, [])
                if r.version not in groups[r.group]:
                    groups[r.group].append(r.version)
        if path == "/apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in groups.items()
                ],
            }
        if path.startswith("/apis/") and path.count("/") == 2:
            group = path.split("/")[2]
            if group in groups:
                vs = groups[group]
                return {
                    "kind": "APIGroup",
                    "apiVersion": "v1",
                    "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{group}/{vs[0]}", "version": vs[0]},
                }
        group_version = None
        if path == "/api/v1":
            group_version = ("", "v1")
        elif path.startswith("/apis/") and path.count("/") == 3:
            _, _, group, version = path.split("/")
            if version in groups.get(group, []):
                group_version = (group, version)
        if group_version is None:
            return None
        group, version = group_version
        listed = []
        for r in RESOURCES:
            if (r.group, r.version) != group_version:
                continue
            listed.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": VERBS,
                    "shortNames": list(r.short),
                }
            )
            for sub in r.subresources:
                kind = "Scale" if sub == "scale" else r.kind
                entry = {
                    "name": f"{r.plural}/{sub}",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update({"group": "autoscaling", "version": "v1"})
                listed.append(entry)
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": listed,
        }

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({path})"
            )
        namespace = None
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", f"the server could not find {path}")
        resource = BY_PATH.get((group, version, rest[0]))
        if resource is None:
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource "
                f"({group or 'core'}/{version} {rest[0]})",
            )
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in resource.subresources:
            raise ApiError(404, "NotFound", f"{resource.plural} has no subresource {sub}")
        return resource, namespace, name, sub

    def _resource(self, method: str, path: str, query: dict[str, str]) -> None:
        cluster = self.cluster
        resource, namespace, name, sub = self._route(path)
        if resource.plural == "selfsubjectaccessreviews":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", "selfsubjectaccessreviews: create only")
            self._send(201, self._access_review(self._review_body()))
            return
        verb = (
            ("watch" if query.get("watch") in {"true", "1"} else "get" if name else "list")
            if method == "GET"
            else METHOD_VERBS.get(method, method.lower())
        )
        plural = f"{resource.plural}/{sub}" if sub else resource.plural
        if (resource.group, plural, verb) in cluster.forbidden:
            where = f' in the namespace "{namespace}"' if namespace else ""
            raise ApiError(
                403,
                "Forbidden",
                f"{resource.plural}{'.' + resource.group if resource.group else ''} "
                f'"{name or ""}" is forbidden: User "{SANDBOX_USER}" cannot {verb} resource '
                f'"{plural}" in API group "{resource.group}"{where}',
            )
        if not resource.namespaced and namespace is None and name is None and method == "GET":
            pass
        if method == "GET" and name is None:
            if query.get("watch") in {"true", "1"}:
                self._watch(resource, namespace, query)
                return
            items, rv = cluster.list_objects(
                resource, namespace, query.get("labelSelector"), query.get("fieldSelector")
            )
            if "as=Table" in (self.headers.get("Accept") or ""):
                self._send(200, table(resource, items, rv, cluster.clock()))
                return
            self._send(
                200,
                {
                    "kind": f"{resource.kind}List",
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )
            return
        if method == "GET":
            obj = cluster.get(resource, namespace, name or "")
            if not sub and "as=Table" in (self.headers.get("Accept") or ""):
                # `kubectl get deploy NAME` asks for one object as a Table too.
                rv = int(obj["metadata"].get("resourceVersion") or 0)
                self._send(200, table(resource, [obj], rv, cluster.clock()))
                return
            self._send(200, cluster.scale_of(resource, obj) if sub == "scale" else obj)
            return
        if method == "POST" and name is None:
            self._send(201, cluster.create(resource, namespace, self._body()))
            return
        if name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        if method == "DELETE":
            obj = cluster.delete(resource, namespace, name)
            self._send(200, obj)
            return
        body = self._body()
        with cluster.lock:
            current = cluster.get(resource, namespace, name)
            if sub == "scale":
                scale = cluster.scale_of(resource, current)
                if method == "PATCH":
                    scale = self._apply_patch(scale, body)
                else:
                    scale = {
                        **scale,
                        "spec": body.get("spec", {}),
                        "metadata": {**scale["metadata"], **(body.get("metadata") or {})},
                    }
                replicas = (scale.get("spec") or {}).get("replicas")
                if not isinstance(replicas, int) or replicas < 0:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'Scale.autoscaling "{name}" is invalid: '
                        f"spec.replicas: Invalid value: {replicas!r}: must be greater "
                        "than or equal to 0",
                    )
                current["spec"]["replicas"] = replicas
                if method == "PUT":
                    current["metadata"]["resourceVersion"] = scale["metadata"].get(
                        "resourceVersion", current["metadata"]["resourceVersion"]
                    )
                updated = cluster.replace(resource, namespace, name, current)
                self._send(200, cluster.scale_of(resource, updated))
                return
            if method == "PATCH":
                new = self._apply_patch(current, body)
                if (
                    (body.get("metadata") or {}).get("resourceVersion")
                    if isinstance(body, dict)
                    else None
                ):
                    new["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
                else:
                    new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                self._send(200, cluster.replace(resource, namespace, name, new, subresource=sub))
                return
            if method == "PUT":
                self._send(200, cluster.replace(resource, namespace, name, body, subresource=sub))
                return
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported here")

    def _apply_patch(self, current: dict[str, Any], body: Any) -> dict[str, Any]:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if kind == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            result = json_patch(current, body)
        elif kind == "application/merge-patch+json":
            result = merge_patch(current, body)
        elif kind == "application/strategic-merge-patch+json":
            result = strategic_merge_patch(current, body)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media "
                f"types include: application/json-patch+json, "
                f"application/merge-patch+json, "
                f"application/strategic-merge-patch+json (got {kind!r})",
            )
        if not isinstance(result, dict):
            raise PatchError("the patch did not produce an object")
        return result

    def _watch(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> None:
        since_text = query.get("resourceVersion")
        since = int(since_text) if since_text and since_text != "0" else None
        timeout = float(query.get("timeoutSeconds") or 300)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.cluster.watch(
                resource,
                namespace,
                since=since,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
                timeout=timeout,
            ):
                data = (json.dumps(event) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return
        self.close_connection = True
