"""Several processes on one store: the audit chain stays one chain, and readiness follows the
store.

Writers are separate processes (not threads) appending through the real ``AuditLog`` at the
same moment, on one SQLite file and on the sandbox's wire-protocol MongoDB. The oracles are
the CLI's ``audit.verify`` (a separate process again) and the rows read with plain ``sqlite3``
or ``pymongo``: seqs 1..N with no gap or repeat, every record once, each writer's own records
in the order it wrote them, each record linked to the one before.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from runbooks.engine.store import open_store
from sandbox.mongo import MongoServer
from tests.conftest import ROOT, run_cli
from tests.support.bots import Bot, free_port, get, start_replicas, stop_replicas
from tests.support.strict_policy import STRICT_RULES, as_user
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot replicas and CLI processes

WRITERS = 4
RECORDS = 150

APPENDER = """
import sys
from pathlib import Path
import structlog
from runbooks.engine.audit import AuditLog, resolve_audit_key
from runbooks.engine.clock import SystemClock
from runbooks.engine.models import Actor, Origin
from runbooks.engine.store import open_store

url, writer, count, key = sys.argv[1:5]
structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # the rows are the oracle
store = open_store(url)
key = resolve_audit_key(env_key=key, sandbox=False, state_dir=Path.cwd())
audit = AuditLog(store, key, SystemClock())
print("ready", flush=True)
sys.stdin.readline()  # all writers start together: released by one line on stdin
for i in range(int(count)):
    audit.record("test.append", actor=Actor(writer, writer, Origin.CLI), outcome="ok",
                 detail={"writer": writer, "i": i})
