"""The environment's MongoDB for DR: where the primary is, replication lag per region, and
moving the primary to another region.

Topology comes from the database itself, the same way for Atlas and self-managed replica
sets: ``replSetGetStatus`` (member states and optimes) and ``replSetGetConfig`` (each member's
``region`` tag; Atlas tags its nodes ``region: US_EAST_1``, a self-managed set is tagged by its
operators). Lag of a member = the primary's optime minus the member's.

Promotion differs:
- Atlas: the Admin API (``PATCH /api/atlas/v2/groups/{project}/clusters/{cluster}``) gives the
  target region priority 7 and the others 6, 5, ...; Atlas runs the election. Digest auth with
  ``ATLAS_PUBLIC_KEY`` / ``ATLAS_PRIVATE_KEY``, base URL ``ATLAS_API_URL``.
- Self-managed: ``replSetReconfig`` raising the target region's members' priorities above the
  rest, then ``replSetStepDown`` on the current primary.
Both then wait until the database reports the primary in the target region.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import pymongo
import requests
from pymongo.errors import PyMongoError
from requests.auth import HTTPDigestAuth

from runbooks.adapters import secret_env
from runbooks.engine.clock import parse_iso
from runbooks.engine.config.environments import MongoConfig
from runbooks.interfaces import (
    AtlasRegion,
    CloudSnapshot,
    DbMember,
    DbTopology,
    InfrastructureError,
)

ATLAS_MEDIA_TYPE = "application/vnd.atlas.2023-02-01+json"
DEFAULT_ATLAS_URL = "https://cloud.mongodb.com"
POLL_S = 1.0
#: The first look after a promotion request, doubling up to POLL_S: an election that takes a
#: fraction of a second is seen (and measured for the predicted RTO) within 0.1 s of it, not
#: at the next whole second.
FIRST_POLL_S = 0.1


class AtlasApi:
    """The few Atlas Admin API calls DR needs."""

    def __init__(self, base_url: str, project: str, cluster: str, auth: Any) -> None:
        self.url = f"{base_url.rstrip('/')}/api/atlas/v2/groups/{project}/clusters/{cluster}"
        self.cluster = cluster
        self.session = requests.Session()
        self.session.auth = auth
        self.session.headers.update({"Accept": ATLAS_MEDIA_TYPE, "Content-Type": ATLAS_MEDIA_TYPE})

    def _request(self, method: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.session.request(method, self.url, json=body, timeout=30)
        except requests.RequestException as exc:
            raise InfrastructureError(f"Atlas cluster {self.cluster}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.text
            except ValueError:
                detail = response.text
            raise InfrastructureError(
                f"Atlas cluster {self.cluster}: HTTP {response.status_code}: {detail}"
            )
        doc: dict[str, Any] = response.json()
        return doc

    def cluster_doc(self) -> dict[str, Any]:
        return self._request("GET")

    def at(self, suffix: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        """A request under the cluster's URL (``/backup/snapshots``), or with a leading
        ``../`` under another cluster of the project (``../scratch``)."""
        base = self.url
        if suffix.startswith("../"):
            base, suffix = self.url.rsplit("/", 1)[0], "/" + suffix[3:]
        saved, self.url = self.url, base + suffix
        try:
            return self._request(method, body)
        finally:
            self.url = saved

    def prefer_region(self, tag: str) -> None:
        """Priority 7 for ``tag``'s region, then 6, 5, ... for the others in their order."""
        doc = self.cluster_doc()
        specs = doc.get("replicationSpecs") or []
        if not specs:
            raise InfrastructureError(f"Atlas cluster {self.cluster} has no replicationSpecs")
        for spec in specs:
            configs = spec.get("regionConfigs") or []
            if not any(c.get("regionName") == tag for c in configs):
                raise InfrastructureError(
                    f"Atlas cluster {self.cluster} has no electable nodes in {tag}; regions: "
                    f"{', '.join(c.get('regionName', '?') for c in configs)}"
                )
            ordered = sorted(
                configs, key=lambda c: (c.get("regionName") != tag, -int(c.get("priority", 0)))
            )
            for priority, config in zip(range(7, 0, -1), ordered, strict=False):
                config["priority"] = priority
        self._request("PATCH", {"replicationSpecs": specs})


