"""Backups and restore tests end to end: the real pymongo adapter over TCP to the sandbox's
MongoDB wire servers (source and scratch cluster), boto3 to moto's S3; plain pymongo, boto3
and the ``bson`` package as the oracles."""

from __future__ import annotations

import gzip
import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
import pytest
from bson import json_util

from runbooks.engine import Engine
from runbooks.engine.clock import FakeClock, format_duration
from runbooks.engine.config.environments import EnvironmentsFile
from runbooks.engine.config.loader import Config
from runbooks.engine.errors import Refused
from runbooks.engine.models import State
from sandbox import appdata
from tests.conftest import AwsWorld
from tests.runbooks.conftest import live_engine
from tests.support.backups import Databases, output, run, take_backup
from tests.support.people import ALICE

BUCKET = "app-backups"


@pytest.fixture
def databases(monkeypatch: pytest.MonkeyPatch) -> Iterator[Databases]:
    found = Databases()
    monkeypatch.setenv("PRODUCTION_MONGODB_URI", found.source.uri)
    monkeypatch.setenv("RESTORE_MONGODB_URI", found.scratch.uri)
    yield found
    found.stop()


@pytest.fixture
def engine(
    sandbox_config: Config, tmp_path: Path, aws: AwsWorld, databases: Databases
) -> Iterator[Engine]:
    with live_engine(sandbox_config, tmp_path) as built:
        yield built


def s3(aws: AwsWorld) -> Any:
    return aws.client("s3")


def keys(aws: AwsWorld, prefix: str) -> list[str]:
    answer = s3(aws).list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
    return sorted(o["Key"] for o in answer.get("Contents", []))


# --- restore.backup ----------------------------------------------------------------------------


def test_a_backup_is_a_mongodump_directory_plus_a_manifest(
    engine: Engine, aws: AwsWorld, databases: Databases
) -> None:
    prefix = take_backup(engine, "nightly/one")
    assert keys(aws, prefix) == [
        f"{prefix}/app/{name}.{kind}.gz"
        for name in ("orders", "sessions", "users")
        for kind in ("bson", "metadata.json")
    ] + [f"{prefix}/runbook-bot-manifest.json"]
    # The oracle: the bson package reads the dump; plain pymongo reads the source.
    body = s3(aws).get_object(Bucket=BUCKET, Key=f"{prefix}/app/users.bson.gz")["Body"].read()
    dumped = list(bson.decode_file_iter(io.BytesIO(gzip.decompress(body))))
    with databases.client(databases.source) as client:
        assert dumped == list(client.app.users.find().sort("_id", 1))
        source_indexes = [dict(i) for i in client.app.users.list_indexes()]
    meta = s3(aws).get_object(Bucket=BUCKET, Key=f"{prefix}/app/users.metadata.json.gz")
    metadata = json_util.loads(gzip.decompress(meta["Body"].read()))
    assert metadata["collectionName"] == "users" and metadata["type"] == "collection"
    assert [i["name"] for i in metadata["indexes"]] == [i["name"] for i in source_indexes]
    raw_manifest = s3(aws).get_object(Bucket=BUCKET, Key=f"{prefix}/runbook-bot-manifest.json")
    manifest = json_util.loads(raw_manifest["Body"].read())
    assert (
        manifest["collections"]["users"]["count"] == appdata.expected_counts("production")["users"]
    )
    assert manifest["consistency_source"] == "newest updated_at"


def test_a_backup_prefix_is_never_overwritten(engine: Engine) -> None:
    take_backup(engine, "nightly/once")
    with pytest.raises(Refused, match="already holds a backup"):
        engine.prepare(
            "restore.backup", {"environment": "production", "prefix": "nightly/once"}, actor=ALICE
        )


# --- restore.test ------------------------------------------------------------------------------


