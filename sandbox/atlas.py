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

Cloud backups (``AtlasBackups``, when given, one per source cluster): ``GET
.../clusters/{cluster}/backup/snapshots`` (snapshots of that cluster's wire server's data; the
sandbox backs up ``production`` and ``rehearsal``), ``POST .../backup/restoreJobs``
(``deliveryType: automated``, ``snapshotId``, ``targetClusterName``, ``targetGroupId``; the
job wipes the target cluster's wire server and loads the snapshot, ``finishedAt`` set when
done), ``GET .../backup/restoreJobs/{id}``, and ``GET .../clusters/{target}`` with its
``tags`` (a target belongs to the source cluster whose backups restore into it); ``PATCH`` of a
target with ``{"tags": [...]}`` replaces its tags, as Atlas does.
Point-in-time restores (``deliveryType: pointInTime`` with
``pointInTimeUTCSeconds``, Atlas's names): the job loads the newest snapshot taken by the end
of that second, then replays the source's oplog (``MongoServer.record_writes``) from the
snapshot's position through that second (inclusive); a second in the future, or before the
oldest snapshot that has an oplog position, is refused 400 ``INVALID_POINT_IN_TIME``.
Gaps: no download delivery, no job cancellation, point in time to the second (Atlas: to the
oplog timestamp).

More clusters of the project (``others``: the sandbox's two-region ``rehearsal`` cluster,
which ``dr.simulate --scenario region-failure`` fails over and back) answer the same cluster
endpoints, each from its own ``ClusterState`` and ``WireDatabase``.

Test hooks: ``POST /_sandbox/lag {"region": "us-west-2", "seconds": 600}`` (``"cluster"``
names another cluster; default production); ``POST /_sandbox/nodes {"region": "us-west-2",
"electable": 0, "read_only": 2}`` sets a region's electable and read-only node counts, as a
change made in Atlas's UI would (a region without electable nodes shows priority 0; read-only
members replicate, tagged ``nodeType: READ_ONLY``, and never lead). ``ClusterState.writes``
is the write log (Admin API PATCH/POST and wire write commands).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import secrets
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox.local_http import JsonHandler, LocalServer, QuietServer
from sandbox.mongo import WRITE_COMMANDS, MongoServer, replay

PROJECT = "5f0c0ffee0c0ffee0c0ffee0"
CLUSTER = "production"
PUBLIC_KEY = "sandboxpub"
PRIVATE_KEY = "sandbox-private-key-0000"
REGION_TAGS = {"us-east-1": "US_EAST_1", "us-west-2": "US_WEST_2"}


@dataclass
class ClusterState:
    #: the cluster's name in the project (the sandbox also serves a ``rehearsal`` cluster)
    name: str = CLUSTER
    #: region tag -> (priority, electable node count), in the cluster's order
    regions: dict[str, list[int]] = field(
        default_factory=lambda: {"US_EAST_1": [7, 3], "US_WEST_2": [6, 2]}
    )
    primary: str = "US_EAST_1"
    lag: dict[str, float] = field(default_factory=lambda: {"US_WEST_2": 2.0})
    #: region tag -> read-only node count (none by default)
    read_only: dict[str, int] = field(default_factory=dict)
    state_name: str = "IDLE"
    election_delay: float = 0.5
    patches: list[dict[str, Any]] = field(default_factory=list)
    #: The write log: every call that may change the cluster (Admin API PATCH and POST, not
    #: the sandbox's hooks; write commands on its wire server), as (what, name).
    writes: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def members(self) -> list[tuple[str, str]]:
        """(host, region tag) for every electable member."""
        out = []
        for tag, (_, count) in self.regions.items():
            for i in range(count):
                host = f"{self.name}-{tag.lower().replace('_', '-')}-{i}.sandbox.mongodb.net"
                out.append((f"{host}:27017", tag))
        return out

    def read_only_members(self) -> list[tuple[str, str]]:
        """(host, region tag) for every read-only member."""
        return [
            (f"{self.name}-{tag.lower().replace('_', '-')}-ro-{i}.sandbox.mongodb.net:27017", tag)
            for tag, count in self.read_only.items()
            for i in range(count)
        ]

    def cluster_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
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
                            "priority": priority if count else 0,
                            "electableSpecs": {"instanceSize": "M30", "nodeCount": count},
                            **(
                                {"readOnlySpecs": {"instanceSize": "M30", "nodeCount": ro}}
                                if (ro := self.read_only.get(tag, 0))
                                else {}
                            ),
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


