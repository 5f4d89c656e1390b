"""The session-scoped parts of the fixtures are shared, and nothing else leaks between tests."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest


def handshake(url: str, cafile: Path) -> str:
    """A TLS handshake with the emulator, trusting only ``cafile``; the peer's subject."""
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return str(tls.version())


@pytest.mark.parametrize("turn", [1, 2])
def test_pagerduty_emulators_share_the_session_ca_and_nothing_else(
    turn: int, pagerduty_emulator: Any, pagerduty_ca: Any, tmp_path: Path
) -> None:
    session_ca = tmp_path / "session-ca.pem"
    pagerduty_ca.cert_pem.write_to_path(str(session_ca))
    assert pagerduty_emulator.ca_path.read_bytes() == session_ca.read_bytes()
    assert handshake(pagerduty_emulator.url, session_ca).startswith("TLS")
    assert pagerduty_emulator.calls() == []  # a new server: nothing from an earlier test
    if turn == 1:
        pagerduty_emulator.state.incidents["PLEAK01"] = {"id": "PLEAK01"}
    else:  # the first turn's incident, when both ran in this worker, is not here
        assert "PLEAK01" not in pagerduty_emulator.state.incidents