def test_backup_then_restore_test_passes_every_check_and_leaves_no_scratch(
    engine: Engine, databases: Databases
) -> None:
    prefix = take_backup(engine, "nightly/good")
    done = run(engine, "restore.test", environment="production", backup=prefix)
    assert done.state == State.SUCCEEDED, done.error
    report = output(done)
    counts = appdata.expected_counts("production")
    for name, count in counts.items():
        assert f"ok   {name}: count: {count} documents (as manifest)" in report
        assert f"ok   {name}: content hash: sha256" in report
        assert f"ok   {name}: indexes:" in report
    assert 'ok   users: smoke {"status": "active"}: 960 documents (expected = 960)' in report
    assert "verdict: passed; checked 3 of 3 collections" in report
    assert "RTO achieved" in report and "(target 1h00m): met" in report
    assert "RPO achieved" in report
    assert databases.scratch_databases() == []
    with databases.client(databases.source) as client:  # the source is untouched
        assert client.app.users.count_documents({}) == counts["users"]


@pytest.mark.parametrize("runbook", ["restore.backup", "restore.test"])
def test_a_plan_is_the_same_when_planned_again_later(
    runbook: str, engine: Engine, sandbox_config: Config, tmp_path: Path
) -> None:
    """The engine re-plans at start and at approval; a plan that named the time (a backup
    prefix, a scratch database) changed a second later and fell back to awaiting approval."""
    take_backup(engine, "nightly/stable")
    clock = FakeClock(time.time())
    with live_engine(sandbox_config, tmp_path / "fake", clock=clock) as later:
        first = later.prepare(runbook, {"environment": "production"}, actor=ALICE)
        clock.advance(61)
        again = later.prepare(runbook, {"environment": "production"}, actor=ALICE)
        assert again.plan.hash == first.plan.hash


def test_latest_is_the_newest_backup(engine: Engine) -> None:
    take_backup(engine, "nightly/a")
    take_backup(engine, "nightly/b")
    prepared = engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)
    assert "s3://app-backups/nightly/b" in prepared.plan.steps[0]["description"]


def _rewrite(aws: AwsWorld, key: str, change: Any) -> None:
    body = s3(aws).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    s3(aws).put_object(Bucket=BUCKET, Key=key, Body=change(body))


def _gz(change: Any) -> Any:
    return lambda body: gzip.compress(change(gzip.decompress(body)))


def _alter_one_document(raw: bytes) -> bytes:
    documents = list(bson.decode_file_iter(io.BytesIO(raw)))
    documents[7]["status"] = "tampered"
    return b"".join(bson.encode(d) for d in documents)


def _manifest_count_plus_one(raw: bytes) -> bytes:
    manifest = json.loads(raw)
    manifest["collections"]["orders"]["count"] += 1
    return json.dumps(manifest).encode()


CORRUPTIONS = {
    "count mismatch": ("runbook-bot-manifest.json", _manifest_count_plus_one, "orders"),
    "hash mismatch": ("app/users.bson.gz", _gz(_alter_one_document), "users"),
    "truncated BSON": ("app/orders.bson.gz", _gz(lambda raw: raw[:-37]), "orders"),
    "missing metadata": ("app/sessions.metadata.json.gz", None, "sessions"),
    "missing collection": ("app/users.bson.gz", None, "users"),
    "manifest": ("runbook-bot-manifest.json", lambda raw: b"{not json", "(manifest)"),
}


@pytest.mark.parametrize("check", list(CORRUPTIONS))
def test_a_corrupt_backup_fails_naming_the_collection_and_the_check(
    check: str, engine: Engine, aws: AwsWorld, databases: Databases
) -> None:
    prefix = take_backup(engine, f"nightly/{check.replace(' ', '-')}")
    key, change, collection = CORRUPTIONS[check]
    if change is None:
        s3(aws).delete_object(Bucket=BUCKET, Key=f"{prefix}/{key}")
    else:
        _rewrite(aws, f"{prefix}/{key}", change)
    done = run(engine, "restore.test", environment="production", backup=prefix)
    assert done.state in {State.FAILED, State.COMPENSATED}, done.state
    error = done.error or ""
    assert f"{collection}: {check}" in error, error
    assert "restore test FAILED: checked" in error
    assert databases.scratch_databases() == []  # dropped on failure too


def _metadata(change: Any) -> Any:
    """Rewrite a gzipped canonical Extended JSON metadata file through ``change(metadata)``."""

    def rewrite(raw: bytes) -> bytes:
        metadata = json_util.loads(raw)
        change(metadata)
        return json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS).encode()

    return _gz(rewrite)