def connect(
    uri_env: str, timeout: float, label: str, *, per_call: bool = True
) -> pymongo.MongoClient[dict[str, Any]]:
    """A client for the connection string in ``$uri_env`` where every call has a bound.

    A server that accepts connections and never answers (a hung login, a stuck primary)
    must not hang a report at 3 a.m. ``per_call=False`` leaves out the whole-operation
    ``timeoutMS`` (a long cursor over a big collection is many calls, each bounded by the
    socket timeout).
    """
    uri = secret_env(uri_env)
    if not uri:
        raise InfrastructureError(
            f"{label}: {uri_env} is not set",
            hint="set it to the cluster's connection string (a secret)",
        )
    timeout_ms = int(timeout * 1000)
    options: dict[str, Any] = {
        "serverSelectionTimeoutMS": timeout_ms,
        "connectTimeoutMS": timeout_ms,
        "socketTimeoutMS": timeout_ms,
    }
    if per_call:
        options["timeoutMS"] = timeout_ms
    try:
        return pymongo.MongoClient(uri, **options)
    except (PyMongoError, ValueError) as exc:
        raise InfrastructureError(f"{label}: {uri_env}: {exc}") from None


class AtlasBackupsAdapter:
    """The environment's Atlas cloud backups: snapshots and automated restore jobs."""

    def __init__(self, environment: str, config: MongoConfig) -> None:
        self.environment = environment
        self.config = config

    def _api(self) -> AtlasApi:
        return atlas_api(self.environment, self.config, "use Atlas cloud backups")

    def snapshots(self) -> list[CloudSnapshot]:
        api = self._api()
        try:
            found = api.at("/backup/snapshots").get("results") or []
        finally:
            api.session.close()
        snapshots = [
            CloudSnapshot(str(s["id"]), parse_iso(str(s["createdAt"])), str(s.get("status", "?")))
            for s in found
        ]
        return sorted(snapshots, key=lambda s: s.created)

    def cluster_tags(self, cluster: str) -> dict[str, str]:
        api = self._api()
        try:
            doc = api.at(f"../{cluster}")
        finally:
            api.session.close()
        return {str(t.get("key")): str(t.get("value")) for t in doc.get("tags") or []}

    def start_restore(self, snapshot_id: str, target_cluster: str) -> str:
        return self._start_job(
            {"deliveryType": "automated", "snapshotId": snapshot_id}, target_cluster
        )

    def start_point_in_time_restore(self, second: int, target_cluster: str) -> str:
        return self._start_job(
            {"deliveryType": "pointInTime", "pointInTimeUTCSeconds": second}, target_cluster
        )

    def _start_job(self, what: dict[str, Any], target_cluster: str) -> str:
        api = self._api()
        body = {
            **what,
            "targetClusterName": target_cluster,
            "targetGroupId": self.config.atlas_project,
        }
        try:
            return str(api.at("/backup/restoreJobs", "POST", body)["id"])
        finally:
            api.session.close()

    def restore_finished(self, job_id: str) -> bool:
        api = self._api()
        try:
            job = api.at(f"/backup/restoreJobs/{job_id}")
        finally:
            api.session.close()
        for flag in ("failed", "cancelled", "expired"):
            if job.get(flag):
                raise InfrastructureError(
                    f"{self.environment} database: Atlas restore job {job_id} {flag}"
                )
        return bool(job.get("finishedAt"))


def atlas_api(environment: str, config: MongoConfig, why: str) -> AtlasApi:
    if not (config.atlas_project and config.atlas_cluster):
        raise InfrastructureError(
            f"{environment} database: atlas_project and atlas_cluster are needed to {why} "
            "(mongodb in environments.yaml)"
        )
    public, private = secret_env("ATLAS_PUBLIC_KEY"), secret_env("ATLAS_PRIVATE_KEY")
    if not (public and private):
        raise InfrastructureError(
            f"{environment} database: ATLAS_PUBLIC_KEY and ATLAS_PRIVATE_KEY are not set"
        )
    return AtlasApi(
        os.environ.get("ATLAS_API_URL") or DEFAULT_ATLAS_URL,
        config.atlas_project,
        config.atlas_cluster,
        HTTPDigestAuth(public, private),
    )


