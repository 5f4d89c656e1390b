"""The GitHub API emulator answers as GitHub does for what it serves, and refuses the rest."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.github import SANDBOX_GITHUB_TOKEN, GitHubEmulator
from sandbox.gitops import git


@pytest.fixture
def github(tmp_path: Path) -> Iterator[GitHubEmulator]:
    work, bare = tmp_path / "work", tmp_path / "deploy.git"
    git("init", "--quiet", "--initial-branch", "main", str(work))
    (work / "deployment.yaml").write_text("image: app-api:1.4.2\n")
    git("-C", str(work), "add", ".")
    git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "seed")
    git("-C", str(work), "branch", "runbook-bot/revert-x")
    git("clone", "--quiet", "--bare", str(work), str(bare))
    emulator = GitHubEmulator(repos={"acme/deploy": bare}).start()
    yield emulator
    emulator.stop()


def _call(
    github: GitHubEmulator,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = SANDBOX_GITHUB_TOKEN,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(  # noqa: S310 - the emulator's http URL
        github.url + path, data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _pull(head: str = "runbook-bot/revert-x", base: str = "main") -> bytes:
    return json.dumps({"head": head, "base": base, "title": "t", "body": "b"}).encode()


def test_create_then_duplicate_then_list(github: GitHubEmulator) -> None:
    status, created = _call(github, "POST", "/repos/acme/deploy/pulls", _pull())
    assert status == 201 and created["number"] == 1
    assert created["html_url"] == "https://github.sandbox.local/acme/deploy/pull/1"
    status, again = _call(github, "POST", "/repos/acme/deploy/pulls", _pull())
    assert status == 422
    assert (
        again["errors"][0]["message"]
        == "A pull request already exists for acme:runbook-bot/revert-x."
    )
    query = "?head=acme:runbook-bot/revert-x&base=main&state=open"
    status, found = _call(github, "GET", f"/repos/acme/deploy/pulls{query}")
    assert status == 200 and [p["number"] for p in found] == [1]
    status, none = _call(github, "GET", "/repos/acme/deploy/pulls?head=acme:other")
    assert status == 200 and none == []


@pytest.mark.parametrize(
    ("method", "path", "body", "token", "expected"),
    [
        ("POST", "/repos/acme/deploy/pulls", _pull(), None, (401, "Bad credentials")),
        ("POST", "/repos/acme/deploy/pulls", _pull(), "wrong", (401, "Bad credentials")),
        ("POST", "/repos/acme/other/pulls", _pull(), SANDBOX_GITHUB_TOKEN, (404, "Not Found")),
        ("GET", "/repos/acme/deploy/issues", None, SANDBOX_GITHUB_TOKEN, (404, "Not Found")),
        ("POST", "/repos/acme/deploy/pulls", b"{not json", SANDBOX_GITHUB_TOKEN, (400, None)),
        ("POST", "/repos/acme/deploy/pulls", b"[]", SANDBOX_GITHUB_TOKEN, (400, None)),
        (
            "POST",
            "/repos/acme/deploy/pulls",
            _pull(head="no-such-branch"),
            SANDBOX_GITHUB_TOKEN,
            (422, "Validation Failed"),
        ),
        (
            "POST",
            "/repos/acme/deploy/pulls",
            json.dumps({"head": "runbook-bot/revert-x"}).encode(),
            SANDBOX_GITHUB_TOKEN,
            (422, "Validation Failed"),
        ),
    ],
    ids=[
        "no-token",
        "wrong-token",
        "unknown-repo",
        "unknown-path",
        "bad-json",
        "not-an-object",
        "head-not-a-branch",
        "missing-fields",
    ],
)
def test_bad_requests_are_refused_and_create_nothing(
    github: GitHubEmulator,
    *,
    method: str,
    path: str,
    body: bytes | None,
    token: str | None,
    expected: tuple[int, str | None],
) -> None:
    status, doc = _call(github, method, path, body, token)
    assert status == expected[0]
    if expected[1]:
        assert doc["message"] == expected[1]
    assert github.state.pulls == []


def test_the_fail_hook_answers_the_next_calls_then_clears(github: GitHubEmulator) -> None:
    status, _ = _call(github, "POST", "/_sandbox/fail", b'{"status": 503, "count": 1}', None)
    assert status == 200
    assert _call(github, "POST", "/repos/acme/deploy/pulls", _pull())[0] == 503
    assert _call(github, "POST", "/repos/acme/deploy/pulls", _pull())[0] == 201
    assert [c["method"] for c in github.state.creations()] == ["POST", "POST"]