store.close()
print("done", flush=True)
"""


@pytest.fixture
def mongo() -> Iterator[MongoServer]:
    server = MongoServer(name="state").start()
    yield server
    server.stop()


def append_together(url: str, key: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, url, f"w{n}", str(RECORDS), key],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(WRITERS)
    ]
    for proc in procs:  # each has opened the store and waits
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", line + proc.communicate(timeout=30)[0]
    for proc in procs:  # release them: one write each, back to back
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "done", out


def check_one_chain(rows: list[tuple[int, str, bytes, str]]) -> None:
    """Seqs 1..N, each linked to the one before, each record once, per-writer order kept."""
    assert [r[0] for r in rows] == list(range(1, WRITERS * RECORDS + 1))
    for (_, _, _, mac), (_, prev, _, _) in itertools.pairwise(rows):
        assert prev == mac
    written: dict[str, list[int]] = {}
    for _, _, body, _ in rows:
        detail = json.loads(body)["detail"]
        written.setdefault(detail["writer"], []).append(detail["i"])
    assert written == {f"w{n}": list(range(RECORDS)) for n in range(WRITERS)}


def verify(env: dict[str, str]) -> dict[str, Any]:
    done = run_cli(["audit.verify", "--json"], env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout))


def test_processes_appending_at_once_to_one_sqlite_file_keep_one_chain(
    cli_env: dict[str, str],
) -> None:
    url = cli_env["RUNBOOK_BOT_STATE"]
    run_cli(["runs.list"], cli_env)  # the CLI creates the store (schema) first
    append_together(url, cli_env["RUNBOOK_BOT_AUDIT_KEY"])
    with sqlite3.connect(url) as conn:
        rows = conn.execute("SELECT seq, prev, body, mac FROM audit ORDER BY seq").fetchall()
    before = len(rows) - WRITERS * RECORDS  # what the CLI itself audited first
    assert before >= 0
    check_one_chain([(s - before, p, b, m) for s, p, b, m in rows[before:]])
    result = verify(cli_env)
    assert result["ok"] and result["records"] == len(rows)


def test_processes_appending_at_once_to_one_mongodb_keep_one_chain(
    cli_env: dict[str, str], mongo: MongoServer
) -> None:
    url = mongo.uri.replace("/?", "/chain?")
    env = {**cli_env, "RUNBOOK_BOT_STATE": url}
    append_together(url, env["RUNBOOK_BOT_AUDIT_KEY"])
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo.uri, serverSelectionTimeoutMS=5000
    )
    try:
        docs = list(client.chain.audit.find().sort("seq", pymongo.ASCENDING))
    finally:
        client.close()
    check_one_chain([(d["seq"], d["prev"], bytes(d["body"]), d["mac"]) for d in docs])
    result = verify(env)
    assert result["ok"] and result["records"] == WRITERS * RECORDS


def test_ready_fails_naming_the_store_when_mongodb_goes_away_and_health_stays_up(
    cli_env: dict[str, str], mongo: MongoServer
) -> None:
    env = {
        **cli_env,
        "RUNBOOK_BOT_STATE": mongo.uri.replace("/?", "/ready?"),
        "RUNBOOK_BOT_LOG": "-",
    }
    for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    bot = Bot(env, free_port())
    try:
        bot.wait_ready()
        wait_for(lambda: get(bot.base + "/ready")[0] == 200, what="readiness")
        mongo.stop()
        status, body = get(bot.base + "/ready")
        assert status == 503 and body["status"] == "not ready"
        store = body["checks"]["store"]
        assert store.startswith("unreachable (mongodb://"), store
        assert "Timeout" in store or "refused" in store, store
        assert body["checks"]["config"] == "ok"
        assert get(bot.base + "/health") == (200, {"status": "ok"})
    finally:
        bot.stop()


# ------------------------------------------------------------- kill the replica mid-run


def test_kill_the_replica_running_a_step_and_another_resumes_it_each_effect_once(
    cli_env: dict[str, str], shared_state: str, tmp_path: Path
) -> None:
    """Two bots on one store. A run requested from a terminal and approved from another is
    started by the replica leading the supervisor; SIGKILL it mid-step and the other takes the
    lease and resumes the run, repeating only the step that had not finished."""
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config, ignore=shutil.ignore_patterns("example"))
    policy = config / "policy.yaml"
    policy.write_text(policy.read_text().replace("rules:\n", STRICT_RULES, 1))
    env = {
        **cli_env,
        "RUNBOOK_BOT_CONFIG": str(config),
        "RUNBOOK_BOT_STATE": shared_state,
        "RUNBOOK_BOT_LOG": "-",
        "RUNBOOK_BOT_LEASE_TTL": "2",
        "RUNBOOK_BOT_SWEEP_INTERVAL": "0.3",
    }
    for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    cli = {**env, "RUNBOOK_BOT_LOG": str(tmp_path / "cli-log.jsonl")}  # stdout is the JSON
    workdir, hold = tmp_path / "home" / "w", tmp_path / "hold"
    bots = start_replicas(env, 2)
    try:
        if shared_state.startswith("mongodb://"):
            check_indexes(shared_state)  # both replicas created them at start: no error, no copy
        asked = run_cli(
            [
                "selftest",
                "staging",
                "--yes",
                "--no-wait",
                "--json",
                "--workdir",
                str(workdir),
                "--hold-until-file",
                str(hold),
            ],
            as_user(cli, "alice"),
        )
        assert asked.returncode == 3, asked.stderr  # awaiting approval
        execution_id = json.loads(asked.stdout)["id"]
        approved = run_cli(["approvals.approve", execution_id, "--yes"], as_user(cli, "dave"))
        assert approved.returncode == 0, approved.stderr

        wait_for((workdir / "holding-2").exists, timeout=60, what="a replica to reach step 2")
        store = open_store(shared_state)
        try:
            lease = store.get_lease(execution_id)
            assert lease is not None
            runner = int(lease.owner.split(":")[1])
            assert runner in bots  # a replica runs it, not the terminals
            supervisor = store.kv_get("leader.supervisor")
            assert int(str(supervisor["owner"]).split(":")[1]) == runner  # the leader started it
            os.kill(runner, signal.SIGKILL)
            bots.pop(runner).proc.communicate(timeout=30)
            (survivor,) = bots.values()
            assert (workdir / "journal").read_text().split() == ["step-1"]
            hold.touch()

            def state() -> str:
                found = store.get_execution(execution_id)
                assert found is not None
                return found.state

            wait_for(lambda: state() == "succeeded", timeout=90, what="the survivor's resume")
            done = store.get_execution(execution_id)
            assert done is not None
            assert [s.attempts for s in done.steps] == [1, 2, 1]
            final = store.get_lease(execution_id)
            assert final is None or int(final.owner.split(":")[1]) == survivor.proc.pid
            taken_over = store.kv_get("leader.supervisor")
            assert int(str(taken_over["owner"]).split(":")[1]) == survivor.proc.pid
            assert taken_over["term"] > supervisor["term"]
        finally:
            store.close()
        assert (workdir / "journal").read_text().split() == ["step-1", "step-2", "step-3"]
        actions = [
            json.loads(line)["action"]
            for line in run_cli(["audit.export"], cli).stdout.splitlines()
        ]
        assert actions.count("execution.resumed") == 1
        assert verify(cli)["ok"]
    finally:
        stop_replicas(bots)


def check_indexes(url: str) -> None:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=5000
    )
    try:
        db = client.get_default_database()
        keys = {
            name: {tuple(i["key"].items()): bool(i.get("unique")) for i in db[name].list_indexes()}
            for name in ("executions", "audit", "events")
        }
    finally:
        client.close()
    assert keys["audit"][(("seq", 1),)] is True  # one seq, one record: the chain cannot fork
    assert keys["events"][(("id", 1),)] is True
    assert (("state", 1),) in keys["executions"] and (("created_at", -1),) in keys["executions"]
