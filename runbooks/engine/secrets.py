"""Secret references in the process environment: ``aws-secretsmanager:<id>[#<json key>]``.

Any environment variable whose value is such a reference (``SLACK_BOT_TOKEN``,
``SLACK_SIGNING_SECRET``, ``RUNBOOK_BOT_AUDIT_KEY``, a MongoDB URI ...) is replaced at startup
by the secret's value, fetched through the resolver the front end passes in (the engine
imports no SDK). Every resolved value is registered with the redactor, so it is masked in
logs and the audit log wherever it appears, whatever key it is under.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from runbooks.engine.errors import InvalidInput
from runbooks.engine.redact import register_secret

SCHEME = "aws-secretsmanager:"

Resolver = Callable[[str], str]


def is_reference(value: str | None) -> bool:
    return bool(value) and str(value).startswith(SCHEME)


def resolve_reference(name: str, value: str, resolver: Resolver | None) -> str:
    """The secret ``value`` refers to (``value`` itself when it is not a reference)."""
    if not is_reference(value):
        return value
    reference = value[len(SCHEME) :]
    if not reference or reference.startswith("#"):
        raise InvalidInput(
            f"{name}: {value!r} names no secret; expected {SCHEME}<secret id>[#<json key>]"
        )
    if resolver is None:
        raise InvalidInput(f"{name} refers to AWS Secrets Manager, but no resolver is available")
    secret = resolver(reference)
    register_secret(secret)
    return secret


def resolve_environment(environ: MutableMapping[str, str], resolver: Resolver | None) -> list[str]:
    """Replace every reference in ``environ`` by its secret; return the names resolved."""
    resolved = []
    for name, value in sorted(environ.items()):
        if is_reference(value):
            environ[name] = resolve_reference(name, value, resolver)
            resolved.append(name)
    return resolved
