"""Identifiers short enough to type on a phone."""

from __future__ import annotations

import os
import secrets
import socket


def new_execution_id() -> str:
    """Return an id like ``rb-7f3a2c`` (24 random bits; the store rejects the rare clash)."""
    return f"rb-{secrets.token_hex(3)}"


def process_owner() -> str:
    """Name this process for leases: host, pid and a random suffix (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
