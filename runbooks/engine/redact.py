"""Remove secrets from anything that is logged or audited.

Three nets: keys whose names say "secret" (token, password, ...) lose their value; values
that look like credentials (Slack tokens, AWS keys, ``user:password@`` in URLs, bearer
tokens, PEM blocks) are masked wherever they appear, including inside longer strings; and
values registered as secrets (``register_secret``: everything resolved from Secrets Manager)
are masked wherever they appear.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"

_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|credential|authorization|private[_-]?key|"
    r"signing[_-]?key|audit[_-]?key|session[_-]?key|cookie)",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host -> scheme://user:***@host (MongoDB, AMQP, HTTP ...)
    (
        re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/?#@\s]+:)[^@/?#\s]+(?P<post>@)", re.I),
        r"\g<pre>" + MASK + r"\g<post>",
    ),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{6,}"), "xox?-" + MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"), "xapp-" + MASK),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        "-----PRIVATE KEY " + MASK + "-----",
    ),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^&\s;]+)"), r"\1=" + MASK),
)


#: Cheap pre-check: a string that matches none of these cannot match any pattern above, so
#: the common case (ids, names, short text) costs one search instead of seven substitutions.
_TRIGGER = re.compile(
    r"://|xox|xapp-|AKIA|ASIA|bearer|token|PRIVATE KEY|password|passwd|pwd|secret", re.IGNORECASE
)


#: Secret values known to this process (resolved from Secrets Manager): masked wherever they
#: appear, even where nothing about them looks like a credential.
_KNOWN: set[str] = set()
MIN_KNOWN_LENGTH = 6


def register_secret(value: str) -> None:
    """Mask ``value`` in everything logged or audited from now on."""
    if len(value) >= MIN_KNOWN_LENGTH:
        _KNOWN.add(value)


def redact_text(text: str) -> str:
    """Mask credential-looking substrings of ``text``, and every registered secret."""
    for known in _KNOWN:
        if known in text:
            text = text.replace(known, MASK)
    if not _TRIGGER.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Tell whether a mapping key names a secret (``password``, ``slack_token`` ...)."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any, *, key: str | None = None) -> Any:
    """Return a copy of ``value`` with secrets masked, recursing into mappings and lists."""
    if key is not None and is_secret_key(key) and value not in (None, "", False):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
