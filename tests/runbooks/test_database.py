"""The DR database adapter (``runbooks/adapters/mongo.py``) through pymongo and requests.

No MongoDB server can be installed here: the Atlas path runs against the sandbox's Atlas
Admin API emulator (digest auth, priorities, elections) and a scripted wire-protocol server
(mockupdb) answering the replica-set commands from the same state. The self-managed path is
checked by the exact commands it sends to a scripted mockupdb server.
"""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
from mockupdb import Matcher, MockupDB

from runbooks.adapters.mongo import MongoAdapter
from runbooks.engine.config.environments import MongoConfig
from runbooks.interfaces import InfrastructureError
from sandbox import atlas

CONFIG = MongoConfig(
    uri_env="PRODUCTION_MONGODB_URI",
    kind="atlas",
    region_tags=atlas.REGION_TAGS,
    atlas_project=atlas.PROJECT,
    atlas_cluster=atlas.CLUSTER,
)


def test_topology_reports_primary_region_and_lag(cluster: atlas.ClusterState) -> None:
    cluster.lag["US_WEST_2"] = 42.0
    with MongoAdapter("production", CONFIG) as adapter:
        topology = adapter.topology()
    assert topology.primary_region == "us-east-1"
    assert topology.lag("us-west-2") == pytest.approx(42.0, abs=1.0)
    assert topology.lag("us-east-1") == 0.0
    assert {m.region for m in topology.members} == {"us-east-1", "us-west-2"}


def test_atlas_promotion_moves_the_primary_via_the_admin_api(cluster: atlas.ClusterState) -> None:
    with MongoAdapter("production", CONFIG) as adapter:
        adapter.promote("us-west-2", timeout=10, check=lambda: None)
        assert adapter.topology().primary_region == "us-west-2"
        adapter.promote("us-west-2", timeout=10, check=lambda: None)  # idempotent
    (patch,) = cluster.patches
    priorities = {
        c["regionName"]: c["priority"] for c in patch["replicationSpecs"][0]["regionConfigs"]
    }
    assert priorities == {"US_WEST_2": 7, "US_EAST_1": 6}
    assert len(cluster.patches) == 1  # the second promotion sent nothing


def test_atlas_refuses_a_wrong_key_and_nothing_moves(
    cluster: atlas.ClusterState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATLAS_PRIVATE_KEY", "not-the-key")
    with (
        pytest.raises(InfrastructureError) as caught,
        MongoAdapter("production", CONFIG) as adapter,
    ):
        adapter.promote("us-west-2", timeout=5, check=lambda: None)
    assert "HTTP 401" in caught.value.message
    assert cluster.primary == "US_EAST_1" and cluster.patches == []


def test_missing_uri_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRODUCTION_MONGODB_URI", raising=False)
    with (
        pytest.raises(InfrastructureError) as caught,
        MongoAdapter("production", CONFIG) as adapter,
    ):
        adapter.topology()
    assert "PRODUCTION_MONGODB_URI is not set" in caught.value.message


def test_self_managed_promotion_sends_reconfig_then_stepdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = MockupDB(auto_ismaster={"maxWireVersion": 21}, verbose=False)
    server.run()
    monkeypatch.setenv(
        "PRODUCTION_MONGODB_URI", f"mongodb://127.0.0.1:{server.port}/?directConnection=true"
    )
    primary = {"region": "EAST"}
    sent: list[dict[str, Any]] = []
    now = datetime.datetime(2026, 11, 26, 12, 0, 0)
    hosts = {"a:27017": "EAST", "b:27017": "EAST", "c:27017": "WEST"}

    def status(request: Any) -> bool:
        members: list[dict[str, Any]] = []
        for host, region in hosts.items():
            first = region == primary["region"] and not any(
                m["stateStr"] == "PRIMARY" for m in members
            )
            members.append(
                {"name": host, "stateStr": "PRIMARY" if first else "SECONDARY", "optimeDate": now}
            )
        request.ok(members=members)
        return True

    def config(request: Any) -> bool:
        members = [
            {"_id": i, "host": h, "priority": 1, "tags": {"region": r}}
            for i, (h, r) in enumerate(hosts.items())
        ]
        request.ok(config={"_id": "rs0", "version": 5, "members": members})
        return True

    def record(request: Any) -> bool:
        sent.append(dict(request.doc))
        if "replSetStepDown" in request.doc:
            primary["region"] = "WEST"  # the set elects the member with the highest priority
        request.ok()
        return True

    handlers = {
        "replSetGetStatus": status,
        "replSetGetConfig": config,
        "replSetReconfig": record,
        "replSetStepDown": record,
    }

    def dispatch(request: Any) -> bool:
        # By command name whatever its value (mockupdb's name matcher also compares the value).
        handler = handlers.get(next(iter(request.doc), ""))
        return bool(handler and handler(request))

    server.autoresponds(Matcher(), dispatch)
    try:
        self_managed = MongoConfig(
            uri_env="PRODUCTION_MONGODB_URI",
            kind="replica-set",
            region_tags={"us-east-1": "EAST", "us-west-2": "WEST"},
        )
        with MongoAdapter("production", self_managed) as adapter:
            adapter.promote("us-west-2", timeout=10, check=lambda: None)
    finally:
        server.stop()
    assert [next(iter(doc)) for doc in sent] == ["replSetReconfig", "replSetStepDown"]
    reconfig = sent[0]["replSetReconfig"]
    assert reconfig["version"] == 6
    assert {m["host"]: m["priority"] for m in reconfig["members"]} == {
        "a:27017": 1,
        "b:27017": 1,
        "c:27017": 10,
    }
    assert sent[1]["replSetStepDown"] == 60 and sent[1]["secondaryCatchUpPeriodSecs"] == 30


def test_promotion_times_out_with_the_reason(cluster: atlas.ClusterState) -> None:
    cluster.election_delay = 30  # an election that never finishes in time
    calls = threading.Event()
    with (
        pytest.raises(InfrastructureError) as caught,
        MongoAdapter("production", CONFIG) as adapter,
    ):
        adapter.promote("us-west-2", timeout=1.5, check=calls.set)
    assert "the primary is not in us-west-2 after 1.5s" in caught.value.message
    assert calls.is_set()  # cancellation was checked while waiting


def test_uri_and_atlas_keys_may_come_from_secrets_manager(
    cluster: atlas.ClusterState, aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection string and the Admin API key are references resolved on first use."""
    import os

    secrets = aws.client("secretsmanager")
    secrets.create_secret(
        Name="prod/mongodb-uri", SecretString=os.environ["PRODUCTION_MONGODB_URI"]
    )
    secrets.create_secret(
        Name="prod/atlas", SecretString=f'{{"private_key": "{atlas.PRIVATE_KEY}"}}'
    )
    monkeypatch.setenv("PRODUCTION_MONGODB_URI", "aws-secretsmanager:prod/mongodb-uri")
    monkeypatch.setenv("ATLAS_PRIVATE_KEY", "aws-secretsmanager:prod/atlas#private_key")
    with MongoAdapter("production", CONFIG) as adapter:
        assert adapter.topology().primary_region == "us-east-1"
        adapter.promote("us-west-2", timeout=10, check=lambda: None)  # digest auth: the key
    assert cluster.primary == "US_WEST_2"