# --- cloud backups -------------------------------------------------------------------------------

SCRATCH_TAG = {"key": "runbook-bot", "value": "scratch"}


@dataclass
class AtlasBackups:
    """Cloud backups of one cluster (``source``, a ``WireDatabase`` named as the cluster):
    snapshots of its wire server's data, and restore jobs that wipe a target cluster and load
    a snapshot into it, as Atlas does.

    ``targets``: cluster name -> (its wire server, its tags); a cluster tagged
    ``runbook-bot: scratch`` is one restore tests may use.
    """

    source: MongoServer
    targets: dict[str, tuple[MongoServer, list[dict[str, str]]]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    restore_delay: float = 0.3
    lock: threading.Lock = field(default_factory=threading.Lock)
    _data: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: snapshot id -> (epoch seconds taken, the source's oplog length then, or None)
    _points: dict[str, tuple[float, int | None]] = field(default_factory=dict)

    @property
    def cluster(self) -> str:
        """The name of the cluster these are backups of."""
        return self.source.name

    def take_snapshot(self, at: datetime.datetime | None = None) -> dict[str, Any]:
        """Copy the source's databases (documents and indexes) as a completed snapshot."""
        moment = at or datetime.datetime.now(datetime.UTC)
        copy: dict[str, Any] = {}
        with self.source.lock:
            oplog = self.source.oplog
            position = None if oplog is None else len(oplog)
            client = self.source.client
            for db_name in client.list_database_names():
                database = client[db_name]
                copy[db_name] = {
                    name: (list(database[name].find()), database[name].index_information())
                    for name in database.list_collection_names()
                }
        snapshot = {
            "id": secrets.token_hex(12),
            "createdAt": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": "completed",
            "snapshotType": "scheduled",
            "replicaSetName": self.cluster,
        }
        with self.lock:
            self.snapshots.append(snapshot)
            self._data[snapshot["id"]] = copy
            self._points[snapshot["id"]] = (moment.timestamp(), position)
        return snapshot

    def _snapshot_for(self, second: Any) -> tuple[str | None, str]:
        """The snapshot a point-in-time restore to ``second`` starts from, or (None, why)."""
        if isinstance(second, bool) or not isinstance(second, int):
            return None, "pointInTimeUTCSeconds must be an integer number of seconds"
        if second > datetime.datetime.now(datetime.UTC).timestamp():
            return None, f"pointInTimeUTCSeconds {second} is in the future"
        with self.lock:
            usable = [
                (taken, sid)
                for sid, (taken, position) in self._points.items()
                if position is not None and taken < second + 1
            ]
        if not usable:
            return None, (
                f"pointInTimeUTCSeconds {second} is before the oldest point-in-time snapshot"
            )
        return max(usable)[1], ""

    def start_job(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        delivery = body.get("deliveryType")
        if delivery not in {"automated", "pointInTime"}:
            return 400, _problem(
                "INVALID_ATTRIBUTE", "deliveryType must be automated or pointInTime"
            )
        if body.get("targetGroupId") != PROJECT:
            return 400, _problem("INVALID_ATTRIBUTE", "targetGroupId must name this project")
        target = body.get("targetClusterName")
        if target not in self.targets:
            return 404, _problem("CLUSTER_NOT_FOUND", f"No cluster named {target}")
        point = None
        if delivery == "pointInTime":
            point = body.get("pointInTimeUTCSeconds")
            snapshot_id, why = self._snapshot_for(point)
            if snapshot_id is None:
                return 400, _problem("INVALID_POINT_IN_TIME", why)
        else:
            snapshot_id = body.get("snapshotId")
            if snapshot_id is None:
                return 400, _problem("INVALID_ATTRIBUTE", "snapshotId is required")
            if snapshot_id not in self._data:
                return 404, _problem("SNAPSHOT_NOT_FOUND", f"No snapshot {snapshot_id}")
        job = {
            "id": secrets.token_hex(12),
            "snapshotId": snapshot_id,
            "pointInTimeUTCSeconds": point,
            "targetClusterName": target,
            "targetGroupId": PROJECT,
            "deliveryType": delivery,
            "createdAt": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "finishedAt": None,
            "failed": False,
            "cancelled": False,
            "expired": False,
        }
        with self.lock:
            self.jobs[job["id"]] = job
        timer = threading.Timer(self.restore_delay, self._restore, args=(job["id"],))
        timer.daemon = True
        timer.start()
        return 200, job

    def _restore(self, job_id: str) -> None:
        job = self.jobs[job_id]
        server, _tags = self.targets[job["targetClusterName"]]
        copy = self._data[job["snapshotId"]]
        with server.lock:  # an Atlas restore wipes the target cluster
            client = server.client
            for name in client.list_database_names():
                client.drop_database(name)
            for db_name, collections in copy.items():
                for name, (documents, indexes) in collections.items():
                    collection = client[db_name][name]
                    if documents:
                        collection.insert_many([dict(d) for d in documents])
                    else:
                        client[db_name].create_collection(name)
                    for index, info in indexes.items():
                        if index == "_id_":
                            continue
                        options = {k: v for k, v in info.items() if k not in {"key", "v", "ns"}}
                        collection.create_index(list(info["key"]), name=index, **options)
            point = job["pointInTimeUTCSeconds"]
            if point is not None:
                _taken, position = self._points[job["snapshotId"]]
                with self.source.lock:
                    later = list((self.source.oplog or [])[position or 0 :])
                job["replayed"] = replay(client, [e for e in later if e.at < point + 1])
        with self.lock:
            job["finishedAt"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem(code: str, detail: str) -> dict[str, Any]:
    return {"errorCode": code, "detail": detail}


# --- Admin API -----------------------------------------------------------------------------------


class _Handler(JsonHandler):
    server: _Server

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
        if name in self.server.clusters:
            return self.server.clusters[name]
        detail = f"No cluster named {name}"
        self._send(404, {"error": 404, "errorCode": "CLUSTER_NOT_FOUND", "detail": detail})
        return None

    def _backup_route(self) -> tuple[AtlasBackups | None, list[str]] | None:
        """(the named cluster's backups, if it has any; the path after ``backup/``) for a
        backup endpoint, else None."""
        route = self._route() or ""
        cluster, _, rest = route.partition("/backup/")
        if not rest or not self.server.backups:
            return None
        return self.server.backups.get(cluster), rest.split("/")

    def _target_tags(self, name: str | None) -> list[dict[str, str]] | None:
        """The tags of a restore target cluster, or None if no backups restore into it."""
        for backups in self.server.backups.values():
            if name in backups.targets:
                return backups.targets[name][1]
        return None

    def _get_backup(self, backups: AtlasBackups | None, parts: list[str]) -> None:
        if backups is None:
            self._send(404, {"error": 404, **_problem("RESOURCE_NOT_FOUND", self.path)})
            return
        with backups.lock:
            if parts == ["snapshots"]:
                results = list(reversed(backups.snapshots))
                self._send(200, {"results": results, "totalCount": len(results)})
            elif len(parts) == 2 and parts[0] == "restoreJobs" and parts[1] in backups.jobs:
                self._send(200, backups.jobs[parts[1]])
            else:
                self._send(404, {"error": 404, **_problem("RESOURCE_NOT_FOUND", self.path)})

    def do_GET(self) -> None:
        if not self._authorized():
            self._challenge()
            return
        backup = self._backup_route()
        if backup is not None:
            self._get_backup(*backup)
            return
        name = self._route()
        tags = self._target_tags(name)
        if tags is not None:
            self._send(200, {"name": name, "clusterType": "REPLICASET", "tags": tags})
            return
        state = self._cluster()
        if state is None:
            return
        with state.lock:
            self._send(200, state.cluster_doc())

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.state.writes.append(("PATCH", urllib.parse.urlparse(self.path).path))
        if not self._authorized():
            self._challenge()
            return
        tags = self._target_tags(self._route())
        if tags is not None:  # a restore target: Atlas's PATCH replaces its tags
            if not isinstance(body.get("tags"), list):
                self._send(400, {"error": 400, **_problem("INVALID_ATTRIBUTE", "tags")})
                return
            tags[:] = [{"key": str(t["key"]), "value": str(t["value"])} for t in body["tags"]]
            self._send(200, {"name": self._route(), "clusterType": "REPLICASET", "tags": tags})
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
        if not path.startswith("/_sandbox/"):
            state.writes.append(("POST", path))
        backup = self._backup_route()
        if backup is not None:
            if not self._authorized():
                self._challenge()
                return
            backups, parts = backup
            if parts == ["restoreJobs"] and backups is not None:
                status, doc = backups.start_job(body)
                self._send(status, {"error": status, **doc} if status >= 400 else doc)
            else:
                self._send(404, {"error": 404, **_problem("RESOURCE_NOT_FOUND", self.path)})
            return
        if path == "/_sandbox/lag":
            state = self.server.clusters.get(body.get("cluster", CLUSTER), state)
            with state.lock:
                state.lag[REGION_TAGS[body["region"]]] = float(body["seconds"])
            self._send(200, {"ok": True})
        elif path == "/_sandbox/nodes":
            state = self.server.clusters.get(body.get("cluster", CLUSTER), state)
            tag = REGION_TAGS[body["region"]]
            with state.lock:
                state.regions[tag][1] = int(body["electable"])
                state.read_only[tag] = int(body.get("read_only", 0))
            self._send(200, state.cluster_doc())
        else:
            self._send(404, {"detail": f"no route {path}"})


class _Server(QuietServer):
    state: ClusterState
    clusters: dict[str, ClusterState]
    #: source cluster name -> its cloud backups
    backups: dict[str, AtlasBackups]
    nonces: set[str]
    realm = "MMS Public API"


class AtlasEmulator(LocalServer[_Server]):
    def __init__(
        self,
        state: ClusterState,
        port: int = 0,
        *,
        backups: AtlasBackups | Sequence[AtlasBackups] | None = None,
        others: list[ClusterState] | None = None,
    ) -> None:
        server = _Server(("127.0.0.1", port), _Handler)
        server.state = state
        server.clusters = {c.name: c for c in [state, *(others or [])]}
        if isinstance(backups, AtlasBackups):
            backups = [backups]
        server.backups = {b.cluster: b for b in backups or []}
        server.nonces = set()
        super().__init__(server)


# --- the database --------------------------------------------------------------------------------


class WireDatabase(MongoServer):
    """The production cluster's MongoDB endpoint: a data-bearing wire server (sandbox.mongo)
    that also answers the replica-set commands from ``ClusterState``."""

    def __init__(self, state: ClusterState) -> None:
        super().__init__(
            name=state.name,
            extra={"replSetGetStatus": self._status, "replSetGetConfig": self._config},
        )
        self.state = state

    def run(self, name: str, doc: dict[str, Any], database: str) -> dict[str, Any]:
        if name.lower() in WRITE_COMMANDS:
            self.state.writes.append(("wire", name))
        return super().run(name, doc, database)

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
            members += [  # read-only members replicate like secondaries and never lead
                {
                    "name": host,
                    "stateStr": "SECONDARY",
                    "health": 1,
                    "optimeDate": now - datetime.timedelta(seconds=self.state.lag.get(tag, 0.0)),
                }
                for host, tag in self.state.read_only_members()
            ]
        return {"set": self.state.name, "members": members}

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
            members += [
                {
                    "_id": len(members) + i,
                    "host": host,
                    "priority": 0,
                    "tags": {"region": tag, "provider": "AWS", "nodeType": "READ_ONLY"},
                }
                for i, (host, tag) in enumerate(self.state.read_only_members())
            ]
        return {"config": {"_id": self.state.name, "version": 1, "members": members}}
