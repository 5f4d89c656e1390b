"""``restore.test`` on Atlas cloud backups: a restore job through the Admin API (the sandbox
Atlas emulator) into a cluster marked as scratch, then the checks that need no manifest."""

from __future__ import annotations

import datetime
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
import requests
from pymongo.collection import Collection
from requests.auth import HTTPDigestAuth

from runbooks.adapters.mongo import AtlasBackupsAdapter
from runbooks.engine.background.supervisor import Supervisor
from runbooks.engine.clock import FakeClock, iso
from runbooks.engine.config.loader import load_config
from runbooks.engine.errors import ConfigError, InvalidInput, Refused
from runbooks.engine.models import State
from runbooks.interfaces import InfrastructureError
from sandbox import appdata, atlas
from sandbox.mongo import MongoServer
from tests.conftest import ROOT, AwsWorld
from tests.runbooks.conftest import live_engine
from tests.support.backups import output, run
from tests.support.people import ALICE

ATLAS_BACKUPS = """
      database: app
      timestamp_field: updated_at
      backups: atlas"""


def atlas_config(tmp_path: Path, target: str = "restore-scratch") -> Path:
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory, ignore=shutil.ignore_patterns("example"))
    path = directory / "environments.yaml"
    text = path.read_text(encoding="utf-8")
    text = text.replace(
        "      database: app\n      timestamp_field: updated_at", ATLAS_BACKUPS.strip("\n"), 1
    )
    text = text.replace(
        "      target_uri_env: RESTORE_MONGODB_URI\n      smoke_queries:\n"
        "        - {collection: users, filter: {status: active}, count: 960}",
        f"      target_uri_env: RESTORE_MONGODB_URI\n      atlas_target_cluster: {target}\n"
        "      smoke_queries:\n        - {collection: users, filter: {status: active}, count: 960}",
    )
    path.write_text(text, encoding="utf-8")
    return directory


class World:
    def __init__(self) -> None:
        self.state = atlas.ClusterState()
        self.source = atlas.WireDatabase(self.state)
        self.source.start()
        appdata.seed(self.source, "production")
        self.scratch = MongoServer(name="restore-scratch").start()
        self.other = MongoServer(name="prod-copy").start()
        self.backups = atlas.AtlasBackups(
            self.source,
            targets={
                "restore-scratch": (self.scratch, [atlas.SCRATCH_TAG]),
                "prod-copy": (self.other, [{"key": "env", "value": "production"}]),
            },
            restore_delay=0.2,
        )
        self.api = atlas.AtlasEmulator(self.state, backups=self.backups).start()

    def stop(self) -> None:
        self.api.stop()
        for server in (self.source, self.scratch, self.other):
            server.stop()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    found = World()
    for key, value in {
        "PRODUCTION_MONGODB_URI": found.source.uri,
        "RESTORE_MONGODB_URI": found.scratch.uri,
        "ATLAS_API_URL": found.api.url,
        "ATLAS_PUBLIC_KEY": atlas.PUBLIC_KEY,
        "ATLAS_PRIVATE_KEY": atlas.PRIVATE_KEY,
    }.items():
        monkeypatch.setenv(key, value)
    yield found
    found.stop()


def test_an_atlas_snapshot_is_restored_into_the_scratch_cluster_and_verified(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    snapshot = world.backups.take_snapshot()
    earlier: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(world.scratch.uri)
    earlier.leftover.things.insert_one({"from": "an earlier restore"})
    earlier.close()
    with live_engine(load_config(atlas_config(tmp_path)), tmp_path) as engine:
        prepared = engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)
        assert snapshot["id"] in prepared.plan.steps[0]["description"]
        assert "an Atlas restore wipes it" in prepared.plan.steps[0]["description"]
        execution = engine.submit(prepared, actor=ALICE)
        done = engine.start(execution.id, actor=ALICE)
    assert done.state == State.SUCCEEDED, done.error
    report = output(done)
    count = appdata.expected_counts("production")["users"]
    assert f"ok   users: count: {count} documents restored (live now: {count})" in report
    assert "ok   users: indexes: 3 present with the same keys and options" in report
    assert 'ok   users: smoke {"status": "active"}: 960 documents (expected = 960)' in report
    assert "verdict: passed; checked 3 of 3 collections" in report
    assert "RPO achieved" in report and "backup policy: every 24h00m; target 24h00m): met" in report
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(world.scratch.uri) as client:
        # The restore wiped the target (as Atlas does); the test dropped what it restored.
        assert client.list_database_names() == []


def test_atlas_backups_need_no_bucket_but_a_dump_still_does(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    snapshot = world.backups.take_snapshot()
    directory = atlas_config(tmp_path)
    path = directory / "environments.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count("    backup_bucket: app-backups\n") == 1
    path.write_text(text.replace("    backup_bucket: app-backups\n", ""), encoding="utf-8")
    config = load_config(directory)
    assert config.environment("production").backup_bucket is None
    with live_engine(config, tmp_path) as engine:
        prepared = engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)
        assert snapshot["id"] in prepared.plan.steps[0]["description"]
        with pytest.raises(
            InvalidInput,
            match=r"production has no backup bucket \(backup_bucket in environments\.yaml\); "
            r"its backups are Atlas snapshots of production, which Atlas takes",
        ):
            engine.prepare("restore.backup", {"environment": "production"}, actor=ALICE)


