"""Two bot processes on one MongoDB store (the sandbox's wire-protocol server) evaluate
readiness once per interval, on the ``readiness`` leader; kill the leader with SIGKILL and the
other takes the lease and makes the next evaluation, once.

The oracle is plain pymongo reading the store: the watch's claim of each interval
(``readiness:last``: when, the lease's term, the replica) and the audit log's
``readiness.checked`` records of the watch, which name the replica that evaluated. The
interval is a minute (the shortest ``schedules.yaml`` accepts) and the first evaluation comes
at once (``first_after: 0s``); the bots check the sandbox configuration against a world that
does not answer (every check a finding, in a few seconds). Real clock: about three minutes.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest

from sandbox.mongo import MongoServer
from tests.support.bots import start_replicas, stop_replicas
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # bot replicas as processes

INTERVAL = 60.0


@pytest.fixture
def state_server() -> Iterator[MongoServer]:
    server = MongoServer(name="state").start()
    yield server
    server.stop()


def pid_of(owner: str) -> int:
    """The process id in a lease owner (``host:pid:nonce``)."""
    return int(owner.split(":")[1])


def test_two_bots_evaluate_readiness_once_per_interval_and_the_survivor_takes_over(
    cli_env: dict[str, str], state_server: MongoServer, tmp_path: Path
) -> None:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text("readiness:\n  interval: 1m\n  first_after: 0s\n")
    url = state_server.uri.replace("/?", "/replicas?")  # mongodb://host:port/replicas?...
    env = {
        **cli_env,
        "RUNBOOK_BOT_STATE": url,
        "RUNBOOK_BOT_SCHEDULES": str(schedules),
        "RUNBOOK_BOT_LOG": "-",
    }
    for key in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        state_server.uri, serverSelectionTimeoutMS=5000
    )
    db = client.replicas
    claims: dict[float, dict[str, Any]] = {}  # every interval's claim, by its time

    def watch_claims() -> None:
        doc = db.kv.find_one({"_id": "readiness:last"})
        if doc and "owner" in doc["value"]:  # the seed of a new installation has none
            claims[float(doc["value"]["at"])] = doc["value"]

    def evaluations() -> list[dict[str, Any]]:
        """The watch's ``readiness.checked`` audit records, in order."""
        bodies = (json.loads(bytes(d["body"])) for d in db.audit.find().sort("seq", 1))
        return [
            b
            for b in bodies
            if b["action"] == "readiness.checked" and b["actor"]["id"] == "readiness"
        ]

    def claimed(count: int) -> bool:
        watch_claims()
        return len(claims) >= count and len(evaluations()) >= count

    bots = start_replicas(env, 2)
    try:
        wait_for(lambda: claimed(2), timeout=240, what="two evaluations")
        first, second = (claims[at] for at in sorted(claims)[:2])
        assert second["at"] - first["at"] >= INTERVAL  # once per interval
        leader = str(first["owner"])
        assert second["owner"] == leader and pid_of(leader) in bots
        # Both replicas ran throughout: the other never evaluated.
        assert {e["actor"]["name"] for e in evaluations()} == {f"readiness watch ({leader})"}

        os.kill(pid_of(leader), signal.SIGKILL)  # no release: the lease must run out
        bots.pop(pid_of(leader)).proc.communicate(timeout=30)  # also closes its pipe
        (survivor,) = bots.values()

        def survivor_claimed() -> bool:
            watch_claims()
            return any(pid_of(str(c["owner"])) == survivor.proc.pid for c in claims.values())

        wait_for(survivor_claimed, timeout=240, what="the survivor's evaluation")
        wait_for(lambda: claimed(len(claims)), what="the survivor's audit record")
        ats = sorted(claims)
        takeover = next(c for c in claims.values() if pid_of(str(c["owner"])) == survivor.proc.pid)
        before = max(at for at in ats if at < takeover["at"])
        assert takeover["at"] - before >= INTERVAL
        assert takeover["term"] > first["term"]
        # One audit record per claimed interval, each by the replica that claimed it.
        named = [e["actor"]["name"] for e in evaluations()]
        assert named == [f"readiness watch ({claims[at]['owner']})" for at in ats]
        assert all(later - earlier >= INTERVAL for earlier, later in itertools.pairwise(ats))
    finally:
        print("claims:", claims)  # shown when the test fails
        stop_replicas(bots, show=lambda line: "readiness" in line)
        client.close()
