"""``restore.test`` on Atlas cloud backups: a restore job through the Admin API (the sandbox
Atlas emulator) into a cluster marked as scratch, then the checks that need no manifest."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from runbooks.engine.config import load_config
from runbooks.engine.errors import ConfigError, Refused
from runbooks.engine.models import State
from sandbox import appdata, atlas
from sandbox.mongo import MongoServer
from tests.conftest import ROOT, AwsWorld
from tests.runbooks.conftest import live_engine
from tests.runbooks.test_restore import output
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
    assert "verdict: PASSED: checked 3 of 3 collections" in report
    assert "RPO achieved" in report and "target 5m" in report
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(world.scratch.uri) as client:
        # The restore wiped the target (as Atlas does); the test dropped what it restored.
        assert client.list_database_names() == []


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


def test_the_source_cluster_as_the_atlas_target_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"restore\.atlas_target_cluster is the source cluster"):
        load_config(atlas_config(tmp_path, target="production"))
