"""A full disk under the state store, for real (a small tmpfs filled to the last byte): the
terminal says where the store is and what to run, exits 1, prints no traceback; once space is
freed, ``runs.resume`` finishes the run."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, run_cli
from tests.support.small_disk import SmallDisk
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow  # the runbook CLI as subprocesses


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    small = SmallDisk(tmp_path / "disk")
    try:
        yield small
    finally:
        small.unmount()


def lease_until(state: Path, execution_id: str) -> float | None:
    db = sqlite3.connect(state)
    try:
        row = db.execute(
            "SELECT until FROM leases WHERE execution_id = ?", (execution_id,)
        ).fetchone()
    finally:
        db.close()
    return None if row is None else float(row[0])


def test_a_full_disk_mid_run_is_one_clear_message_and_resume_finishes(
    disk: SmallDisk, cli_env: dict[str, str], tmp_path: Path
) -> None:
    state = disk.path / "state.db"
    env = {**cli_env, "RUNBOOK_BOT_STATE": str(state), "RUNBOOK_BOT_LEASE_TTL": "1"}
    go = tmp_path / "go"
    work = tmp_path / "home" / "selftest" / "development"
    run = subprocess.Popen(
        [str(BIN / "runbook"), "selftest", "development", "--yes", "--hold-until-file", str(go)],
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for((work / "holding-2").exists, what="step 2 to hold")
        assert disk.fill() > 0
        go.touch()
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, (out, err)
    assert "Traceback" not in out + err
    (execution_id,) = [w for w in err.split() if w.startswith("rb-")]
    assert (
        f"error: the state store at {state} is full; free space and run runs.resume "
        f"{execution_id}" in " ".join(err.split())
    )

    disk.free()
    # The run's lease (1 s here) runs out: nobody else may resume it before that.
    wait_for(
        lambda: (lease_until(state, execution_id) or 0.0) < time.time(),
        what="the dead run's lease to expire",
    )
    resumed = run_cli(["runs.resume", execution_id], env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert [p.name for p in sorted(work.glob("step-*"))] == ["step-1", "step-2", "step-3"]
    journal = (work / "journal").read_text().split()
    assert journal == ["step-1", "step-2", "step-3"]


def test_a_full_disk_before_the_request_is_one_clear_message(
    disk: SmallDisk, cli_env: dict[str, str]
) -> None:
    state = disk.path / "state.db"
    env = {**cli_env, "RUNBOOK_BOT_STATE": str(state)}
    assert run_cli(["runs.list"], env).returncode == 0  # the store exists, empty
    disk.fill()
    result = run_cli(["selftest", "development", "--yes"], env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert f"error: the state store at {state} is full; free space and try again" in " ".join(
        result.stderr.split()
    )
