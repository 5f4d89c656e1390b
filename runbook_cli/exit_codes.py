"""The terminal's exit-code contract, in one module every task imports (none imports back).

0 done, 1 failed (compensated, cancelled), 2 refused or invalid input, 3 still pending
(``--no-wait``, waiting for approval); 141 when the reader of stdout went away.
"""

from __future__ import annotations

import os
import sys

EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_PENDING = 0, 1, 2, 3
#: A closed pipe (``runbook runs.list | head``): what a shell reports for a SIGPIPE death.
EXIT_CLOSED_PIPE = 128 + 13


def reader_left() -> int:
    """Stop writing to a stdout nobody reads any more; the exit code to leave with.

    stdout is pointed at /dev/null so the interpreter's final flush stays quiet too.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_CLOSED_PIPE
