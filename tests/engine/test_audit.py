"""The audit chain: tampering is caught and named; secrets never reach the log or the store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbooks.engine.audit import AuditLog, parse_head, resolve_audit_key
from runbooks.engine.clock import FakeClock
from runbooks.engine.errors import AuditError, InvalidInput
from runbooks.engine.store.sqlite import SqliteStore
from tests.conftest import AUDIT_KEY, ROOT, run_cli
from tests.support.people import ALICE


def fill(path: Path, n: int) -> AuditLog:
    store = SqliteStore(path)
    audit = AuditLog(store, AUDIT_KEY.encode(), FakeClock())
    for i in range(n):
        audit.record("test.event", actor=ALICE, outcome="ok", detail={"i": i})
    return audit


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_intact_chain_verifies(tmp_path: Path) -> None:
    result = fill(tmp_path / "a.db", 10).verify()
    assert result.ok and result.count == 10 and result.head_seq == 10


@pytest.mark.parametrize(
    ("statements", "bad_seq", "problem"),
    [
        (["UPDATE audit SET body = replace(body, 'ok', 'no') WHERE seq = 4"], 4, "altered"),
        (["DELETE FROM audit WHERE seq = 5"], 5, "missing"),
        (
            [
                "UPDATE audit SET seq = 100 WHERE seq = 3",
                "UPDATE audit SET seq = 3 WHERE seq = 4",
                "UPDATE audit SET seq = 4 WHERE seq = 100",
            ],
            3,
            "does not link",
        ),
        (["DELETE FROM audit WHERE seq = 1"], 1, "missing"),
        (
            ["UPDATE audit SET mac = (SELECT mac FROM audit WHERE seq = 2) WHERE seq = 6"],
            6,
            "altered",
        ),
    ],
    ids=["edit", "delete", "reorder", "delete-first", "forged-mac"],
)
def test_tampering_is_caught_at_the_first_bad_seq(
    tmp_path: Path, statements: list[str], bad_seq: int, problem: str
) -> None:
    audit = fill(tmp_path / "t.db", 10)
    tamper(tmp_path / "t.db", *statements)
    result = audit.verify()
    assert not result.ok and result.bad_seq == bad_seq and problem in (result.problem or "")


def test_deleting_the_newest_records_is_caught_against_a_head(tmp_path: Path) -> None:
    audit = fill(tmp_path / "h.db", 10)
    head = audit.verify().head
    tamper(tmp_path / "h.db", "DELETE FROM audit WHERE seq >= 9")
    assert audit.verify().ok  # without a head, a truncated chain looks whole
    result = audit.verify(head=parse_head(head))
    assert not result.ok and result.bad_seq == 9 and "missing" in (result.problem or "")
    with pytest.raises(InvalidInput, match="not SEQ:MAC"):
        parse_head("10")


def test_a_different_key_cannot_produce_a_valid_chain(tmp_path: Path) -> None:
    fill(tmp_path / "k.db", 3)
    other = AuditLog(
        SqliteStore(tmp_path / "k.db"), b"another-key-of-sufficient-length", FakeClock()
    )
    result = other.verify()
    assert not result.ok and result.bad_seq == 1


@given(
    n=st.integers(min_value=1, max_value=12),
    data=st.data(),
)
def test_any_single_byte_edit_is_caught_at_its_seq(
    tmp_path_factory: pytest.TempPathFactory, n: int, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.db"
    audit = fill(path, n)
    seq = data.draw(st.integers(min_value=1, max_value=n), label="seq")
    conn = sqlite3.connect(path)
    body = bytearray(conn.execute("SELECT body FROM audit WHERE seq = ?", (seq,)).fetchone()[0])
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1), label="index")
    body[index] = (body[index] + data.draw(st.integers(1, 255), label="delta")) % 256
    with conn:
        conn.execute("UPDATE audit SET body = ? WHERE seq = ?", (bytes(body), seq))
    conn.close()
    result = audit.verify()
    assert not result.ok and result.bad_seq == seq


@pytest.mark.slow  # the CLI as a process
def test_cli_audit_verify_exit_codes_name_the_seq(tmp_path: Path, cli_env: dict[str, str]) -> None:
    db = Path(cli_env["RUNBOOK_BOT_STATE"])
    for _ in range(2):
        assert (
            run_cli(
                ["selftest", "development", "--yes", "--workdir", str(tmp_path / "home" / "w")],
                cli_env,
            ).returncode
            == 0
        )
    intact = run_cli(["audit.verify"], cli_env)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("audit chain intact:")
    head = intact.stdout.split("head ")[1].strip()
    total = int(head.split(":")[0])
    cases = [
        ("UPDATE audit SET body = replace(body, 'alice', 'mallory') WHERE seq = 3", 3),
        ("DELETE FROM audit WHERE seq = 5", 5),
        ("UPDATE audit SET seq = -1 WHERE seq = 7", 7),  # moved out of place
    ]
    for statement, seq in cases:
        backup = db.read_bytes()
        tamper(db, statement)
        broken = run_cli(["audit.verify", "--json"], cli_env)
        assert broken.returncode == 1, broken.stdout
        report = json.loads(broken.stdout)
        assert report["ok"] is False and report["bad_seq"] == seq
        db.write_bytes(backup)
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    tamper(db, f"DELETE FROM audit WHERE seq > {total - 2:d}")  # noqa: S608 - test tampering
    assert run_cli(["audit.verify"], cli_env).returncode == 0
    truncated = run_cli(["audit.verify", "--head", head], cli_env)
    assert truncated.returncode == 1
    assert f"seq {total - 1}" in truncated.stdout


def test_sandbox_key_is_generated_once_and_production_needs_a_key(tmp_path: Path) -> None:
    first = resolve_audit_key(env_key=None, sandbox=True, state_dir=tmp_path)
    assert first == resolve_audit_key(env_key=None, sandbox=True, state_dir=tmp_path)
    assert (tmp_path / "sandbox" / "audit.key").stat().st_mode & 0o077 == 0
    with pytest.raises(AuditError, match="RUNBOOK_BOT_AUDIT_KEY is not set"):
        resolve_audit_key(env_key=None, sandbox=False, state_dir=tmp_path)
    with pytest.raises(AuditError, match="too short"):
        resolve_audit_key(env_key="short", sandbox=False, state_dir=tmp_path)


APPENDER = textwrap.dedent(
    """
    import sys, time
    from runbooks.engine.audit import AuditLog
    from runbooks.engine.clock import SystemClock
    from runbooks.engine.logs import configure_logging
    from runbooks.engine.models import Actor, Origin
    from runbooks.engine.store.sqlite import SqliteStore
    configure_logging(sys.argv[3])
    audit = AuditLog(SqliteStore(sys.argv[1]), sys.argv[2].encode(), SystemClock())
    actor = Actor(sys.argv[4], sys.argv[4], Origin.CLI)
    end, n = time.monotonic() + float(sys.argv[5]), 0
    while time.monotonic() < end:
        audit.record("load", actor=actor, outcome="ok", detail={"n": n})
        n += 1
    print(n)
    """
)


def test_two_processes_append_at_once_into_one_intact_chain(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    SqliteStore(db).close()  # create the schema once, as the bot does at start
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                APPENDER,
                str(db),
                AUDIT_KEY,
                str(tmp_path / f"{who}.log"),
                who,
                "2.5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for who in ("bot", "terminal")
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (_out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    counts = [int(out) for out, _ in outputs]
    assert min(counts) > 50  # both really wrote, interleaved
    audit = AuditLog(SqliteStore(db), AUDIT_KEY.encode(), FakeClock())
    result = audit.verify()
    assert result.ok and result.count == sum(counts)
    actors = {r["actor"]["id"] for r in audit.export()}
    assert actors == {"bot", "terminal"}
