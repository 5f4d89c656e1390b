"""Remove secrets from anything that is logged, audited, stored or sent.

Three nets:

1. **Keys.** A mapping key (or a ``key=value`` / ``key: value`` inside text) whose *words* name
   a secret loses its value. A key is split into words on ``_ - . space`` and camelCase
   (``SecretAccessKey`` is secret, access, key); a key is secret when a word is one of
   ``SECRET_WORDS``, ends with one of ``SECRET_SUFFIXES`` (``authtoken``, ``dbpassword``), or two
   words read ``<kind> key`` (``api_key``, ``private-key``, ``signingKey``). Whole words only:
   ``bypassed_approvals``, ``passive_region``, ``compass`` and ``tokenizer`` stay readable.
2. **Shapes.** Values that look like credentials are masked wherever they appear, inside longer
   strings too: ``user:password@`` in URLs, Slack (``xox?-``, ``xapp-``, incoming-webhook
   URLs), AWS access key ids, GitHub (``ghp_ gho_ ghu_ ghs_ ghr_ github_pat_``) and a few other
   scanners' prefixes, ``Bearer``/``Basic``/``Token token=`` credentials, PEM private key blocks
   (multi-line, or cut off before their END line).
3. **Known values.** Values registered as secrets (``register_secret``: everything resolved from
   Secrets Manager) are masked wherever they appear.

One module, used by every edge: the log processor, the audit log, reasons as they enter the
engine, the Slack client, PagerDuty notes and pages.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping
from typing import Any

MASK = "***"

#: A key with one of these words names a secret.
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "cookies",
        "apikey",
        "privatekey",
    }
)
#: A word ending so is secret too (``accesstoken``, ``dbpassword``, ``clientsecret``).
SECRET_SUFFIXES = ("password", "passwd", "secret", "token", "apikey", "privatekey")
#: ``<word> key`` names a secret for these words (``api_key``, ``signingKey``).
KEY_KINDS = frozenset(
    {
        "api",
        "private",
        "signing",
        "audit",
        "session",
        "encryption",
        "master",
        "routing",
        "integration",
        "webhook",
    }
)

#: Words of a key: runs of capitals (an acronym), a capitalised or lower-case word, digits.
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")

_PEM = (
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
    r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|.*\Z)"
)

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(_PEM, re.S), "-----PRIVATE KEY " + MASK + "-----"),
    # scheme://user:password@host -> scheme://user:***@host (MongoDB, AMQP, HTTP ...)
    (
        re.compile(r"(?P<pre>[a-z][a-z0-9+.-]*://[^:/?#@\s]+:)[^@/?#\s]+(?P<post>@)", re.I),
        r"\g<pre>" + MASK + r"\g<post>",
    ),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]{6,}"), "xox?-" + MASK),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{6,}"), "xapp-" + MASK),
    (
        re.compile(r"(https://hooks\.slack\.com/services/)[A-Za-z0-9/_-]+"),
        r"\g<1>" + MASK,
    ),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"\b(gh[pousr]_)[A-Za-z0-9]{20,255}\b"), r"\g<1>" + MASK),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,255}"), "github_pat_" + MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), "glpat-" + MASK),
    (re.compile(r"\b(sk|rk)_live_[A-Za-z0-9]{16,}"), r"\g<1>_live_" + MASK),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), "AIza" + MASK),
    (re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), "npm_" + MASK),
    (re.compile(r"\bpypi-AgE[A-Za-z0-9_-]{20,}"), "pypi-" + MASK),
    # PagerDuty's REST header: Authorization: Token token=<key>
    (re.compile(r"(?i)\b(token\s+token=)[^\s\"',;&]+"), r"\g<1>" + MASK),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 " + MASK),
    # After "token" or "basic", only what has a digit in it: "token rotation" is
    # prose, "token 9f2c..." is a credential.
    (
        re.compile(r"(?i)\b(token|basic)\s+(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{8,}"),
        r"\1 " + MASK,
    ),
)

#: ``key=value``, ``key: value``, ``"key": "value"`` inside text: masked when the key's words
#: name a secret (the same rule as mapping keys).
_ASSIGNMENT = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<key>[A-Za-z][A-Za-z0-9_.-]{0,80})"
    r"(?P<sep>[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"'&;,)}\]]+)"
)
#: Words that introduce a credential rather than being one (``Authorization: Bearer ...``).
_SCHEMES = frozenset({"bearer", "basic", "token", MASK})


#: Cheap pre-check: a string that matches none of these cannot match any pattern above, so
#: the common case (ids, names, short text) costs one search instead of every substitution.
#: It is searched in the case-folded text, in lower case: with ``re.IGNORECASE`` the search
#: took 10x as long (16 vs 1.7 us for a step's description), and every event, audit record
#: and log line passes here. ``_folded`` folds at least what IGNORECASE does for these words
#: (``ſ`` is s, the Kelvin sign k, ``İ`` and ``ı`` are i).
_TRIGGER = re.compile(
    r"://|xox|xapp-|akia|asia|gh[pousr]_|github_pat_|glpat-|_live_|aiza|npm_|pypi-|bearer|basic|"
    r"token|private key|pass|pwd|secret|key|auth|cookie|credential"
)


#: Secret values known to this process (resolved from Secrets Manager): masked wherever they
#: appear, even where nothing about them looks like a credential.
_KNOWN: set[str] = set()
MIN_KNOWN_LENGTH = 6


#: Bumped after every new known secret: the memo below is keyed by it, so a text masked
#: before the secret was known is masked again (a stale entry is never looked up).
_generation = [0]
_registering = threading.Lock()  # held while a secret is added and the generation bumped


def register_secret(value: str) -> None:
    """Mask ``value`` in everything logged or audited from now on."""
    if len(value) < MIN_KNOWN_LENGTH or value in _KNOWN:
        return
    # Under a lock: two threads incrementing at once could set the generation back, and a
    # text remembered before the second secret would then be served under the new number.
    with _registering:
        _KNOWN.add(value)
        _generation[0] += 1  # after the add: whoever reads the new generation sees the secret


def _mask_assignment(match: re.Match[str]) -> str:
    value = match.group("value")
    if value.lower() in _SCHEMES or not is_secret_key(match.group("key")):
        return match.group(0)
    return match.group("key") + match.group("sep") + MASK


def _folded(text: str) -> str:
    """``text`` case-folded, with the dotless ``ı`` and the dotted ``İ`` (``i`` + U+0307 once
    folded) as ``i``: ``re.IGNORECASE`` matches both to ``i`` and casefold does not."""
    folded = text.casefold()
    if not folded.isascii():
        folded = folded.replace("i\u0307", "i").replace("\u0131", "i")
    return folded


#: Texts longer than this are masked without the memo (it holds what it is given).
_MEMO_MAX_LENGTH = 1024


def redact_text(text: str) -> str:
    """Mask credential-looking substrings of ``text``, and every registered secret.

    The same text passes here several times (a step's output is in its saved execution, its
    audit record, its event and the audit log line): short texts are remembered, by the
    generation of known secrets they were masked under."""
    if len(text) > _MEMO_MAX_LENGTH:
        return _redact_text(text)
    return _remembered(text, _generation[0])


@functools.lru_cache(maxsize=8192)
def _remembered(text: str, generation: int) -> str:
    return _redact_text(text)


def _redact_text(text: str) -> str:
    for known in _KNOWN:
        if known in text:
            text = text.replace(known, MASK)
    if not _TRIGGER.search(_folded(text)):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def key_words(key: str) -> list[str]:
    """The words of a mapping key, lower-case: ``SecretAccessKey`` -> secret, access, key."""
    return [word.lower() for word in _WORD.findall(key)]


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Tell whether a mapping key names a secret (``password``, ``slack_token`` ...), by its
    whole words: ``bypassed_approvals`` does not."""
    words = key_words(key)
    for index, word in enumerate(words):
        if word in SECRET_WORDS or word.endswith(SECRET_SUFFIXES):
            return True
        if word == "key" and index and words[index - 1] in KEY_KINDS:
            return True
    return False


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
