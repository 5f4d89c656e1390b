"""The tamper-evident audit log.

Each record is stored as canonical JSON bytes (``body``) beside its ``seq`` and the previous
record's MAC (``prev``). Its MAC is HMAC-SHA256 over ``b"<seq>:<prev>:" + body`` with a key
the store does not hold (``RUNBOOK_BOT_AUDIT_KEY``). Editing a body, changing a seq, deleting
or reordering records breaks the chain at the first bad record; deleting the newest records
is caught against a head (``seq:mac``) published in the log stream. Verification hashes the
stored bytes and never re-serialises, which keeps it fast.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from runbooks.engine.clock import Clock, iso
from runbooks.engine.errors import AuditError, InvalidInput
from runbooks.engine.models import Actor, AuditRow
from runbooks.engine.plan import canonical_json
from runbooks.engine.redact import redact
from runbooks.engine.store.base import GENESIS, Store

SANDBOX_KEY_FILE = "sandbox/audit.key"


def resolve_audit_key(*, env_key: str | None, sandbox: bool, state_dir: Path) -> bytes:
    """Return the HMAC key: ``RUNBOOK_BOT_AUDIT_KEY``, or the sandbox's own key file.

    Outside the sandbox a missing key is an error: a chain signed with a key that sits next to
    the store proves nothing.
    """
    if env_key:
        if len(env_key) < 16:
            raise AuditError("RUNBOOK_BOT_AUDIT_KEY is too short; use at least 16 characters")
        return env_key.encode()
    if not sandbox:
        raise AuditError(
            "RUNBOOK_BOT_AUDIT_KEY is not set",
            hint="set it from your secret store (e.g. AWS Secrets Manager); only the sandbox "
            "configuration may use a generated local key",
        )
    path = state_dir / SANDBOX_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    head_seq: int
    head_mac: str
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def head(self) -> str:
        return f"{self.head_seq}:{self.head_mac}"


def parse_head(text: str) -> tuple[int, str]:
    seq, sep, mac = text.partition(":")
    if not sep or not seq.isdigit() or len(mac) != 64:
        raise InvalidInput(
            f"--head {text!r} is not SEQ:MAC; copy it from 'audit.verify' output or the "
            "'audit_head' field of the JSON log"
        )
    return int(seq), mac


class AuditLog:
    """Append and verify the chain; mirror every record into the structured log."""

    def __init__(self, store: Store, key: bytes, clock: Clock) -> None:
        self._store = store
        self._key = key
        self._clock = clock
        self._log = structlog.get_logger("runbook_bot.audit")

    def sign(self, seq: int, prev: str, body: bytes) -> str:
        return hmac.digest(self._key, b"%d:%s:" % (seq, prev.encode()) + body, "sha256").hex()

    def record(
        self,
        action: str,
        *,
        actor: Actor,
        outcome: str,
        target: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        reason: str | None = None,
        execution_id: str | None = None,
        incident: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditRow:
        """Append one record (secrets redacted) and emit it as one JSON log line."""
        body: dict[str, Any] = {
            "time": iso(self._clock.now()),
            "actor": actor.to_doc(),
            "action": action,
            "target": target or {},
            "params": params or {},
            "reason": reason,
            "execution_id": execution_id,
            "incident": incident,
            "outcome": outcome,
        }
        if detail:
            body["detail"] = detail
        body = _capped(redact(body))
        row = self._store.append_audit(canonical_json(body), self.sign)
        self._log.info("audit", audit_seq=row.seq, audit_head=f"{row.seq}:{row.mac}", **body)
        return row

    def verify(self, *, head: tuple[int, str] | None = None) -> VerifyResult:
        """Walk the chain; name the first bad seq."""
        expected, prev, count, last_mac = 1, GENESIS, 0, GENESIS
        digest, key = hmac.digest, self._key
        compare = hmac.compare_digest
        for row in self._store.iter_audit():
            if row.seq != expected:
                return VerifyResult(
                    False,
                    count,
                    expected - 1,
                    last_mac,
                    expected,
                    f"record seq {expected} is missing (the next stored record is seq {row.seq})",
                )
            if row.prev != prev:
                return VerifyResult(
                    False,
                    count,
                    expected - 1,
                    last_mac,
                    row.seq,
                    f"record seq {row.seq} does not link to record seq {row.seq - 1} "
                    "(a record was replaced, removed or reordered)",
                )
            mac = digest(key, b"%d:%s:" % (row.seq, row.prev.encode()) + row.body, "sha256")
            if not compare(mac.hex(), row.mac):
                return VerifyResult(
                    False,
                    count,
                    expected - 1,
                    last_mac,
                    row.seq,
                    f"record seq {row.seq} has been altered (its MAC does not match its content)",
                )
            prev = last_mac = row.mac
            expected += 1
            count += 1
        if head is not None:
            head_seq, head_mac = head
            if count < head_seq:
                return VerifyResult(
                    False,
                    count,
                    count,
                    last_mac,
                    count + 1,
                    f"records after seq {count} are missing: the head you gave is seq {head_seq}",
                )
            found = next(self._store.iter_audit(since_seq=head_seq - 1), None)
            if found is None or not compare(found.mac, head_mac):
                return VerifyResult(
                    False,
                    count,
                    count,
                    last_mac,
                    head_seq,
                    f"record seq {head_seq} does not match the head you gave",
                )
        return VerifyResult(True, count, count, last_mac)

    def tail(self, n: int) -> list[dict[str, Any]]:
        return [decode(row) for row in self._store.audit_tail(n)]

    def export(self, *, since: float | None = None) -> Iterator[dict[str, Any]]:
        since_iso = iso(since) if since is not None else None
        for row in self._store.iter_audit():
            record = decode(row)
            if since_iso is None or record["time"] >= since_iso:
                yield record


def decode(row: AuditRow) -> dict[str, Any]:
    """A stored record as a flat dict, with seq, prev and mac."""
    body: dict[str, Any] = json.loads(row.body)
    return {"seq": row.seq, **body, "prev": row.prev, "mac": row.mac}


#: The longest string an audit record keeps (a pasted log, a huge parameter): the rest is
#: replaced by a note of how much was cut, so one request cannot bloat the chain.
MAX_AUDIT_STRING = 4096


def _capped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_AUDIT_STRING:
        return value[:MAX_AUDIT_STRING] + f"... [{len(value) - MAX_AUDIT_STRING} characters cut]"
    if isinstance(value, dict):
        return {k: _capped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_capped(v) for v in value]
    return value
