"""One corpus of planted secrets, each inside a sentence whose other words must survive.

Every outbound path is tested with this corpus (tests/test_secret_edges.py): a secret that
appears anywhere is a leak; a fact that disappears is over-redaction. The values are made up
in the shapes real scanners know (AWS, GitHub, Slack, PagerDuty, bearer tokens, PEM keys).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Planted:
    name: str
    #: The credential itself: must appear nowhere outbound.
    secret: str
    #: The text it is planted in, as a person would paste it.
    text: str
    #: A word of that text that is not secret: must survive.
    fact: str


_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKY"
_AWS_SECRET_2 = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
_PEM_BODY = (
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
    "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu"
)

CORPUS: tuple[Planted, ...] = (
    Planted(
        "aws_secret_access_key=",
        _AWS_SECRET,
        f"factalpha aws_secret_access_key={_AWS_SECRET}",
        "factalpha",
    ),
    Planted(
        "SecretAccessKey JSON",
        _AWS_SECRET_2,
        f'factbravo {{"SecretAccessKey": "{_AWS_SECRET_2}"}}',
        "factbravo",
    ),
    Planted(
        "github ghp_",
        "ghp_R2d2C3poBb8Lk4q9ZxW1mN7vT5yU0sA3eD6f",
        "factcharlie ghp_R2d2C3poBb8Lk4q9ZxW1mN7vT5yU0sA3eD6f",
        "factcharlie",
    ),
    Planted(
        "github gho_",
        "gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "factdelta gho_16C7e42F292c6912E7710c838347Ae178B4a",
        "factdelta",
    ),
    Planted(
        "github ghs_",
        "ghs_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa",
        "factecho ghs_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa",
        "factecho",
    ),
    Planted(
        "github_pat_",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP0123456789abcdef",
        "factfoxtrot github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
        "0123456789abcdef",
        "factfoxtrot",
    ),
    Planted(
        "slack xapp-",
        "xapp-1-A0RUNBOOK-4242424242-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "factgolf xapp-1-A0RUNBOOK-4242424242-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "factgolf",
    ),
    Planted(
        "slack xoxp-",
        "xoxp-2424242424-1313131313-5656565656-0a1b2c3d4e5f",
        "facthotel xoxp-2424242424-1313131313-5656565656-0a1b2c3d4e5f",
        "facthotel",
    ),
    Planted(
        "bearer",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJydW5ib29rIn0.c2lnbmF0dXJlNDI",
        "factindia Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJydW5ib29rIn0."
        "c2lnbmF0dXJlNDI",
        "factindia",
    ),
    Planted(
        "pagerduty Token token=",
        "y_NbAkKc66ryYTWUXYEu",
        "factjuliet Authorization: Token token=y_NbAkKc66ryYTWUXYEu",
        "factjuliet",
    ),
    Planted(
        "PEM private key",
        "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu",
        f"factkilo -----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY----- "
        "factlima",
        "factlima",
    ),
    Planted(
        "password in a URL",
        "Hunter2Secret",
        "factmike mongodb+srv://admin:Hunter2Secret@cluster0.example.net/prod",
        "factmike",
    ),
    Planted(
        "db_password=",
        "Tr0ub4dor3",
        "factnovember db_password=Tr0ub4dor3",
        "factnovember",
    ),
    Planted(
        "AWS access key id",
        "AKIAIOSFODNN7EXAMPLE",
        "factoscar AKIAIOSFODNN7EXAMPLE",
        "factoscar",
    ),
)


def corpus_text(separator: str = " ; ") -> str:
    """Every planted text in one string (a reason, a note, a title)."""
    return separator.join(p.text for p in CORPUS)


def leaks(text: str) -> list[str]:
    """The names of planted secrets found in ``text`` (any fragment of 12 characters or more
    of a secret counts, so a partly masked secret is a leak too)."""
    found = []
    for planted in CORPUS:
        secret = planted.secret
        size = min(12, len(secret))
        if any(secret[i : i + size] in text for i in range(len(secret) - size + 1)):
            found.append(planted.name)
    return found


def missing_facts(text: str) -> list[str]:
    """The facts of the corpus that ``text`` lost (over-redaction, or a path that dropped it)."""
    return [p.fact for p in CORPUS if p.fact not in text]