def test_a_target_cluster_not_marked_as_scratch_is_refused(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    world.backups.take_snapshot()
    config = load_config(atlas_config(tmp_path, target="prod-copy"))
    with (
        live_engine(config, tmp_path) as engine,
        pytest.raises(Refused, match="is not marked as scratch"),
    ):
        engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)
    assert world.backups.jobs == {}


def tag(world: World, cluster: str, tags: list[dict[str, str]]) -> None:
    """An independent client (plain requests, Atlas's digest auth) sets a cluster's tags."""
    url = f"{world.api.url}/api/atlas/v2/groups/{atlas.PROJECT}/clusters/{cluster}"
    auth = HTTPDigestAuth(atlas.PUBLIC_KEY, atlas.PRIVATE_KEY)
    requests.patch(url, json={"tags": tags}, auth=auth, timeout=5).raise_for_status()


def test_readiness_finds_the_scratch_cluster_untagged_and_clears_it_when_tagged_again(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    """``restore.test``'s readiness: the target answers, is not the source, and is tagged
    scratch in Atlas; untagging it through the Admin API opens exactly one finding."""
    world.backups.take_snapshot()
    check = "a scratch restore target"
    with live_engine(load_config(atlas_config(tmp_path)), tmp_path) as engine:

        def problems() -> list[tuple[str, str]]:
            writes = len(world.state.writes)
            report = engine.readiness(actor=ALICE, environment="production", runbook="restore.test")
            assert world.state.writes[writes:] == []
            assert {f.subject for f in report.findings if f.check == check} == {
                "restore target",
                "Atlas cluster restore-scratch",
            }
            return [(f.subject, f.detail) for f in report.problems if f.check == check]

        assert problems() == []
        tag(world, "restore-scratch", [{"key": "env", "value": "scratch"}])
        ((subject, detail),) = problems()
        assert subject == "Atlas cluster restore-scratch"
        assert "is not marked as scratch (tag runbook-bot: scratch" in detail
        tag(world, "restore-scratch", [atlas.SCRATCH_TAG])
        assert problems() == []


def test_the_source_cluster_as_the_atlas_target_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"restore\.atlas_target_cluster is the source cluster"):
        load_config(atlas_config(tmp_path, target="production"))


# --- point in time -------------------------------------------------------------------------------


