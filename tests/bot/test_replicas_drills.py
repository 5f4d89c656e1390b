"""Two bot processes on one MongoDB store (the sandbox's wire-protocol server): a drill that
fires every minute fires exactly once per minute; kill the leader with SIGKILL and the other
takes the ``scheduler`` lease and fires the next one, once.

The oracle is plain pymongo reading the store's collections, not the code under test. This
runs on the real clock, and a minute's cron has minute resolution. So that the test does not
wait for a first minute to begin, the store is not new: it holds the drill's cursor (the last
fire handled) a minute back, as a store the replicas ran on before would, and the minute that
has just begun is due when they start (within the drill's catch-up window; one fire, on the
leader, as at any minute). The survivor's fire is the next minute: at most a minute's wait,
instead of up to two (measured in bench/README.md).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from sandbox.mongo import MongoServer
from tests.support.bots import start_replicas, stop_replicas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot replicas as processes

DRILL = "every-minute"


@pytest.fixture
def state_server() -> Iterator[MongoServer]:
    server = MongoServer(name="state").start()
    yield server
    server.stop()


def fires(db: Any) -> dict[float, dict[str, Any]]:
    """The drill's fires that started a run (a minute passed over while the replicas started
    is recorded as coalesced into the next one, and runs nothing)."""
    prefix = f"drill.fire.{DRILL}."
    found = db.kv.find({"_id": {"$regex": f"^{prefix.replace('.', '[.]')}"}})
    return {
        float(doc["_id"][len(prefix) :]): doc["value"]
        for doc in found
        if doc["value"]["state"] == "firing"
    }


def test_two_bots_on_one_mongodb_fire_each_minute_once_and_survive_the_leader(
    cli_env: dict[str, str], state_server: MongoServer, tmp_path: Path
) -> None:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(
        "drills:\n"
        f"  - name: {DRILL}\n"
        "    runbook: selftest\n"
        "    params: {environment: development}\n"
        '    cron: "* * * * *"\n'
        "    notify_before: []\n"
    )
    url = state_server.uri.replace("/?", "/replicas?")  # mongodb://host:port/replicas?...
    env = {
        **cli_env,
        "RUNBOOK_BOT_STATE": url,
        "RUNBOOK_BOT_SCHEDULES": str(schedules),
        "RUNBOOK_BOT_LOG": "-",
        "RUNBOOK_BOT_SWEEP_INTERVAL": "0.5",
    }
    for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        state_server.uri, serverSelectionTimeoutMS=5000
    )
    db = client.replicas
    # The last fire handled was a minute before the current one: that one is due at start.
    minute = time.time() // 60 * 60
    db.kv.insert_one({"_id": f"drill.cursor.{DRILL}", "value": minute - 60})
    bots = start_replicas(env, 2)
    try:

        def leader() -> dict[str, Any] | None:
            doc = db.kv.find_one({"_id": "leader.scheduler"})
            return doc["value"] if doc else None

        def executions_of(at: float) -> list[dict[str, Any]]:
            found = db.executions.find({"reason": {"$regex": f"due {_iso(at)}"}})
            return [{"state": e["state"], "requester": e["requester"]} for e in found]

        wait_for(lambda: len(fires(db)) >= 1, timeout=90, what="the first fire")
        first_at, first = min(fires(db).items())
        wait_for(
            lambda: [e["state"] for e in executions_of(first_at)] == ["succeeded"],
            timeout=60,
            what="the first run to finish",
        )
        holder = leader()
        assert holder is not None and first["term"] == holder["term"]
        leader_pid = int(str(holder["owner"]).split(":")[1])
        assert leader_pid in bots
        os.kill(leader_pid, signal.SIGKILL)  # no release: the lease must run out
        killed_at = time.time()
        bots.pop(leader_pid).proc.communicate(timeout=30)  # also closes its pipe
        (survivor,) = bots.values()

        wait_for(lambda: first_at + 60 in fires(db), timeout=120, what="the next fire")
        second = fires(db)[first_at + 60]
        new_holder = leader()
        assert new_holder is not None
        assert int(str(new_holder["owner"]).split(":")[1]) == survivor.proc.pid
        assert new_holder["term"] == second["term"] > first["term"]
        assert killed_at < first_at + 60  # the survivor fired a minute the dead one never saw

        # Each fire exactly once: one execution per fire, requested by the scheduler.
        # One read per check: two reads (all succeeded, then one of them) passed once while
        # the run was being created between them, before its history entry existed.
        wait_for(
            lambda: [e["state"] for e in executions_of(first_at + 60)] == ["succeeded"],
            timeout=90,
            what="the survivor's run to finish",
        )
        assert len(executions_of(first_at)) == 1
        assert executions_of(first_at + 60)[0]["requester"]["id"] == "scheduler"

        def history_ats() -> list[float]:
            history = db.kv.find_one({"_id": f"drill.history.{DRILL}"})
            return [float(entry["at"]) for entry in (history or {}).get("value", [])]

        wait_for(lambda: first_at + 60 in history_ats(), what="the survivor's fire in the history")
        ats = history_ats()
        assert len(ats) == len(set(ats)) and first_at in ats
    finally:
        print("fires:", fires(db))  # shown when the test fails
        print(
            "executions:", [(e["_id"], e["state"], e.get("reason")) for e in db.executions.find()]
        )
        print("history:", db.kv.find_one({"_id": f"drill.history.{DRILL}"}))
        # What each scheduler did, should this fail again.
        stop_replicas(bots, show=lambda line: "drill" in line or "supervisor" in line)
        client.close()


def _iso(at: float) -> str:
    from runbooks.engine.clock import iso

    return iso(at)