def _manifest(change: Any) -> Any:
    def rewrite(raw: bytes) -> bytes:
        manifest = json.loads(raw)
        change(manifest)
        return json.dumps(manifest).encode()

    return rewrite


def _claim_two_gib(raw: bytes) -> bytes:
    """The documents, then a length prefix claiming 2 GiB over 1 KiB of zeros."""
    return raw + (2**31 - 1).to_bytes(4, "little") + bytes(1024)


SIXTEEN_MIB = 16 * 1024 * 1024
_ORDERS = "runbook-bot-manifest.json"
#: case -> (object under the prefix, its rewrite, "collection: check" expected, a detail
#: expected, collections that still pass all their checks)
MALFORMED: dict[str, tuple[str, Any, str, str, int]] = {
    "empty index key": (
        "app/users.metadata.json.gz",
        _metadata(lambda m: m["indexes"][1].update(key={})),
        "users: metadata",
        "has an empty key",
        2,
    ),
    "string index spec": (
        "app/users.metadata.json.gz",
        _metadata(lambda m: m["indexes"].append("status_1")),
        "users: metadata",
        "index 4 is a string ('status_1'), not a document",
        2,
    ),
    "indexes not a list": (
        "app/users.metadata.json.gz",
        _metadata(lambda m: m.update(indexes="status_1")),
        "users: metadata",
        "indexes is a string, not a list",
        2,
    ),
    "metadata nested too deeply": (
        "app/users.metadata.json.gz",
        _gz(lambda raw: b"[" * 200_000),
        "users: metadata",
        "does not parse: nested too deeply",
        2,
    ),
    "metadata over 16 MiB": (
        "app/users.metadata.json.gz",
        _gz(lambda raw: b" " * SIXTEEN_MIB + raw),
        "users: metadata",
        "is larger than the limit of 16 MiB (16777216 bytes)",
        2,
    ),
    "65 indexes": (
        "app/users.metadata.json.gz",
        _metadata(
            lambda m: m["indexes"].extend(
                {"v": 2, "key": {f"f{i}": 1}, "name": f"f{i}_1"} for i in range(62)
            )
        ),
        "users: metadata",
        "65 indexes, more than MongoDB's 64 per collection",
        2,
    ),
    "manifest count 1e309": (
        _ORDERS,
        _manifest(lambda m: m["collections"]["orders"].update(count="1e309")),
        "orders: manifest",
        "count '1e309' is not a whole number of documents",
        2,
    ),
    "string index spec in the manifest": (
        _ORDERS,
        _manifest(lambda m: m["collections"]["orders"].update(indexes=["status_1"])),
        "orders: manifest",
        "index 1 is a string ('status_1'), not a document",
        2,
    ),
    "manifest over 16 MiB": (
        _ORDERS,
        lambda raw: raw + b" " * SIXTEEN_MIB,
        "(manifest): manifest",
        "is larger than the limit of 16 MiB (16777216 bytes)",
        0,
    ),
    "document over 16 MiB": (
        "app/orders.bson.gz",
        _gz(_claim_two_gib),
        "orders: document too large",
        "claims 2147483647 bytes, more than MongoDB's limit of 16 MiB",
        2,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_backup_fails_closed_naming_the_collection_and_the_check(
    case: str, engine: Engine, aws: AwsWorld, databases: Databases
) -> None:
    """No raw Python error: the restore test's verdict is failed, with the collection and the
    check named, and the other collections still checked."""
    prefix = take_backup(engine, f"nightly/{case.replace(' ', '-')}")
    key, change, named, detail, passing = MALFORMED[case]
    _rewrite(aws, f"{prefix}/{key}", change)
    done = run(engine, "restore.test", environment="production", backup=prefix)
    assert done.state in {State.FAILED, State.COMPENSATED}, done.state
    error = done.error or ""
    assert f"{named}: " in error and detail in error, error
    assert f"restore test FAILED: checked {passing} of " in error, error
    assert f"verdict: FAILED; checked {passing} of " in output(done)
    assert databases.scratch_databases() == []


def test_a_manifest_that_does_not_parse_is_named(engine: Engine, aws: AwsWorld) -> None:
    prefix = take_backup(engine, "nightly/bad-manifest")
    _rewrite(aws, f"{prefix}/runbook-bot-manifest.json", lambda raw: b"{not json")
    done = run(engine, "restore.test", environment="production", backup=prefix)
    assert "manifest nightly/bad-manifest/runbook-bot-manifest.json does not parse" in (
        done.error or ""
    )
    assert "checked 0 of" in (done.error or "")


def test_a_backup_with_no_collections_fails_closed(engine: Engine, aws: AwsWorld) -> None:
    manifest = {"format": "runbook-bot-backup/1", "collections": {}}
    s3(aws).put_object(
        Bucket=BUCKET, Key="nightly/empty/runbook-bot-manifest.json", Body=json.dumps(manifest)
    )
    done = run(engine, "restore.test", environment="production", backup="nightly/empty")
    assert done.state in {State.FAILED, State.COMPENSATED}
    assert "the backup holds no collections" in (done.error or "")
    assert "checked 0 of" in (done.error or "")


def test_a_manifest_listing_too_many_collections_fails_closed(
    engine: Engine, aws: AwsWorld
) -> None:
    entry = {"count": 0, "sha256": "0" * 64, "indexes": []}
    manifest = {
        "format": "runbook-bot-backup/1",
        "collections": {f"c{i}": entry for i in range(10_001)},
    }
    s3(aws).put_object(
        Bucket=BUCKET, Key="nightly/wide/runbook-bot-manifest.json", Body=json.dumps(manifest)
    )
    done = run(engine, "restore.test", environment="production", backup="nightly/wide")
    assert done.state in {State.FAILED, State.COMPENSATED}
    error = done.error or ""
    assert (
        "(backup): collections: the backup lists 10001 collections, more than the limit of 10000"
        in error
    ), error[:2000]
    assert "checked 0 of" in error
    assert len(output(done)) < 10_000  # one line for the backup, not one per collection


def test_a_foreign_mongodump_directory_restores_and_verifies(
    engine: Engine, aws: AwsWorld, databases: Databases
) -> None:
    """A dump of the app database written with plain pymongo and the bson package alone
    (mongodump's layout without --gzip, canonical Extended JSON metadata, no manifest), as
    another tool would write it."""
    with databases.client(databases.source) as client:
        for name in ("orders", "sessions", "users"):
            documents = list(client.app[name].find().sort("_id", 1))
            metadata = {
                "indexes": [dict(i) for i in client.app[name].list_indexes()],
                "uuid": "0123456789abcdef0123456789abcdef",
                "collectionName": name,
                "type": "collection",
            }
            canonical = json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS)
            s3(aws).put_object(
                Bucket=BUCKET,
                Key=f"foreign/2026-11-30/app/{name}.bson",
                Body=b"".join(bson.encode(d) for d in documents),
            )
            s3(aws).put_object(
                Bucket=BUCKET, Key=f"foreign/2026-11-30/app/{name}.metadata.json", Body=canonical
            )
    done = run(engine, "restore.test", environment="production", backup="foreign/2026-11-30")
    assert done.state == State.SUCCEEDED, done.error
    report = output(done)
    count = appdata.expected_counts("production")["users"]
    assert f"ok   users: count: {count} documents (as its .bson file)" in report
    assert "ok   users: indexes: 3 present with the same keys and options" in report
    assert "content hash" not in report.replace("added content hashes", "")
    assert "a manifest would have added content hashes" in report
    assert "RPO achieved: unknown" in report
    assert "checked 3 of 3 collections" in report
    assert databases.scratch_databases() == []


def test_a_foreign_dump_of_another_database_fails_the_smoke_queries(
    engine: Engine, aws: AwsWorld, databases: Databases
) -> None:
    documents = [{"_id": i, "sku": f"S{i}"} for i in range(50)]
    s3(aws).put_object(
        Bucket=BUCKET,
        Key="foreign/shop/shop/stock.bson",
        Body=b"".join(bson.encode(d) for d in documents),
    )
    metadata = {"indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}
    s3(aws).put_object(
        Bucket=BUCKET, Key="foreign/shop/shop/stock.metadata.json", Body=json_util.dumps(metadata)
    )
    done = run(engine, "restore.test", environment="production", backup="foreign/shop")
    error = done.error or ""
    assert 'users: smoke {"status": "active"}: 0 documents (expected = 960)' in error, error
    assert databases.scratch_databases() == []


def test_a_restore_target_that_is_the_source_is_refused(
    engine: Engine, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    take_backup(engine, "nightly/x")
    monkeypatch.setenv("RESTORE_MONGODB_URI", databases.source.uri)
    with pytest.raises(Refused, match="is the source cluster"):
        engine.prepare("restore.test", {"environment": "production"}, actor=ALICE)


def test_readiness_finds_a_restore_target_that_is_the_source(
    engine: Engine, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rule as the refusal above, as a readiness finding (and nothing else about
    the target), without writing to either cluster."""
    take_backup(engine, "nightly/x")
    monkeypatch.setenv("RESTORE_MONGODB_URI", databases.source.uri)
    report = engine.readiness(actor=ALICE, environment="production", runbook="restore.test")
    found = [(f.subject, f.detail) for f in report.problems]
    ((subject, detail),) = found
    assert subject == "restore target"
    assert "the restore target of production is the source cluster" in detail


def forecast(engine: Engine) -> tuple[bool, str]:
    report = engine.readiness(actor=ALICE, environment="production", runbook="restore.test")
    (found,) = [f for f in report.findings if f.check == "restore time forecast"]
    assert found.subject == f"restore of s3://{BUCKET}"
    return found.ok, found.detail


def test_the_restore_forecast_uses_the_throughput_restore_tests_measured(
    engine: Engine, aws: AwsWorld, sandbox_config: Config, tmp_path: Path
) -> None:
    """A restore test records the bytes it restored (the backup's objects) beside its RTO; the
    readiness check divides the newest backup's size by that throughput and compares it with
    the database's RTO. A backup eight times larger, put by boto3, is over an RTO of four
    times the measured restore: one finding; removing it resolves it."""
    assert forecast(engine)[1].startswith("no restore test has measured a throughput yet")
    take_backup(engine, "nightly/a")
    done = run(engine, "restore.test", environment="production", backup="nightly/a")
    assert done.state == State.SUCCEEDED, done.error
    (rto,) = [m for step in done.steps for m in step.measures if m["name"] == "RTO"]
    listed = s3(aws).list_objects_v2(Bucket=BUCKET, Prefix="nightly/a/")["Contents"]
    size = sum(o["Size"] for o in listed)  # the oracle: what S3 says the backup holds
    assert rto["size"] == size and rto["seconds"] > 0
    throughput = size / rto["seconds"]

    doc: dict[str, Any] = sandbox_config.environments.model_dump(mode="json")
    doc["environments"]["production"]["targets"]["database"]["rto"] = 4 * rto["seconds"]
    tight = Config(
        sandbox_config.directory,
        EnvironmentsFile.model_validate(doc),
        sandbox_config.policy,
        sandbox_config.schedules,
    )
    with live_engine(tight, tmp_path) as same_store:  # the same runs, a tighter RTO
        ok, detail = forecast(same_store)
        assert ok, detail
        assert f"restoring nightly/a ({size} bytes) at {throughput:.0f} bytes/s" in detail
        assert "the backups are not growing" in detail

        big = tmp_path / "users.bson.gz"
        big.write_bytes(os.urandom(8 * size))
        s3(aws).upload_file(str(big), BUCKET, "nightly/b/app/users.bson.gz")
        ok, detail = forecast(same_store)
        assert not ok
        predicted = format_duration(8 * size / throughput)
        assert f"restoring nightly/b ({8 * size} bytes) at {throughput:.0f} bytes/s" in detail
        goal = format_duration(4 * rto["seconds"])
        assert detail.endswith(f"takes about {predicted}: over the RTO {goal} (targets.database)")

        s3(aws).delete_object(Bucket=BUCKET, Key="nightly/b/app/users.bson.gz")
        assert forecast(same_store)[0]


def test_an_unknown_backup_prefix_names_the_ones_there(engine: Engine) -> None:
    take_backup(engine, "nightly/there")
    with pytest.raises(Exception, match="no backup with prefix 'nightly/nope'") as caught:
        engine.prepare(
            "restore.test", {"environment": "production", "backup": "nightly/nope"}, actor=ALICE
        )
    assert "nightly/there" in str(getattr(caught.value, "hint", ""))


def test_keep_for_returns_at_once_says_where_and_the_housekeeper_drops_it_when_due(
    engine: Engine, databases: Databases, sandbox_config: Config, tmp_path: Path
) -> None:
    """``--keep-for 2h``: the run ends once restored and verified, naming the scratch
    database (no credentials) and when it goes; the supervisor's sweep drops it when due on
    the engine's clock (a fake one here), audited; plain pymongo is the oracle."""
    from runbooks.engine.background.supervisor import Supervisor

    prefix = take_backup(engine, "nightly/keep")
    clock = FakeClock(time.time())
    with live_engine(sandbox_config, tmp_path / "fake", clock=clock) as later:
        done = run(later, "restore.test", environment="production", backup=prefix, keep_for="2h")
        assert done.state == State.SUCCEEDED, done.error
        [scratch] = databases.scratch_databases()
        with databases.client(databases.scratch) as client:
            assert (
                client[scratch].users.count_documents({})
                == appdata.expected_counts("production")["users"]
            )
        said = "\n".join(done.steps[1].output)
        assert "scratch database kept for inspection: mongodb://" in said, said
        assert f"/{scratch} " in said and "@" not in said  # where to connect, no credentials
        assert "dropped at " in said and "invoke runs.cleanup" in said
        supervisor = Supervisor(later)
        assert supervisor.sweep().deferred == []  # not due yet: still there
        assert databases.scratch_databases() == [scratch]
        clock.advance(2 * 3600)
        assert supervisor.sweep().deferred == [f"dropped scratch database {scratch}"]
        assert databases.scratch_databases() == []
        assert supervisor.sweep().deferred == []  # once
        actions = [json.loads(row.body) for row in later.store.iter_audit()]
        (ran,) = [a for a in actions if a["action"] == "step.deferred_ran"]
        assert ran["outcome"] == "ok" and ran["execution_id"] == done.id


def test_the_slack_card_of_a_finished_restore_test_carries_its_report(
    engine: Engine, databases: Databases
) -> None:
    from bot.slack.render import MAX_BLOCKS, SECTION_CHARS, card_blocks
    from tests.support.reports import texts

    prefix = take_backup(engine, "nightly/slack")
    done = run(engine, "restore.test", environment="production", backup=prefix)
    blocks = card_blocks(done, banner="PRODUCTION", now=engine.clock.now())
    shown = "\n".join(texts(blocks))
    lines = [line for step in done.steps for line in step.output]
    assert any("verdict: passed" in line for line in lines)
    for line in lines:
        assert line in shown, line
    assert len(blocks) <= MAX_BLOCKS and all(len(t) <= SECTION_CHARS for t in texts(blocks))


def test_dr_status_names_the_last_restore_test(engine: Engine) -> None:
    prefix = take_backup(engine, "nightly/status")
    done = run(engine, "restore.test", environment="production", backup=prefix)
    notes = engine.prepare("dr.status", {"environment": "production"}, actor=ALICE).plan.notes
    [line] = [n for n in notes if n.startswith("last restore test:")]
    assert f"SUCCEEDED ({done.id}: restore test of production: {prefix}" in line


def test_random_within_picks_among_recent_backups_and_the_same_on_a_replan() -> None:
    from runbooks.kit.backups import Backup, pick_backup

    day = 86400.0
    now = 100 * day
    found = [
        Backup("b", f"nightly/{i}", "app", now - i * day, "m", {"c": "k"}, {}) for i in range(10)
    ]
    found.sort(key=lambda b: b.created)
    picks = {pick_backup(found, "random-within 3", now=now, seed=f"s{i}").prefix for i in range(40)}
    assert picks <= {"nightly/0", "nightly/1", "nightly/2", "nightly/3"} and len(picks) > 1
    first = pick_backup(found, "random-within 3", now=now, seed="production:100")
    assert pick_backup(found, "random-within 3", now=now, seed="production:100") == first
    assert pick_backup(found, "latest", now=now, seed="").prefix == "nightly/0"
    assert pick_backup(found, "nightly/7/", now=now, seed="").prefix == "nightly/7"
    with pytest.raises(Exception, match="no backup in the last 0 day"):
        pick_backup(found[:-1], "random-within 0", now=now, seed="")
