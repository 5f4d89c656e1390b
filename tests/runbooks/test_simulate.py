"""``dr.simulate``: the annual DR simulation's data scenarios in staging, against the
sandbox's MongoDB wire servers (the live copy is only read; plain pymongo is the oracle)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from runbooks.engine import Engine
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import Refused
from runbooks.engine.models import Execution, State
from sandbox import appdata
from sandbox.mongo import MongoServer
from tests.conftest import AwsWorld
from tests.runbooks.conftest import live_engine
from tests.support.backups import output
from tests.support.people import ALICE, BOB


class Staging:
    def __init__(self) -> None:
        self.live = MongoServer(name="staging").start()
        self.scratch = MongoServer(name="restore-scratch").start()
        appdata.seed(self.live, "staging")

    def client(self, server: MongoServer) -> pymongo.MongoClient[dict[str, Any]]:
        return pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=5000)

    def scratch_databases(self) -> list[str]:
        with self.client(self.scratch) as client:
            return [n for n in client.list_database_names() if n.startswith("restore_test_")]


@pytest.fixture
def staging(monkeypatch: pytest.MonkeyPatch) -> Iterator[Staging]:
    found = Staging()
    monkeypatch.setenv("STAGING_MONGODB_URI", found.live.uri)
    monkeypatch.setenv("RESTORE_MONGODB_URI", found.scratch.uri)
    yield found
    found.live.stop()
    found.scratch.stop()


@pytest.fixture
def engine(
    sandbox_config: Config, tmp_path: Path, aws: AwsWorld, staging: Staging
) -> Iterator[Engine]:
    with live_engine(sandbox_config, tmp_path) as built:
        yield built


def run(engine: Engine, name: str, **params: Any) -> Execution:
    prepared = engine.prepare(name, params, actor=ALICE)
    execution = engine.submit(prepared, actor=ALICE)
    if execution.state == State.AWAITING_APPROVAL:
        engine.approve(execution.id, actor=BOB, plan_hash=execution.plan.hash)
    return engine.start(execution.id, actor=ALICE)


def backup(engine: Engine) -> None:
    done = run(engine, "restore.backup", environment="staging", prefix="nightly/sim")
    assert done.state == State.SUCCEEDED, done.error


def test_accidental_deletion_is_recovered_and_says_what_would_be_lost(
    engine: Engine, staging: Staging
) -> None:
    backup(engine)
    with staging.client(staging.live) as client:  # changes after the backup
        users = list(client.app.users.find().sort("_id", 1).limit(2))
        for user in users:
            client.app.users.update_one({"_id": user["_id"]}, {"$set": {"plan": "changed"}})
        client.app.orders.insert_many([{"status": "new", "n": i} for i in range(3)])
        live_before = {n: client.app[n].count_documents({}) for n in ("users", "orders")}
    done = run(
        engine,
        "dr.simulate",
        scenario="accidental-deletion",
        environment="staging",
        collection="users",
    )
    assert done.state == State.SUCCEEDED, done.error
    report = output(done)
    count = appdata.expected_counts("staging")["users"]
    assert f"dropped users ({count} documents) in the incident copy" in report
    assert f"damage: {count} documents of users damaged in the incident copy; {count - 2} " in (
        report
    )
    assert (
        "users: 478 of 480 documents as before the incident; would be lost: 0 newer than "
        "the backup, 2 changed since" in report
    )
    assert "orders: 1200 of 1203 documents as before the incident; would be lost: 3 newer" in (
        report
    )
    assert "backup checks: PASSED: checked 3 of 3 collections" in report
    assert "RTO achieved" in report and "RPO achieved" in report
    assert "5 document(s) would be lost" in report
    assert staging.scratch_databases() == []
    with staging.client(staging.live) as client:  # the live copy was only read
        assert {n: client.app[n].count_documents({}) for n in live_before} == live_before


def test_database_corruption_damages_only_the_copy_and_recovers_it(
    engine: Engine, staging: Staging
) -> None:
    backup(engine)
    done = run(engine, "dr.simulate", scenario="database-corruption", environment="staging")
    assert done.state == State.SUCCEEDED, done.error
    report = output(done)
    orders = appdata.expected_counts("staging")["orders"]  # the largest collection
    damaged = -(-orders // 20)
    assert f"corrupted {damaged} documents of orders in the incident copy" in report
    assert f"damage: {damaged} documents of orders damaged in the incident copy; {damaged} " in (
        report
    )
    assert "0 document(s) would be lost" in report
    assert staging.scratch_databases() == []
    with staging.client(staging.live) as client:
        assert client.app.orders.count_documents({"corrupted": True}) == 0


@pytest.mark.parametrize("break_glass", [False, True])
def test_production_is_refused_in_every_form(engine: Engine, break_glass: bool) -> None:
    with pytest.raises(Refused, match="never runs in production"):
        engine.prepare(
            "dr.simulate",
            {"scenario": "database-corruption", "environment": "production"},
            actor=ALICE,
            break_glass=break_glass,
        )


def test_a_live_cluster_as_the_restore_target_is_refused(
    engine: Engine, staging: Staging, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup(engine)
    monkeypatch.setenv("RESTORE_MONGODB_URI", staging.live.uri)
    with pytest.raises(Refused, match="is a live cluster"):
        engine.prepare("dr.simulate", {"scenario": "accidental-deletion"}, actor=ALICE)


def test_region_failure_says_what_it_needs(engine: Engine) -> None:
    with pytest.raises(Refused, match="needs an environment with two regions") as refused:
        engine.prepare("dr.simulate", {"scenario": "region-failure"}, actor=ALICE)
    assert "--environment rehearsal" in str(refused.value.hint)