def test_a_point_in_time_restore_holds_the_writes_up_to_that_second_and_none_after(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    # The oplog's clock is the test's: the snapshot 10 minutes ago, A and its update 5
    # minutes ago, the point in time 4 minutes ago, then B and the delete 3 minutes ago.
    start = float(int(time.time()))
    stamp = [start - 300]
    world.source.record_writes(clock=lambda: stamp[0])
    taken = datetime.datetime.fromtimestamp(start - 600, datetime.UTC)
    snapshot = world.backups.take_snapshot(at=taken)
    point = int(start - 240)
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(world.source.uri) as client:
        orders: Collection[dict[str, Any]] = client[appdata.DATABASE].orders
        victim = orders.find_one(sort=[("_id", 1)])
        assert victim is not None
        orders.insert_one({"_id": "pit-A", "status": "pending", "total": 0})
        orders.update_one({"_id": "pit-A"}, {"$set": {"total": 1}})
        stamp[0] = start - 180
        orders.insert_one({"_id": "pit-B", "status": "pending", "total": 0})
        orders.update_one({"_id": "pit-A"}, {"$set": {"total": 2}})
        orders.delete_one({"_id": victim["_id"]})
    when = iso(float(point))
    with live_engine(load_config(atlas_config(tmp_path)), tmp_path) as engine:
        prepared = engine.prepare(
            "restore.test",
            {"environment": "production", "point_in_time": when, "keep_for": "1h"},
            actor=ALICE,
        )
        step = prepared.plan.steps[0]["description"]
        assert f"production at {when} (Atlas snapshot {snapshot['id']}" in step
        assert f"then its oplog replayed up to {when}" in "\n".join(prepared.plan.notes)
        execution = engine.submit(prepared, actor=ALICE)
        done = engine.start(execution.id, actor=ALICE)  # returns once restored and verified
    assert done.state == State.SUCCEEDED, done.error
    # Verified and kept for inspection: look at what was restored.
    scratch: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(world.scratch.uri) as scratch:
        restored: Collection[dict[str, Any]] = scratch[appdata.DATABASE].orders
        assert restored.find_one({"_id": "pit-A"}) == {
            "_id": "pit-A",
            "status": "pending",
            "total": 1,
        }
        assert restored.find_one({"_id": "pit-B"}) is None
        assert restored.find_one({"_id": victim["_id"]}) is not None
        count = appdata.expected_counts("production")["orders"]
        assert restored.count_documents({}) == count + 1
    [job] = world.backups.jobs.values()
    assert job["deliveryType"] == "pointInTime"
    assert job["pointInTimeUTCSeconds"] == point
    assert job["replayed"] == 2  # the insert and the update of A; nothing of B or the delete
    report = output(done)
    assert f"ok   orders: count: {count + 1} documents restored (live now: {count + 1})" in report
    # A point-in-time restore has no RPO of its own: the report names the point restored.
    assert f"point restored: {when}" in report
    assert "RPO achieved" not in report
    assert not [m for step in done.steps for m in step.measures if m["name"] == "RPO"]


def test_keep_for_returns_once_verified_and_the_housekeeper_drops_the_atlas_copy_when_due(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    """``--keep-for 2h`` on Atlas snapshots: the run ends once restored and verified, saying
    where to connect (no credentials) and when the copy goes; the bot's housekeeper (the
    supervisor's sweep, leader) drops it at that time on the engine's clock (a fake one here)
    and not a second before. The oracle is the Atlas target cluster itself, read with plain
    pymongo."""
    world.backups.take_snapshot()
    clock = FakeClock(time.time())

    def restored() -> list[str]:
        client: pymongo.MongoClient[dict[str, Any]]
        with pymongo.MongoClient(world.scratch.uri) as client:
            return client.list_database_names()

    with live_engine(load_config(atlas_config(tmp_path)), tmp_path, clock=clock) as engine:
        done = run(engine, "restore.test", environment="production", keep_for="2h")
        assert done.state == State.SUCCEEDED, done.error
        assert restored() == [appdata.DATABASE]
        said = "\n".join(done.steps[1].output)
        host = f"127.0.0.1:{world.scratch.port}"
        where = (
            "database app on scratch cluster restore-scratch kept for inspection: "
            f"mongodb://{host}/app "
        )
        assert where in said, said
        assert "@" not in said  # the target's credentials are never printed
        assert done.started_at is not None
        due = done.started_at + 2 * 3600
        assert f"dropped at {iso(due)} by the bot's housekeeper" in said, said
        supervisor = Supervisor(engine)
        assert clock.now() < due - 1
        clock.advance(due - 1 - clock.now())
        assert supervisor.sweep().deferred == []  # a second early: still there
        assert restored() == [appdata.DATABASE]
        # Another Atlas restore test would wipe the kept copy (and the kept copy's drop would
        # then drop its): refused until the copy is gone, before any job starts.
        with pytest.raises(Refused, match=f"holds the copy {done.id} kept for inspection until"):
            engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)
        assert len(world.backups.jobs) == 1
        clock.advance(1)
        assert supervisor.sweep().deferred == ["dropped app on scratch cluster restore-scratch"]
        assert restored() == []
        engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)  # free again
        assert supervisor.sweep().deferred == []  # once
        ran = [r for r in engine.audit.export() if r["action"] == "step.deferred_ran"]
        assert [(r["outcome"], r["execution_id"]) for r in ran] == [("ok", done.id)]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"point_in_time": "yesterday"}, "is not an ISO 8601 time"),
        ({"point_in_time": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"point_in_time": "2001-01-01T00:00:00Z"}, "is before the oldest snapshot"),
        (
            {"point_in_time": "2001-01-01T00:00:00Z", "backup": "random-within 7"},
            "both choose what to restore",
        ),
    ],
)
def test_a_point_in_time_atlas_cannot_restore_is_refused_before_any_job(
    world: World, tmp_path: Path, aws: AwsWorld, params: dict[str, str], error: str
) -> None:
    world.source.record_writes()
    world.backups.take_snapshot()
    with (
        live_engine(load_config(atlas_config(tmp_path)), tmp_path) as engine,
        pytest.raises(InvalidInput, match=error),
    ):
        engine.prepare("restore.test", {"environment": "production", **params}, actor=ALICE)
    assert world.backups.jobs == {}


def test_a_point_in_time_of_dump_backups_is_refused(
    world: World, tmp_path: Path, aws: AwsWorld
) -> None:
    with (
        live_engine(load_config(ROOT / "config"), tmp_path) as engine,
        pytest.raises(InvalidInput, match="--point-in-time needs Atlas cloud backups"),
    ):
        engine.prepare(
            "restore.test",
            {"environment": "production", "point_in_time": iso(time.time() - 60)},
            actor=ALICE,
        )


def test_the_emulator_refuses_a_point_atlas_has_no_oplog_for(world: World) -> None:
    """The adapter against the emulator: a snapshot taken before writes were recorded has no
    oplog to replay from, and a second in the future cannot be restored."""
    world.backups.take_snapshot()  # no oplog position: not a base for a point in time
    config = load_config(ROOT / "config").environment("production").mongodb
    assert config is not None
    adapter = AtlasBackupsAdapter("production", config)
    now = int(time.time())
    for second, why in [
        (now - 1, "HTTP 400: pointInTimeUTCSeconds .* before the oldest point-in-time snapshot"),
        (now + 3600, "HTTP 400: pointInTimeUTCSeconds .* is in the future"),
    ]:
        with pytest.raises(InfrastructureError, match=why):
            adapter.start_point_in_time_restore(second, "restore-scratch")
    assert world.backups.jobs == {}
