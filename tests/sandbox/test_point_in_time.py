"""README's point-in-time restore test as a user runs it: the sandbox as `python3 dev.py serve`
starts it (`python -m sandbox up`), writes to the rehearsal cluster, then `invoke restore.test
rehearsal --point-in-time TIME`; plain pymongo judges what reached rehearsal's scratch cluster."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.collection import Collection

from runbooks.engine.clock import iso
from runbooks.engine.settings import read_sandbox_env
from sandbox import appdata
from tests.conftest import BIN, ROOT
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the sandbox and the CLI as processes

Client = pymongo.MongoClient[dict[str, Any]]


@pytest.mark.slow
def test_readme_point_in_time_restore_test_of_rehearsal_works_in_the_sandbox(
    cli_env: dict[str, str],
) -> None:
    env = dict(cli_env)
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        env_file = Path(env["RUNBOOK_BOT_HOME"]) / "sandbox" / "env"
        wait_for(env_file.exists, timeout=120, what="the sandbox env file")
        uris = read_sandbox_env(env_file)
        # Work of someone else's dump restore test on the shared scratch server: an Atlas
        # restore wipes its target, so rehearsal's must never be this one.
        shared: Client
        with pymongo.MongoClient(uris["RESTORE_MONGODB_URI"]) as shared:
            marker: Collection[dict[str, Any]] = shared.elsewhere.marker
            marker.insert_one({"_id": "kept"})
        live: Client
        with pymongo.MongoClient(uris["REHEARSAL_MONGODB_URI"]) as live:
            orders: Collection[dict[str, Any]] = live[appdata.DATABASE].orders
            victim = orders.find_one(sort=[("_id", 1)])
            assert victim is not None
            orders.insert_one({"_id": "pit-A", "status": "pending", "total": 0})
            orders.update_one({"_id": "pit-A"}, {"$set": {"total": 1}})
            point = int(time.time())
            # Atlas restores to the second and the sandbox stamps its oplog with its wall
            # clock: the writes after the point must fall in a later second than it.
            wait_for(lambda: time.time() >= point + 1, what="the next second")
            orders.insert_one({"_id": "pit-B", "status": "pending", "total": 0})
            orders.update_one({"_id": "pit-A"}, {"$set": {"total": 2}})
            orders.delete_one({"_id": victim["_id"]})
        when = iso(float(point))
        # README's line, plus --keep-for: the run returns once restored and verified, says
        # where to connect and when the copy goes; the bot (or runs.cleanup) drops it then.
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert 'invoke restore.test rehearsal --point-in-time "$POINT" --yes' in readme
        command = [str(BIN / "invoke"), "restore.test", "rehearsal", "--point-in-time", when]
        run = subprocess.run(
            [*command, "--keep-for", "1h", "--yes"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        out = run.stdout
        assert run.returncode == 0, out + run.stderr
        assert f"point restored: {when}" in out, out
        assert "RPO achieved" not in out, out
        target = uris["REHEARSAL_SCRATCH_MONGODB_URI"].split("//", 1)[1].split("/", 1)[0]
        kept = f"kept for inspection: mongodb://{target}/{appdata.DATABASE} "
        assert kept in " ".join(out.split()), out
        assert "dropped at " in out and "invoke runs.cleanup" in out, out
        scratch: Client
        with pymongo.MongoClient(uris["REHEARSAL_SCRATCH_MONGODB_URI"]) as scratch:
            restored: Collection[dict[str, Any]] = scratch[appdata.DATABASE].orders
            assert restored.find_one({"_id": "pit-A"}) == {
                "_id": "pit-A",
                "status": "pending",
                "total": 1,
            }
            assert restored.find_one({"_id": "pit-B"}) is None
            assert restored.find_one({"_id": victim["_id"]}) == victim
            count = appdata.expected_counts("rehearsal")["orders"]
            assert restored.count_documents({}) == count + 1
        # Not due yet: runs.cleanup (where no bot runs) leaves it and says when it goes.
        cleanup = subprocess.run(
            [str(BIN / "invoke"), "runs.cleanup"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr
        assert "pending: step 2 of rb-" in cleanup.stdout, cleanup.stdout
        with pymongo.MongoClient(uris["REHEARSAL_SCRATCH_MONGODB_URI"]) as scratch:
            assert appdata.DATABASE in scratch.list_database_names()
        with pymongo.MongoClient(uris["RESTORE_MONGODB_URI"]) as shared:
            assert shared.elsewhere.marker.find_one() == {"_id": "kept"}
    finally:
        sandbox.send_signal(signal.SIGTERM)
        output, _ = sandbox.communicate(timeout=60)
    assert sandbox.returncode == 0, output
