"""Run the ``runbook`` CLI as a child process and read its peak resident memory.

The peak comes from the kernel (``os.wait4``'s rusage of that one child), so a test can bound
what a command costs in memory: a resource bound, not a timing one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = Path(sys.executable).parent / "runbook"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Measured:
    returncode: int
    stdout: str
    stderr: str
    #: the child's peak resident set size (bytes)
    peak_rss: int


def run_cli_measured(args: list[str], env: dict[str, str], *, timeout: float = 300) -> Measured:
    """Run ``runbook ARGS`` (stdin not a terminal) and wait for it with ``os.wait4``. The
    timeout only kills a child that hangs, so the test fails instead of hanging."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [str(RUNBOOK), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=ROOT,
        )
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            returncode=process.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            peak_rss=usage.ru_maxrss * 1024,  # kilobytes on Linux
        )


def gzip_stream(parts: Iterable[bytes]) -> bytes:
    """One gzip member of the concatenated parts, compressed as they come (a part may repeat
    a small buffer many times: nothing of the decompressed size is held at once)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [compressor.compress(part) for part in parts]
    out.append(compressor.flush())
    return b"".join(out)


def repeated(chunk: bytes, total: int) -> Iterable[bytes]:
    """``total`` bytes of ``chunk`` repeated (``total`` a multiple of its length)."""
    for _ in range(total // len(chunk)):
        yield chunk
