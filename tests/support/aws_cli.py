"""The AWS CLI (PyPI awscli) as an oracle, run in this process.

The ``aws`` command is awscli's ``create_clidriver().main(args)`` behind an interpreter start;
this runs the same driver (its parser, botocore client and JSON output) without that start,
which costs 0.5-1 s per call on the 2-core machine. It is not the code under test: an
independent client reading the same server.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any


def aws_cli(*args: str, region: str | None = None, driver: Any = None) -> Any:
    """``aws [--region REGION] --output json ARGS``: the parsed output (None when it printed
    nothing); a non-zero exit fails the test with what the CLI wrote to stderr.

    Like the command, the driver reads its endpoint, credentials and region from the process
    environment (``AWS_ENDPOINT_URL``, …): set them with ``monkeypatch.setenv`` (the ``aws``
    fixture does). ``sys.stdout`` is the process's: while the call runs, whatever another
    thread of this process prints would land in the output, so use it where nothing else in
    the test's process prints (the product running as processes, as in the sandbox tests).

    ``driver`` (from ``new_driver``) is reused instead of made anew: making one loads the
    service models (~90 ms); a call on a made one takes ~15 ms. It keeps the environment it
    was made in, so make one per test."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*(["--region", region] if region else []), "--output", "json", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = (driver or new_driver()).main(argv)
    assert code == 0, f"aws {' '.join(argv)} exited {code}: {err.getvalue()}"
    text = out.getvalue()
    return json.loads(text) if text.strip() else None


#: The service models the first driver of this process loaded, parsed once (botocore's
#: loader caches what it parsed): every later driver reads them from here instead of parsing
#: the JSON again (3 % of the fast suite's CPU went to parsing the same models per test).
_LOADER: list[Any] = []


def new_driver() -> Any:
    """awscli's driver: what the ``aws`` console script runs, with this process's model
    loader (the same files, the same search path: ``AWS_DATA_PATH`` with awscli's data)."""
    from awscli.clidriver import create_clidriver  # type: ignore[import-untyped]

    driver = create_clidriver()
    if _LOADER:
        driver.session.register_component("data_loader", _LOADER[0])
    else:
        _LOADER.append(driver.session.get_component("data_loader"))
    return driver
