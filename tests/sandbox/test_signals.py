"""The sandbox's signal exporter as a client meets it: over a real socket."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from sandbox.signals import SignalExporter
from tests.support.waiting import wait_for


def test_a_client_that_hangs_up_mid_answer_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `curl .../metrics | head`: the reader goes away while the exporter is still writing.
    # The answer is made far larger than both sockets' buffers, so the exporter is still
    # writing when the client resets the connection.
    exporter = SignalExporter().start()
    try:
        for i in range(150_000):
            exporter.set_probe("production", "us-east-1", f"service-{i}", True)
        before = set(threading.enumerate())
        host, port = exporter.address.rsplit(":", 1)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(30)
        client.connect((host, int(port)))
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: signals\r\n\r\n")
        assert client.recv(12) == b"HTTP/1.1 200"  # the exporter has started answering
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # a reset, as when the reading process exits
        wait_for(
            lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()],
            what="the exporter's request thread to end",
        )
    finally:
        exporter.stop()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
