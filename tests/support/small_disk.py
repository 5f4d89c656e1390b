"""A real, small file system that can be filled: a tmpfs mounted for one test.

SQLite reports a write that finds no space (ENOSPC) as SQLITE_FULL, "database or disk is
full", exactly as on a full production volume; nothing in the code under test is changed.
Mounting needs root (CAP_SYS_ADMIN); elsewhere the tests that need it skip, saying why.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

CHUNK = 64 * 1024


class SmallDisk:
    def __init__(self, path: Path, *, size: str = "4m") -> None:
        self.path = path
        self.filler = path / "filler"
        path.mkdir(parents=True, exist_ok=True)
        mount = shutil.which("mount")
        done = (
            subprocess.run(
                [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if mount
            else None
        )
        if done is None or done.returncode != 0:
            why = done.stderr.strip() if done is not None else "no mount command"
            pytest.skip(f"cannot mount a small tmpfs here (needs root, as CI runs): {why}")

    def fill(self) -> int:
        """Write until the file system refuses (ENOSPC); return the bytes written."""
        written = 0
        with self.filler.open("ab", buffering=0) as out:
            for size in (CHUNK, 4096, 512, 1):
                try:
                    while True:
                        written += out.write(b"\0" * size) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
