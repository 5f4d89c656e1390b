"""The sandbox's production database: a multi-region Atlas cluster, emulated.

No MongoDB server can run here, so two local servers share one ``ClusterState``:

- ``AtlasEmulator``: the Atlas Admin API endpoints DR uses, ``GET`` and ``PATCH
  /api/atlas/v2/groups/{project}/clusters/{cluster}`` (``replicationSpecs[].regionConfigs[]``
  with ``regionName`` and ``priority``; ``stateName`` IDLE/UPDATING), behind HTTP digest auth
  like Atlas. A PATCH that makes another region preferred (priority 7) starts an election that
  moves the primary there after ``election_delay`` seconds. Invalid priorities are refused as
  Atlas refuses them (the top one must be 7, each next one lower).
- ``WireDatabase``: the data-bearing MongoDB wire server of ``sandbox.mongo`` (the
  application's data lives there), also answering ``replSetGetStatus`` and
  ``replSetGetConfig`` from the state: three electable
  members in us-east-1, two in us-west-2, each tagged ``region: US_EAST_1`` etc. as Atlas tags
  them, optimes behind the primary by the configured lag.

Test hooks: ``POST /_sandbox/lag {"region": "us-west-2", "seconds": 600}``.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import secrets
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sandbox.mongo import MongoServer

PROJECT = "5f0c0ffee0c0ffee0c0ffee0"
CLUSTER = "production"
PUBLIC_KEY = "sandboxpub"
PRIVATE_KEY = "sandbox-private-key-0000"
REGION_TAGS = {"us-east-1": "US_EAST_1", "us-west-2": "US_WEST_2"}


@dataclass
class ClusterState:
    #: region tag -> (priority, electable node count), in the cluster's order
    regions: dict[str, list[int]] = field(
        default_factory=lambda: {"US_EAST_1": [7, 3], "US_WEST_2": [6, 2]}
    )
    primary: str = "US_EAST_1"
    lag: dict[str, float] = field(default_factory=lambda: {"US_WEST_2": 2.0})
    state_name: str = "IDLE"
    election_delay: float = 0.5
    patches: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def members(self) -> list[tuple[str, str]]:
        """(host, region tag) for every electable member."""
        out = []
        for tag, (_, count) in self.regions.items():
            for i in range(count):
                out.append(
                    (
                        f"{CLUSTER}-{tag.lower().replace('_', '-')}-{i}.sandbox.mongodb.net:27017",
                        tag,
                    )
                )
        return out

    def cluster_doc(self) -> dict[str, Any]:
        return {
            "name": CLUSTER,
            "clusterType": "REPLICASET",
            "stateName": self.state_name,
            "mongoDBMajorVersion": "7.0",
            "replicationSpecs": [
                {
                    "zoneName": "Zone 1",
                    "regionConfigs": [
                        {
                            "providerName": "AWS",
                            "regionName": tag,
                            "priority": priority,
                            "electableSpecs": {"instanceSize": "M30", "nodeCount": count},
                        }
                        for tag, (priority, count) in self.regions.items()
                    ],
                }
            ],
        }

    def apply(self, body: dict[str, Any]) -> str | None:
        """Apply a PATCH body; return an error detail if Atlas would refuse it."""
        specs = body.get("replicationSpecs")
        if not isinstance(specs, list) or len(specs) != 1:
            return "replicationSpecs must hold exactly one spec for a replica set"
        configs = specs[0].get("regionConfigs") or []
        new = {}
        for config in configs:
            tag = config.get("regionName")
            if tag not in self.regions:
                return f"region {tag} is not part of this cluster"
            new[tag] = int(config.get("priority", 0))
        if set(new) != set(self.regions):
            return "every region of the cluster must be listed"
        ordered = sorted(new.values(), reverse=True)
        if ordered[0] != 7 or any(a - b != 1 for a, b in itertools.pairwise(ordered)):
            return (
                "INVALID_REGION_PRIORITY: the highest priority must be 7 and each next region "
                "exactly one lower"
            )
        self.patches.append(body)
        for tag, priority in new.items():
            self.regions[tag][0] = priority
        preferred = max(new, key=lambda t: new[t])
        if preferred != self.primary:
            self.state_name = "UPDATING"
            election = threading.Timer(self.election_delay, self._elect, args=(preferred,))
            election.daemon = True
            election.start()
        return None

    def _elect(self, tag: str) -> None:
        with self.lock:
            self.primary = tag
            self.state_name = "IDLE"


# --- Admin API -----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Digest "):
            return False
        parts = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (item.partition("=") for item in header[7:].split(","))
        )
        if parts.get("username") != PUBLIC_KEY or parts.get("nonce") not in self.server.nonces:
            return False
        ha1 = hashlib.md5(f"{PUBLIC_KEY}:{self.server.realm}:{PRIVATE_KEY}".encode()).hexdigest()  # noqa: S324 - digest auth is MD5
        ha2 = hashlib.md5(f"{self.command}:{parts.get('uri', '')}".encode()).hexdigest()  # noqa: S324
        expected = hashlib.md5(  # noqa: S324
            f"{ha1}:{parts['nonce']}:{parts.get('nc', '')}:{parts.get('cnonce', '')}:"
            f"{parts.get('qop', '')}:{ha2}".encode()
        ).hexdigest()
        return secrets.compare_digest(expected, parts.get("response", ""))

    def _challenge(self) -> None:
        nonce = secrets.token_hex(16)
        self.server.nonces.add(nonce)
        self._send(
            401,
            {"error": 401, "errorCode": "UNAUTHORIZED", "detail": "You are not authorized."},
            {
                "WWW-Authenticate": f'Digest realm="{self.server.realm}", '
                f'domain="", nonce="{nonce}", algorithm=MD5, qop="auth", stale=false'
            },
        )

    def _route(self) -> str | None:
        path = urllib.parse.urlparse(self.path).path
        prefix = f"/api/atlas/v2/groups/{PROJECT}/clusters/"
        return path[len(prefix) :] if path.startswith(prefix) else None

    def _cluster(self) -> ClusterState | None:
        """The cluster this request names, or None after answering 404 as Atlas does."""
        name = self._route()
        if name == CLUSTER:
            return self.server.state
        detail = f"No cluster named {name}"
        self._send(404, {"error": 404, "errorCode": "CLUSTER_NOT_FOUND", "detail": detail})
        return None

    def do_GET(self) -> None:
        if not self._authorized():
            self._challenge()
            return
        state = self._cluster()
        if state is None:
            return
        with state.lock:
            self._send(200, state.cluster_doc())

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if not self._authorized():
            self._challenge()
            return
        state = self._cluster()
        if state is None:
            return
        with state.lock:
            problem = state.apply(body)
            if problem:
                self._send(400, {"error": 400, "errorCode": "INVALID_ATTRIBUTE", "detail": problem})
                return
            self._send(200, state.cluster_doc())

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        path = urllib.parse.urlparse(self.path).path
        state = self.server.state
        if path == "/_sandbox/lag":
            with state.lock:
                state.lag[REGION_TAGS[body["region"]]] = float(body["seconds"])
            self._send(200, {"ok": True})
        else:
            self._send(404, {"detail": f"no route {path}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ClusterState
    nonces: set[str]
    realm = "MMS Public API"


class AtlasEmulator:
    def __init__(self, state: ClusterState, port: int = 0) -> None:
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.state = state
        self.server.nonces = set()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> AtlasEmulator:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the database --------------------------------------------------------------------------------


class WireDatabase(MongoServer):
    """The production cluster's MongoDB endpoint: a data-bearing wire server (sandbox.mongo)
    that also answers the replica-set commands from ``ClusterState``."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(
            name="production",
            extra={"replSetGetStatus": self._status, "replSetGetConfig": self._config},
        )
        self.state = state

    def _status(self, _doc: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
            members: list[dict[str, Any]] = []
            for host, tag in self.state.members():
                primary = tag == self.state.primary and not any(
                    m["stateStr"] == "PRIMARY" for m in members
                )
                lag = 0.0 if primary else self.state.lag.get(tag, 0.0)
                members.append(
                    {
                        "name": host,
                        "stateStr": "PRIMARY" if primary else "SECONDARY",
                        "health": 1,
                        "optimeDate": now - datetime.timedelta(seconds=lag),
                    }
                )
        return {"set": CLUSTER, "members": members}

    def _config(self, _doc: dict[str, Any]) -> dict[str, Any]:
        with self.state.lock:
            members = [
                {
                    "_id": i,
                    "host": host,
                    "priority": self.state.regions[tag][0],
                    "tags": {"region": tag, "provider": "AWS", "nodeType": "ELECTABLE"},
                }
                for i, (host, tag) in enumerate(self.state.members())
            ]
        return {"config": {"_id": CLUSTER, "version": 1, "members": members}}
