"""Structured JSON logs (one line per event, ELK-ready), with secrets redacted.

The redaction processor runs last before rendering, so nothing a caller passes (a token in a
parameter, a password inside a connection string) reaches a log line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from runbooks.engine.redact import redact


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every key and value."""
    cleaned: MutableMapping[str, Any] = redact(dict(event_dict))
    return cleaned


def configure_logging(target: str | TextIO = "-", *, level: int = logging.INFO) -> None:
    """Send JSON lines to ``target``: ``-`` (stdout), ``stderr``, a file path, or a stream."""
    stream: TextIO
    if isinstance(target, str):
        if target in {"", "-", "stdout"}:
            stream = sys.stdout
        elif target == "stderr":
            stream = sys.stderr
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            stream = path.open("a", encoding="utf-8", buffering=1)
    else:
        stream = target
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            redact_processor,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