class MongoAdapter:
    def __init__(self, environment: str, config: MongoConfig) -> None:
        self.environment = environment
        self.config = config
        self._tags = {tag: region for region, tag in config.region_tags.items()}
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None

    def _db(self) -> pymongo.MongoClient[dict[str, Any]]:
        if self._client is None:
            self._client = connect(
                self.config.uri_env, self.config.timeout, f"{self.environment} database"
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> MongoAdapter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _command(self, name: str, value: Any = 1, **extra: Any) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = self._db().admin.command(name, value, **extra)
            return reply
        except PyMongoError as exc:
            timeouts = (
                pymongo.errors.NetworkTimeout,
                pymongo.errors.ExecutionTimeout,
                pymongo.errors.ServerSelectionTimeoutError,
            )
            if isinstance(exc, timeouts):
                raise InfrastructureError(
                    f"{self.environment} database: {name}: timed out after "
                    f"{self.config.timeout:g} s ({type(exc).__name__})"
                ) from None
            raise InfrastructureError(f"{self.environment} database: {name}: {exc}") from None

    def ping(self) -> None:
        self._command("ping")

    def topology(self) -> DbTopology:
        status = self._command("replSetGetStatus")
        config = self._command("replSetGetConfig")["config"]
        regions = {
            m["host"]: self._tags.get((m.get("tags") or {}).get("region", ""))
            for m in config.get("members", [])
        }
        primary_optime = next(
            (m["optimeDate"] for m in status["members"] if m.get("stateStr") == "PRIMARY"), None
        )
        members = []
        for m in status["members"]:
            lag = None
            if primary_optime is not None and m.get("stateStr") == "SECONDARY":
                lag = max(0.0, (primary_optime - m["optimeDate"]).total_seconds())
            members.append(
                DbMember(
                    host=m["name"], region=regions.get(m["name"]), state=m["stateStr"], lag=lag
                )
            )
        return DbTopology(tuple(members))

    def atlas_regions(self) -> tuple[AtlasRegion, ...]:
        if self.config.kind != "atlas":
            raise InfrastructureError(
                f"{self.environment} database: a self-managed replica set has no Atlas regions"
            )
        api = atlas_api(self.environment, self.config, "read the cluster's regions")
        try:
            doc = api.cluster_doc()
        finally:
            api.session.close()
        return tuple(
            AtlasRegion(
                tag=str(config.get("regionName", "?")),
                priority=int(config.get("priority") or 0),
                electable=int((config.get("electableSpecs") or {}).get("nodeCount") or 0),
                read_only=int((config.get("readOnlySpecs") or {}).get("nodeCount") or 0),
            )
            for spec in doc.get("replicationSpecs") or []
            for config in spec.get("regionConfigs") or []
        )

    def promote(self, region: str, *, timeout: float, check: Callable[[], None]) -> None:
        tag = self.config.region_tags.get(region)
        if tag is None:
            raise InfrastructureError(
                f"{self.environment} database: no region tag for {region} "
                "(mongodb.region_tags in environments.yaml)"
            )
        if self.topology().primary_region == region:
            return
        if self.config.kind == "atlas":
            api = self._atlas()
            try:
                api.prefer_region(tag)
            finally:
                api.session.close()
        else:
            self._reconfigure(tag)
        deadline = time.monotonic() + timeout
        pause = FIRST_POLL_S
        while self.topology().primary_region != region:
            check()
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"{self.environment} database: the primary is not in {region} after "
                    f"{timeout:g}s"
                )
            time.sleep(pause)
            pause = min(POLL_S, pause * 2)

    def _atlas(self) -> AtlasApi:
        return atlas_api(self.environment, self.config, "promote a region on Atlas")

    def _reconfigure(self, tag: str) -> None:
        config = self._command("replSetGetConfig")["config"]
        for member in config["members"]:
            in_target = (member.get("tags") or {}).get("region") == tag
            if member.get("priority", 1) > 0:  # arbiters and hidden members stay at 0
                member["priority"] = 10 if in_target else 1
        config["version"] = int(config["version"]) + 1
        self._command("replSetReconfig", config)
        # The primary may already have stepped down after the reconfig (the connection drops).
        with contextlib.suppress(InfrastructureError):
            self._command("replSetStepDown", 60, secondaryCatchUpPeriodSecs=30)
